import Foundation

extension NeighborhoodOptions {
    /// The per-axis settings of `OpOptions.settings` (`<name>_<axis>`, axis 0 first, e.g. `kernel_size_1`; causal 0 or 1).
    public static let settingNames = ["kernel_size", "stride", "dilation", "causal"]

    /// The options `settings` hold (`kernel_size_<axis>` for axes 0..<rank, and optionally `stride_`, `dilation_`,
    /// `causal_<axis>`), with `scale`; nil when no kernel size is set. Throws naming a key that does not fit. O(settings).
    public init?(settings: [String: Int], scale: Float? = nil, allowNonFiniteOutputs: Bool = false) throws {
        let known = Self.settingNames.flatMap { name in (0..<3).map { "\(name)_\($0)" } }
        for key in settings.keys.sorted() where !known.contains(key) {
            throw LineaError.invalidArgument(argument: "--set", expected: "neighborhood settings <name>_<axis> (names \(Self.settingNames.joined(separator: ", ")); axes 0, 1, 2)",
                                             actual: "'\(key)'")
        }
        let rank = (0..<3).prefix { settings["kernel_size_\($0)"] != nil }.count
        guard rank > 0 else { return nil }
        for key in settings.keys.sorted() where Int(key.suffix(1))! >= rank {
            throw LineaError.invalidArgument(argument: key, expected: "an axis below \(rank) (kernel_size_0...\(rank - 1) are set)", actual: "axis \(key.suffix(1))")
        }
        func axes(_ name: String) -> [Int]? {
            let values = (0..<rank).map { settings["\(name)_\($0)"] }
            return values.allSatisfy { $0 == nil } ? nil : values.map { $0 ?? (name == "causal" ? 0 : 1) }
        }
        let causal = axes("causal")
        for value in causal ?? [] where value != 0 && value != 1 {
            throw LineaError.invalidArgument(argument: "causal", expected: "0 or 1 per axis", actual: "\(causal!)")
        }
        self.init(kernelSize: axes("kernel_size")!, stride: axes("stride"), dilation: axes("dilation"), causal: causal?.map { $0 == 1 },
                  scale: scale, allowNonFiniteOutputs: allowNonFiniteOutputs)
    }

    /// These options as `OpOptions.settings` entries (the inverse of `init?(settings:)`; scale apart). O(rank).
    public var settings: [String: Int] {
        var result: [String: Int] = [:]
        for a in 0..<rank {
            result["kernel_size_\(a)"] = kernelSize[a]
            result["stride_\(a)"] = stride?[a]
            result["dilation_\(a)"] = dilation?[a]
            result["causal_\(a)"] = causal.map { $0[a] ? 1 : 0 }
        }
        return result
    }

    /// The settings of `linea op neighborhood`'s comma-separated lists (`--kernel-size 5,3 --stride 2,3 --dilation 1,2
    /// --causal 1,0`): the kernel sizes give the rank, another list gives one value per axis or one for all. O(rank).
    public static func settings(kernelSize: String, stride: String?, dilation: String?, causal: String?) throws -> [String: Int] {
        func parse(_ text: String, _ option: String, rank: Int?) throws -> [Int] {
            let values = text.split(separator: ",", omittingEmptySubsequences: false).map { part -> Int? in
                let word = part.trimmingCharacters(in: .whitespaces).lowercased()
                return option == "--causal" ? ["0": 0, "1": 1, "false": 0, "true": 1][word] : Int(word)
            }
            let expected = option == "--causal" ? "0 or 1 (false or true)" : "integers"
            guard values.allSatisfy({ $0 != nil }), let rank = rank ?? ((1...3).contains(values.count) ? values.count : nil) else {
                throw LineaError.invalidArgument(argument: option, expected: "1 to 3 comma-separated \(expected), one per spatial axis", actual: "'\(text)'")
            }
            guard values.count == rank || values.count == 1 else {
                throw LineaError.invalidArgument(argument: option, expected: "\(rank) values (as --kernel-size) or one for every axis", actual: "'\(text)'")
            }
            return values.count == rank ? values.map { $0! } : Array(repeating: values[0]!, count: rank)
        }
        let kernel = try parse(kernelSize, "--kernel-size", rank: nil)
        var result: [String: Int] = [:]
        for (name, text, option) in [("kernel_size", kernelSize, "--kernel-size"), ("stride", stride, "--stride"), ("dilation", dilation, "--dilation"),
                                     ("causal", causal, "--causal")] {
            guard let text else { continue }
            for (a, value) in try parse(text, option, rank: kernel.count).enumerated() { result["\(name)_\(a)"] = value }
        }
        return result
    }
}

