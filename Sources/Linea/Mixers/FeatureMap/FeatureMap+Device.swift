import Foundation

/// Feature-map linear attention as a backend receives it: `q, k [B,T,H,K]`, `v [B,T,HV,V]` (f32), the map's weights
/// (f32, on the inputs' device: Performer's projection `[m,K]` already scaled by K^(-1/4), hedgehog's or the
/// hashing's `[H,K,n]`) and `o [B,T,HV,V]` (f32) preallocated.
public struct FeatureMapCall: OpCall {
    /// The map and the sizes.
    public let kind: FeatureMapKind, shape: RecurrenceShape
    /// Inputs; `projection` holds the map's weights (nil for the maps without).
    public let q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, projection: DeviceTensor?
    /// The output, written whole by the call.
    public let o: DeviceTensor
    /// Causal or every key; divide by the normalizer; the weights' scale.
    public let causal: Bool, normalize: Bool, scale: Float
    /// The recurrence form asked for after the map.
    public let form: RecurrenceForm

    public var name: String { "linear_attn_\(kind.rawValue)" }
    public func forEachTensor(_ body: (_ name: String, _ tensor: DeviceTensor) throws -> Void) rethrows {
        try body("q", q)
        try body("k", k)
        try body("v", v)
        if let projection { try body(kind.weightInput ?? "performer projection", projection) }
        try body("o", o)
    }
}

extension FeatureMapAttention {
    /// `forward` where the inputs live (all on one device): returns `o [B,T,HV,V]` f32 there. On the CPU it is the host
    /// form. On a GPU the map runs on the device, then linear_attn's chunked kernel (form `.chunked(size: 64)`; the
    /// normalizer as a column of ones appended to v); q, k, v are cast to f32 first, the map's weights uploaded; causal
    /// only (the backend says so). No value checks there (nothing waits for the device).
    /// O(B·HV·T·F·V) plus the map (with a projection: O(B·T·H·n·K)).
    public static func forward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, map: FeatureMap, options: FeatureMapOptions = FeatureMapOptions(),
                               form: RecurrenceForm = .chunked(size: RecurrenceForm.defaultChunkSize)) throws -> DeviceTensor {
        let device = q.device
        if device == .cpu && k.device == .cpu && v.device == .cpu {
            return try DeviceTensor(forward(q: q.host(), k: k.host(), v: v.host(), map: map, options: options, form: form))
        }
        let s = try RecurrenceShape(.linearAttention, q: q.shape, k: k.shape, v: v.shape, g: nil, beta: nil, state: nil)
        try map.validate(H: s.H, K: s.K)
        try Recurrence.checkForm(form)
        if let scale = options.scale, !(scale.isFinite && scale > 0) {
            throw LineaError.invalidArgument(argument: "scale", expected: "a finite number > 0", actual: "\(scale)")
        }
        let F = map.featureCount(K: s.K)
        try MemoryBudget.check([.init("o", [s.B, s.T, s.HV, s.V]), .init("mapped q and k", [2, s.B, s.T, s.H, F]),
                                .init("kernel output", [s.B, s.T, s.HV, s.V + 1]), .init("v with the normalizer's column", [s.B, s.T, s.HV, s.V + 1])]
                               + (map.kind == .performer ? [.init("projections", [2, s.B, s.T, s.H, F])] : []))
        var projection: DeviceTensor?
        if map.kind == .performer {
            // The rows scaled by K^(-1/4) here, so the GEMM gives x' wᵀ with x' = x / K^(1/4) as the CPU's map does.
            let quarter = 1 / pow(Double(s.K), 0.25)
            let w = FeatureMap.performerProjection(features: map.features, K: s.K, seed: map.seed).map { Float($0 * quarter) }
            projection = try DeviceTensor(Tensor(shape: [map.features, s.K], scalars: w), on: device)
        } else if let weights = map.weights, map.kind.weightInput != nil {
            projection = try DeviceTensor(weights, on: device)
        }
        let o = try DeviceTensor.uninitialized([s.B, s.T, s.HV, s.V], on: device)
        try Backends.run(FeatureMapCall(kind: map.kind, shape: s, q: Ops.cast(q, to: .float32), k: Ops.cast(k, to: .float32),
                                        v: Ops.cast(v, to: .float32), projection: projection, o: o, causal: options.causal,
                                        normalize: options.normalize, scale: options.scale ?? 1, form: form))
        return o
    }
}
