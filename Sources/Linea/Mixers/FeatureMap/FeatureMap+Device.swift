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
    /// normalizer as a column of ones appended to v; not causal: its final state read out by every query); q, k, v are
    /// cast to f32 first.
    /// Hedgehog's or the hashing's `[H,K,n]` come as `weights` on the device, else from `map.weights` (uploaded per
    /// call); Performer's projection is drawn once per (m, K, seed, device) and kept. No value checks on a GPU (nothing
    /// waits for the device). O(B·HV·T·F·V) plus the map (with a projection: O(B·T·H·n·K)).
    public static func forward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, map: FeatureMap, weights: DeviceTensor? = nil,
                               options: FeatureMapOptions = FeatureMapOptions(),
                               form: RecurrenceForm = .chunked(size: RecurrenceForm.defaultChunkSize)) throws -> DeviceTensor {
        let device = q.device
        if device == .cpu && k.device == .cpu && v.device == .cpu {
            var hostMap = map
            if let weights { hostMap.weights = try weights.host() }
            return try DeviceTensor(forward(q: q.host(), k: k.host(), v: v.host(), map: hostMap, options: options, form: form))
        }
        let s = try RecurrenceShape(.linearAttention, q: q.shape, k: k.shape, v: v.shape, g: nil, beta: nil, state: nil)
        var F = map.featureCount(K: s.K)
        if let weights, let name = map.kind.weightInput {
            guard weights.rank == 3, weights.shape[0] == s.H, weights.shape[1] == s.K, weights.shape[2] >= 1, weights.shape[2] <= 1 << 16 else {
                throw LineaError.shapeMismatch(argument: name, expected: "[\(s.H), \(s.K), F] with 1 <= F <= 65536", actual: "\(weights.shape)")
            }
            F = 2 * weights.shape[2]
        } else {
            try map.validate(H: s.H, K: s.K)
        }
        try Recurrence.checkForm(form)
        if let scale = options.scale, !(scale.isFinite && scale > 0) {
            throw LineaError.invalidArgument(argument: "scale", expected: "a finite number > 0", actual: "\(scale)")
        }
        try MemoryBudget.check([.init("o", [s.B, s.T, s.HV, s.V]), .init("mapped q and k", [2, s.B, s.T, s.H, F]),
                                .init("kernel output", [s.B, s.T, s.HV, s.V + 1]), .init("v with the normalizer's column", [s.B, s.T, s.HV, s.V + 1])]
                               + (map.kind == .performer || map.kind.weightInput != nil ? [.init("projections", [s.B, s.T, s.H, F])] : []))
        var projection: DeviceTensor?
        if map.kind == .performer {
            projection = try PerformerProjections.shared.projection(features: map.features, K: s.K, seed: map.seed, on: device)
        } else if map.kind.weightInput != nil {
            projection = try weights.map { try Ops.cast($0, to: .float32) } ?? map.weights.map { try DeviceTensor($0, on: device) }
        }
        let o = try DeviceTensor.uninitialized([s.B, s.T, s.HV, s.V], on: device)
        try Backends.run(FeatureMapCall(kind: map.kind, shape: s, q: Ops.cast(q, to: .float32), k: Ops.cast(k, to: .float32),
                                        v: Ops.cast(v, to: .float32), projection: projection, o: o, causal: options.causal,
                                        normalize: options.normalize, scale: options.scale ?? 1, form: form))
        return o
    }
}

/// Performer's projections on devices, drawn once per (m, K, seed, device): drawing costs O(m·K²) on the host and an
/// upload, which a GPU call would otherwise wait for every time.
final class PerformerProjections: @unchecked Sendable {  // `kept` is only touched under `lock`
    /// The process's projections.
    static let shared = PerformerProjections()

    private struct Key: Hashable {
        let features: Int, K: Int, seed: UInt64, device: Device
    }

    private let lock = NSLock()
    private var kept: [Key: DeviceTensor] = [:]

    /// `performerProjection(features:K:seed:)` times K^(-1/4) in f32 `[m, K]` on `device` (the GEMM then gives x' wᵀ
    /// with x' = x / K^(1/4), as the CPU's map does). O(1) when kept, else O(m·K²).
    func projection(features m: Int, K: Int, seed: UInt64, on device: Device) throws -> DeviceTensor {
        lock.lock()
        defer { lock.unlock() }
        let key = Key(features: m, K: K, seed: seed, device: device)
        if let found = kept[key] { return found }
        let quarter = 1 / pow(Double(K), 0.25)
        let w = FeatureMap.performerProjection(features: m, K: K, seed: seed).map { Float($0 * quarter) }
        let made = try DeviceTensor(Tensor(shape: [m, K], scalars: w), on: device)
        if kept.count >= 16 { kept.removeAll() }  // a sweep over many sizes must not hold them all
        kept[key] = made
        return made
    }
}
