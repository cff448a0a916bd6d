import Foundation

/// Feature-map linear attention with one map as an op family, `linear_attn_<map>`: `q, k [B,T,H,K]`, `v [B,T,HV,V]`
/// (and the map's weights: `hedgehog_weight [H,K,F]`, `hash_proj [H,K,b]`) in, `o [B,T,HV,V]` out; `OpOptions.causal`,
/// `normalize` and `scale` (1 when nil) apply, Performer reads `--set features=M` (64) and `--set seed=S` (0).
/// Forms `chunked[:N]` and `recurrent` (linear_attn's kernels after the map) on the CPU, `reference` (Float64, quadratic);
/// on a GPU `chunked` (the map on the device, then linear_attn's chunked kernel).
public struct FeatureMapFamily: OpFamily {
    /// The map.
    public let kind: FeatureMapKind

    /// The family of `kind`. O(1).
    public init(_ kind: FeatureMapKind) { self.kind = kind }

    public var name: String { "linear_attn_\(kind.rawValue)" }

    public var summary: String {
        switch kind {
        case .identity: "feature-map linear attention, phi(x) = x"
        case .elu: "feature-map linear attention, phi(x) = elu(x) + 1"
        case .relu: "feature-map linear attention, phi(x) = relu(x)"
        case .performer: "Performer FAVOR+: positive orthogonal random features (--set features=M, seed=S)"
        case .taylor2: "Based: 2nd-order Taylor map of exp(q.k/sqrt K), 1 + K + K^2 features"
        case .hedgehog: "Hedgehog: softmax(xW), softmax(-xW) with given hedgehog_weight [H,K,F]"
        case .cosformer: "cosFormer: relu features re-weighted by cos/sin of the position"
        case .hashing: "EcoFormer-style binary codes sign(x P) from hash_proj [H,K,b]; kernel = agreeing bits"
        }
    }

    public var inputs: [OpInput] { [OpInput("q"), OpInput("k"), OpInput("v")] + (kind.weightInput.map { [OpInput($0)] } ?? []) }
    public var outputs: [String] { ["o"] }

    /// Both forms on the CPU; `chunked` on a GPU.
    public func forms(on device: Device) -> [String] { device == .cpu ? ["chunked", "recurrent"] : ["chunked"] }

    public func inputDType(_ name: String, form: String, compute dtype: DType) -> DType { .float32 }

    /// The recurrence form `form` names (reference, recurrent, chunked, chunked:N). O(1).
    static func parse(_ form: String) throws -> RecurrenceForm {
        switch form {
        case "reference": return .reference
        case "recurrent": return .recurrent
        case "chunked": return .chunked(size: RecurrenceForm.defaultChunkSize)
        default:
            if form.hasPrefix("chunked:"), let n = Int(form.dropFirst(8)), n >= 1 { return .chunked(size: n) }
            throw LineaError.invalidArgument(argument: "--form", expected: "one of reference, recurrent, chunked, chunked:N", actual: "'\(form)'")
        }
    }

    public func check(form: String, options: OpOptions) throws {
        _ = try Self.parse(form)
        if options.window != nil {
            throw LineaError.invalidArgument(argument: "--window", expected: "none (\(name) has no sliding window)", actual: "a window")
        }
        let known = kind == .performer ? ["features", "seed"] : []
        for key in options.settings.keys.sorted() where !known.contains(key) {
            throw LineaError.invalidArgument(argument: "--set", expected: known.isEmpty ? "no settings for \(name)" : "features or seed (\(name))",
                                             actual: "'\(key)'")
        }
        if let m = options.settings["features"], m < 1 {
            throw LineaError.invalidArgument(argument: "features", expected: ">= 1 random features", actual: "\(m)")
        }
        if let s = options.settings["seed"], s < 0 { throw LineaError.invalidArgument(argument: "seed", expected: ">= 0", actual: "\(s)") }
    }

    /// The map `options` and the weight input describe. O(1).
    func map(_ options: OpOptions, weights: Tensor?) -> FeatureMap {
        FeatureMap(kind, features: options.settings["features"] ?? 64, seed: UInt64(max(0, options.settings["seed"] ?? 0)), weights: weights)
    }

    static func mapOptions(_ o: OpOptions) -> FeatureMapOptions {
        var result = FeatureMapOptions(causal: o.causal, normalize: o.normalize, scale: o.scale)
        (result.validate, result.allowNonFiniteOutputs) = (o.validate, o.allowNonFiniteOutputs)
        return result
    }

    /// Runs `form` on host tensors. O(the form).
    func forward(_ x: [String: Tensor], form: String, options: OpOptions) throws -> Tensor {
        try check(form: form, options: options)
        let weights = try kind.weightInput.map { try need(x, $0) }
        return try FeatureMapAttention.forward(q: need(x, "q"), k: need(x, "k"), v: need(x, "v"), map: map(options, weights: weights),
                                               options: Self.mapOptions(options), form: Self.parse(form))
    }