/// Neighborhood attention (NATTEN) as an op family: `q [B,*spatial,Hq,D]`, `k`, `v [B,*spatial,Hkv,D|Dv]` in, `o` and
/// `lse` out, the grid's rank from the kernel sizes in `OpOptions.settings` (`NeighborhoodOptions.settingNames`);
/// `OpOptions.causal` is attention's flag and is not read: causal axes are `causal_<axis>`. Form `fused` on the CPU
/// (and `reference`) and on CUDA GPUs (LineaCUDA's neighborhood kernel).
public struct NeighborhoodFamily: OpFamily {
    /// The family. O(1).
    public init() {}

    public var name: String { "neighborhood" }
    public var summary: String { "NATTEN's neighborhood attention on a 1-D/2-D/3-D grid (kernel, stride, dilation, causal per axis); fused is linear in tokens" }
    public var inputs: [OpInput] { [OpInput("q"), OpInput("k"), OpInput("v")] }
    public var outputs: [String] { ["o", "lse"] }

    /// `fused` everywhere: the CPU's tiled form, the GPU's neighborhood kernel.
    public func forms(on device: Device) -> [String] { ["fused"] }

    public func inputDType(_ name: String, form: String, compute dtype: DType) -> DType { dtype }

    public func check(form: String, options: OpOptions) throws {
        guard NeighborhoodForm(rawValue: form) != nil else {
            throw LineaError.invalidArgument(argument: "--form", expected: "fused or reference", actual: "'\(form)'")
        }
        if options.window != nil {
            throw LineaError.invalidArgument(argument: "--window", expected: "none (the neighborhood is --kernel-size)", actual: "a window")
        }
        try NeighborhoodOptions(settings: options.settings)?.validate()
    }

    /// The neighborhood options `options` describe; throws when no kernel size is given. O(settings).
    static func neighborhoodOptions(_ options: OpOptions) throws -> NeighborhoodOptions {
        guard let found = try NeighborhoodOptions(settings: options.settings, scale: options.scale,
                                                  allowNonFiniteOutputs: options.allowNonFiniteOutputs) else {
            throw LineaError.invalidArgument(argument: "--kernel-size", expected: "1 to 3 kernel sizes (e.g. --kernel-size 5,3 or --set kernel_size_0=5)",
                                             actual: "none")
        }
        return found
    }

    public func checkValues(_ x: [String: Tensor], form: String, options: OpOptions) throws {
        let o = try Self.neighborhoodOptions(options)
        let (q, k, v) = (try need(x, "q"), try need(x, "k"), try need(x, "v"))
        let p = try NeighborhoodProblem(q: q.shape, k: k.shape, v: v.shape, options: o)
        for (t, name) in [(q, "q"), (k, "k"), (v, "v")] { try t.expectFinite(name) }
        try Attention.checkFloat32Range(maxQ: q.maxMagnitude, maxK: k.maxMagnitude, maxV: v.maxMagnitude, D: p.D, S: o.kernelSize.reduce(1, *),
                                        scale: p.scale, form: .flash)
    }

    public func reference(_ x: [String: Tensor], options: OpOptions) throws -> [String: Tensor] {
        let out = try NeighborhoodAttention.forward(q: need(x, "q"), k: need(x, "k"), v: need(x, "v"), options: Self.neighborhoodOptions(options),
                                                    form: .reference)
        return ["o": out.o, "lse": out.lse]
    }

    public func run(_ form: String, _ x: [String: DeviceTensor], options: OpOptions) throws -> [String: DeviceTensor] {
        try check(form: form, options: options)
        let out = try NeighborhoodAttention.forward(q: need(x, "q"), k: need(x, "k"), v: need(x, "v"), options: Self.neighborhoodOptions(options),
                                                    form: NeighborhoodForm(rawValue: form)!)
        return ["o": out.o, "lse": out.lse]
    }

