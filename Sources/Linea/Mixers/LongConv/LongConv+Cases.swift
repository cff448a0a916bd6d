import Foundation

/// The causal long convolution (safari's fftconv without the GELU) as an op family: `u [B,H,L]`, `k [H,Lk]` and the
/// optional skip `D [H]` in, `o [B,H,L]` out. Forms on the CPU: `fft` (FFTW, O(L log L)) and `direct` (the Float64
/// sum, also called `reference`); on a GPU: `fft` (cuFFT, loaded at run time).
public struct LongConvFamily: OpFamily {
    /// The family. O(1).
    public init() {}

    public var name: String { "long_conv" }
    public var summary: String { "causal long convolution o = k * u + D u per channel (safari's fftconv, Hyena, S4D); fft is O(L log L)" }
    public var inputs: [OpInput] { [OpInput("u"), OpInput("k"), OpInput("D", optional: true)] }
    public var outputs: [String] { ["o"] }

    /// The CPU runs both; a GPU the fft form (cuFFT), the direct one being the Float64 reference.
    public func forms(on device: Device) -> [String] { device == .cpu ? ["fft", "direct"] : ["fft"] }

    public func inputDType(_ name: String, form: String, compute dtype: DType) -> DType { dtype }

    /// The form `form` names (`reference` is `direct`). O(1).
    static func longConvForm(_ form: String) -> LongConvForm? { form == "reference" ? .direct : LongConvForm(rawValue: form) }

    public func check(form: String, options: OpOptions) throws {
        guard Self.longConvForm(form) != nil else {
            throw LineaError.invalidArgument(argument: "--form", expected: "fft, direct or reference", actual: "'\(form)'")
        }
        if let key = options.settings.keys.sorted().first {
            throw LineaError.invalidArgument(argument: "--set", expected: "no settings for long_conv", actual: "'\(key)'")
        }
        for (given, option) in [(options.window != nil, "--window"), (options.scale != nil, "--scale"), (options.normalize, "--normalize"),
                                (options.useQKL2Norm, "--qk-l2-norm")] where given {
            throw LineaError.invalidArgument(argument: option, expected: "no attention or linear-attention option for long_conv", actual: "one given")
        }
    }

    public func checkValues(_ x: [String: Tensor], form: String, options: OpOptions) throws {
        _ = try LongConv.shape(u: need(x, "u").shape, k: need(x, "k").shape, D: x["D"]?.shape)
        if options.validate { try LongConv.validate(x) }
    }

    public func reference(_ x: [String: Tensor], options: OpOptions) throws -> [String: Tensor] {
        ["o": try LongConv.reference(u: need(x, "u"), k: need(x, "k"), D: x["D"])]
    }

    public func run(_ form: String, _ x: [String: DeviceTensor], options: OpOptions) throws -> [String: DeviceTensor] {
        try check(form: form, options: options)
        let o = try LongConv.forward(u: need(x, "u"), k: need(x, "k"), D: x["D"], form: Self.longConvForm(form)!, validate: options.validate,
                                     allowNonFiniteOutputs: options.allowNonFiniteOutputs)
        return ["o": o]
    }

    /// Inputs of one case: u seeded normal, a filter decaying as Hyena's (e^(-3s/Lk) times normal), D normal.
    static func inputs(B: Int, H: Int, L: Int, Lk: Int, skip: Bool, seed: UInt64) throws -> [String: Tensor] {
        var k = try Tensor.randomNormal([H, Lk], seed: seed &+ 1)
        for h in 0..<H { for s in 0..<Lk { k.scalars[h * Lk + s] *= Foundation.exp(-3 * Float(s) / Float(Lk)) } }
        var x = ["u": try Tensor.randomNormal([B, H, L], seed: seed), "k": k]
        if skip { x["D"] = try Tensor.randomNormal([H], seed: seed &+ 2) }
        return x
    }

    /// One token, odd and prime lengths (transform sizes with factors 3, 5, 7 and a prime padded up), filters shorter
    /// and longer than the sequence, with and without D, B·H far above the thread count.
    public var cases: [OpCase] {
        // (B, H, L, Lk, D)
        let grid: [(Int, Int, Int, Int, Bool)] = [
            (1, 1, 1, 1, false), (2, 3, 1, 4, true), (1, 2, 2, 2, true), (2, 3, 37, 37, true), (1, 4, 64, 20, false),
            (2, 2, 100, 150, true), (1, 3, 999, 999, false), (3, 5, 257, 257, true), (4, 16, 130, 64, true), (1, 2, 2048, 2048, true),
            (1, 2, 1009, 1009, false), (2, 3, 105, 1, true),
        ]
        return grid.map { c in
            let (B, H, L, Lk, skip) = c
            let s = LongConv.Shape(batch: B, channels: H, length: L, filterLength: Lk)
            return OpCase(label: "B\(B) H\(H) L\(L) Lk\(Lk)" + (skip ? " D" : ""), flops: LongConv.flops(s, form: .fft)) { seed in
                try Self.inputs(B: B, H: H, L: L, Lk: Lk, skip: skip, seed: seed)
            }
        }
    }

    public func benchLengths(on device: Device) -> [Int] { [1024, 4096, 16384, 65536] }

    /// H·D channels (Hyena's model width), a filter as long as the sequence, with D; inputs not validated (the kernel alone).
    public func benchCase(_ s: BenchSize, form: String, dtype: DType) throws -> OpCase {
        try check(form: form, options: OpOptions())
        var options = OpOptions()
        options.validate = false
        let channels = s.H * s.D
        let shape = LongConv.Shape(batch: s.B, channels: channels, length: s.T, filterLength: s.T)
        return OpCase(label: "B\(s.B) H\(channels) L\(s.T)", options: options, flops: LongConv.flops(shape, form: Self.longConvForm(form)!)) { seed in
            try Self.inputs(B: s.B, H: channels, L: s.T, Lk: s.T, skip: true, seed: seed)
        }
    }
}