    public func checkValues(_ x: [String: Tensor], form: String, options: OpOptions) throws {
        let (q, k, v) = (try need(x, "q"), try need(x, "k"), try need(x, "v"))
        let s = try RecurrenceShape(.linearAttention, q: q.shape, k: k.shape, v: v.shape, g: nil, beta: nil, state: nil)
        try map(options, weights: kind.weightInput.flatMap { x[$0] }).validate(H: s.H, K: s.K)
        for (t, n) in [(q, "q"), (k, "k"), (v, "v")] { try t.expectFinite(n) }
    }

    public func reference(_ x: [String: Tensor], options: OpOptions) throws -> [String: Tensor] {
        ["o": try forward(x, form: "reference", options: options)]
    }

    public func run(_ form: String, _ x: [String: DeviceTensor], options: OpOptions) throws -> [String: DeviceTensor] {
        let q = try need(x, "q")
        guard q.device != .cpu else { return ["o": try DeviceTensor(forward(x.mapValues { try $0.host() }, form: form, options: options))] }
        try check(form: form, options: options)
        let weights = try kind.weightInput.map { try need(x, $0) }
        return ["o": try FeatureMapAttention.forward(q: q, k: need(x, "k"), v: need(x, "v"), map: map(options, weights: nil), weights: weights,
                                                     options: Self.mapOptions(options), form: Self.parse(form))]
    }

    /// Seeded inputs for `kind`: q, k, v standard normal (identity: q, k uniform in [0, 1), so that its normalizer
    /// stays away from zero), Hedgehog's weights N(0, 1/K) with F = `width`, hashing's projections N(0, 1) with b = `width`.
    /// O(B·T·(H·K + HV·V) + H·K·width).
    public static func inputs(_ kind: FeatureMapKind, B: Int, T: Int, H: Int, HV: Int, K: Int, V: Int, width: Int = 8,
                              seed: UInt64) throws -> [String: Tensor] {
        var x: [String: Tensor] = [:]
        if kind == .identity {
            x["q"] = try Tensor.randomUniform([B, T, H, K], seed: seed)
            x["k"] = try Tensor.randomUniform([B, T, H, K], seed: seed &+ 1)
        } else {
            x["q"] = try Tensor.randomNormal([B, T, H, K], seed: seed)
            x["k"] = try Tensor.randomNormal([B, T, H, K], seed: seed &+ 1)
        }
        x["v"] = try Tensor.randomNormal([B, T, HV, V], seed: seed &+ 2)
        if let name = kind.weightInput {
            x[name] = try Tensor.randomNormal([H, K, width], seed: seed &+ 3, scale: kind == .hedgehog ? 1 / Float(K).squareRoot() : 1)
        }
        return x
    }

    /// Causal and not, with and without the normalizer, on T = 1, 65 (GQA, V != K) and 130 (chunk 64 crossed twice);
    /// Performer also at 300 features (three feature blocks on a GPU, as taylor2's 273).
    public var cases: [OpCase] {
        // (B, T, H, HV, K, V)
        let sizes = [(1, 1, 2, 2, 16, 16), (2, 65, 2, 4, 16, 32), (1, 130, 1, 1, kind == .taylor2 ? 16 : 32, 16)]
        var result: [OpCase] = []
        for (B, T, H, HV, K, V) in sizes {
            for causal in [true, false] {
                for normalize in [false, true] {
                    var options = OpOptions()
                    (options.causal, options.normalize) = (causal, normalize)
                    if kind == .performer && T == 130 { options.settings["features"] = 300 }
                    let label = "B\(B) T\(T) H\(H)\(HV == H ? "" : " HV\(HV)") K\(K) V\(V)" + (causal ? " causal" : " non-causal")
                        + (normalize ? " normalized" : "") + (options.settings["features"].map { " m\($0)" } ?? "")
                    let mapKind = self.kind
                    result.append(OpCase(label: label, options: options, gpuForms: nil) { seed in
                        try Self.inputs(mapKind, B: B, T: T, H: H, HV: HV, K: K, V: V, seed: seed)
                    })
                }
            }
        }
        return result
    }

    public func benchLengths(on device: Device) -> [Int] {
        device == .cpu ? [256, 1024, 4096, 16384] : [1024, 4096, 16384, 32768]
    }

    /// Causal, normalized, H heads of D (taylor2: D = 16, as Based projects to 16 dimensions first); weights of width 64.
    public func benchCase(_ s: BenchSize, form: String, dtype: DType) throws -> OpCase {
        try check(form: form, options: OpOptions())
        var options = OpOptions()
        (options.normalize, options.validate) = (true, false)
        let (kind, K) = (self.kind, self.kind == .taylor2 ? 16 : s.D)
        let F = Double(FeatureMap(kind, weights: try Tensor(zeros: [1, 1, 64])).featureCount(K: K))
        return OpCase(label: "B\(s.B) T\(s.T) H\(s.H) K\(K) V\(s.D)", options: options,
                      flops: Double(s.B * s.T * s.H) * 4 * F * Double(s.D)) { seed in
            try Self.inputs(kind, B: s.B, T: s.T, H: s.H, HV: s.H, K: K, V: s.D, width: 64, seed: seed)
        }
    }
}