    /// A case on a grid: q, k, v seeded normal. O(1) until its inputs are made.
    static func gridCase(B: Int, spatial: [Int], Hq: Int, Hkv: Int, D: Int, Dv: Int? = nil, _ n: NeighborhoodOptions, note: String = "") -> OpCase {
        let Dv = Dv ?? D
        var options = OpOptions()
        options.settings = n.settings
        func list(_ x: [Int]?) -> String { x.map { $0.map(String.init).joined(separator: ",") } ?? "1" }
        let label = "B\(B) grid \(spatial.map(String.init).joined(separator: "x")) Hq\(Hq) Hkv\(Hkv) D\(D)\(Dv == D ? "" : " Dv\(Dv)")"
            + " kernel \(list(n.kernelSize)) stride \(list(n.stride)) dilation \(list(n.dilation))"
            + " causal \(n.causal.map { $0.map { $0 ? "1" : "0" }.joined(separator: ",") } ?? "0")"
            + (note.isEmpty ? "" : " (\(note))")
        return OpCase(label: label, options: options, flops: NeighborhoodAttention.flops(B: B, spatial: spatial, H: Hq, D: D, options: n)) { seed in
            ["q": try Tensor.randomNormal([B] + spatial + [Hq, D], seed: seed), "k": try Tensor.randomNormal([B] + spatial + [Hkv, D], seed: seed &+ 1),
             "v": try Tensor.randomNormal([B] + spatial + [Hkv, Dv], seed: seed &+ 2)]
        }
    }

    /// 1-D, 2-D and 3-D grids: dilation (groups of unequal length), strides (even and odd), causal per axis, windows
    /// shifted at borders, odd shapes, GQA, D != Dv, kernel = grid (full attention), stride = kernel (Swin).
    public var cases: [OpCase] {
        typealias N = NeighborhoodOptions
        return [
            Self.gridCase(B: 1, spatial: [2], Hq: 2, Hkv: 2, D: 16, N(kernelSize: [2]), note: "smallest grid, full attention"),
            Self.gridCase(B: 2, spatial: [37], Hq: 2, Hkv: 1, D: 40, N(kernelSize: [7])),
            Self.gridCase(B: 1, spatial: [100], Hq: 2, Hkv: 2, D: 64, N(kernelSize: [9], dilation: [3], causal: [true])),
            Self.gridCase(B: 1, spatial: [300], Hq: 2, Hkv: 2, D: 64, Dv: 32, N(kernelSize: [33], stride: [4])),
            Self.gridCase(B: 1, spatial: [65], Hq: 2, Hkv: 1, D: 32, N(kernelSize: [65], causal: [true]), note: "causal attention"),
            Self.gridCase(B: 1, spatial: [64], Hq: 2, Hkv: 2, D: 32, N(kernelSize: [8], stride: [8]), note: "Swin"),
            Self.gridCase(B: 1, spatial: [1000], Hq: 2, Hkv: 1, D: 64, N(kernelSize: [17], stride: [2], dilation: [2])),
            Self.gridCase(B: 1, spatial: [9, 11], Hq: 2, Hkv: 1, D: 32, N(kernelSize: [5, 3], stride: [2, 3], dilation: [1, 2], causal: [true, false])),
            Self.gridCase(B: 1, spatial: [16, 16], Hq: 2, Hkv: 2, D: 32, N(kernelSize: [16, 16]), note: "full attention"),
            Self.gridCase(B: 1, spatial: [12, 12], Hq: 2, Hkv: 2, D: 32, N(kernelSize: [4, 4], stride: [4, 4]), note: "Swin"),
            Self.gridCase(B: 2, spatial: [20, 13], Hq: 4, Hkv: 2, D: 32, N(kernelSize: [7, 4], stride: [3, 2], dilation: [2, 3], causal: [false, true])),
            Self.gridCase(B: 1, spatial: [31, 33], Hq: 2, Hkv: 2, D: 64, N(kernelSize: [13, 13])),
            Self.gridCase(B: 1, spatial: [5, 6, 7], Hq: 2, Hkv: 2, D: 32, N(kernelSize: [3, 4, 3], stride: [1, 2, 1], dilation: [1, 1, 2], causal: [false, true, false])),
            Self.gridCase(B: 1, spatial: [8, 8, 8], Hq: 2, Hkv: 1, D: 48, N(kernelSize: [3, 3, 3], dilation: [2, 1, 1], causal: [true, true, true])),
            Self.gridCase(B: 1, spatial: [4, 6, 6], Hq: 2, Hkv: 2, D: 32, N(kernelSize: [4, 3, 3], causal: [true, false, false]), note: "video: causal in time"),
        ]
    }

    public func benchLengths(on device: Device) -> [Int] { [1024, 4096, 16384, 65536] }

    /// A square 2-D grid of about T tokens (side floor(sqrt T)), kernel 13 x 13 (smaller on a smaller grid), H heads of D.
    public func benchCase(_ s: BenchSize, form: String, dtype: DType) throws -> OpCase {
        try check(form: form, options: OpOptions())
        let side = max(2, Int(Double(s.T).squareRoot()))
        let kernel = min(13, side)
        return Self.gridCase(B: s.B, spatial: [side, side], Hq: s.H, Hkv: s.H, D: s.D, NeighborhoodOptions(kernelSize: [kernel, kernel]))
    }
}
