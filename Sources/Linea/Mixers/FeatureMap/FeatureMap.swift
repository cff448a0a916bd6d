import Foundation

// Kernelized ("feature-map") linear attention: a map phi applied to queries and keys turns the similarity into a dot
// product, so that
//
//     o_t = sum_{s <= t (causal) or all s} (phi(q_t) . phi(k_s)) v_s  [ / sum_s phi(q_t) . phi(k_s) ]
//
// is linear attention on phi(q), phi(k): the fast form maps q and k, then runs the Recurrence family's linear_attn
// kernels (chunked or recurrent, with its normalizer); the reference builds the T x T weights in Float64.

/// The feature maps phi of kernelized linear attention (Katharopoulos et al., Performer, Based, Hedgehog, cosFormer,
/// EcoFormer).
public enum FeatureMapKind: String, CaseIterable, Sendable {
    /// `phi(x) = x` (K features).
    case identity
    /// `phi(x) = elu(x) + 1` (Katharopoulos et al.; K features).
    case elu
    /// `phi(x) = max(x, 0)` (K features).
    case relu
    /// Performer's FAVOR+: `exp(w_i . x' - |x'|^2/2) / sqrt(m)` with `x' = x / K^(1/4)` and m positive orthogonal
    /// random features `w` (seeded), an unbiased estimate of `exp(q . k / sqrt(K))`; with the normalizer, a
    /// stabilizer is subtracted inside the exp (the query row's maximum, the key sequence's), which cancels there.
    case performer
    /// Based's second-order Taylor map `[1, x', x' (x) x' / sqrt 2]` with `x' = x / K^(1/4)`: the kernel is
    /// `1 + s + s^2/2` of `s = q . k / sqrt(K)` (1 + K + K^2 features).
    case taylor2
    /// Hedgehog: `[softmax(x W_h), softmax(-x W_h)]`, two softmaxes each over F features, of a given per-head map
    /// `W [H, K, F]` without bias (2F features; as the authors' code, where fla's older map takes one softmax over
    /// `[2xW, -2xW]`).
    case hedgehog
    /// cosFormer: `[relu(x) cos(theta_t), relu(x) sin(theta_t)]`, `theta_t = (pi/2) (t+1) / T`, so the kernel is
    /// `relu(q) . relu(k) cos(theta_t - theta_s)` (2K features).
    case cosformer
    /// EcoFormer-style binary hashing: codes `h = sign(x P_h)` (sign 0 = +1) from given per-head projections
    /// `P [H, K, b]`, features `[(1+h)/2, (1-h)/2]` (2b), so the kernel is the number of agreeing bits, `b - Hamming`.
    case hashing

    /// The input tensor holding the map's weights (hedgehog: `hedgehog_weight [H,K,F]`; hashing: `hash_proj [H,K,b]`),
    /// nil for the others. O(1).
    public var weightInput: String? {
        switch self {
        case .hedgehog: "hedgehog_weight"
        case .hashing: "hash_proj"
        default: nil
        }
    }
}

/// One feature map with its parameters: Performer's feature count and seed, Hedgehog's or the hashing's weights.
public struct FeatureMap: Sendable {
    /// Which map.
    public var kind: FeatureMapKind
    /// Performer: the number m of random features (>= 1).
    public var features: Int
    /// Performer: the seed of the random features (`SeededRandom`).
    public var seed: UInt64
    /// hedgehog: `[H, K, F]`; hashing: `[H, K, b]`; nil for the other maps.
    public var weights: Tensor?

    /// A map; `features` and `seed` are read by performer, `weights` by hedgehog and hashing. O(1).
    public init(_ kind: FeatureMapKind, features: Int = 64, seed: UInt64 = 0, weights: Tensor? = nil) {
        self.kind = kind
        self.features = features
        self.seed = seed
        self.weights = weights
    }

    /// The number of features phi has for head dimension `K` (checked by `validate`). O(1).
    public func featureCount(K: Int) -> Int {
        switch kind {
        case .identity, .elu, .relu: K
        case .performer: features
        case .taylor2: 1 + K + K * K
        case .hedgehog, .cosformer, .hashing: 2 * (kind == .cosformer ? K : weights?.shape.last ?? 0)
        }
    }

    /// Checks the parameters against `H` query/key heads of dimension `K`; every error names the argument. O(1).
    public func validate(H: Int, K: Int) throws {
        switch kind {
        case .performer:
            guard features >= 1 && features <= 1 << 20 else {
                throw LineaError.invalidArgument(argument: "features", expected: "1...\(1 << 20) random features", actual: "\(features)")
            }
            // Drawing the orthogonal blocks costs about m·K² (Gram-Schmidt): bounded so that a call cannot run for hours.
            guard Double(features) * Double(K) * Double(K) <= 0x1p32 else {
                throw LineaError.invalidArgument(argument: "features", expected: "m·K² <= 2^32 (m <= \(Int(0x1p32 / Double(max(K, 1) * max(K, 1)))) at K = \(K))",
                                                 actual: "\(features)")
            }
        case .taylor2:
            guard K <= 256 else {
                throw LineaError.invalidArgument(argument: "K", expected: "<= 256 for taylor2 (1 + K + K^2 features)", actual: "\(K)")
            }
        case .hedgehog, .hashing:
            let name = kind.weightInput!
            guard let w = weights else {
                throw LineaError.invalidArgument(argument: name, expected: "a weight tensor [H, K, F] for \(kind.rawValue)", actual: "none")
            }
            guard w.rank == 3, w.shape[0] == H, w.shape[1] == K, w.shape[2] >= 1, w.shape[2] <= 1 << 16 else {
                throw LineaError.shapeMismatch(argument: name, expected: "[\(H), \(K), F] with 1 <= F <= 65536", actual: "\(w.shape)")
            }
            try w.expectFinite(name)
        default: break
        }
    }

    /// Performer's `m x K` projection in Float64: blocks of K orthonormal rows (Gram-Schmidt of Gaussian rows), each
    /// row scaled by the norm of a fresh Gaussian K-vector (so rows are marginally Gaussian, FAVOR+'s positive
    /// orthogonal random features). Same numbers on every machine for a seed. O(m K^2).
    public static func performerProjection(features m: Int, K: Int, seed: UInt64) -> [Double] {
        var rng = SeededRandom(seed: seed)
        var rows: [Double] = []
        rows.reserveCapacity(m * K)
        var block: [[Double]] = []
        while rows.count < m * K {
            if block.count == K { block.removeAll(keepingCapacity: true) }
            var r = (0..<K).map { _ in rng.nextNormal() }
            for b in block {  // twice, for orthogonality to rounding
                for _ in 0..<2 {
                    let dot = zip(r, b).reduce(0) { $0 + $1.0 * $1.1 }
                    for i in 0..<K { r[i] -= dot * b[i] }
                }
            }
            let norm = r.reduce(0) { $0 + $1 * $1 }.squareRoot()
            for i in 0..<K { r[i] /= norm }
            block.append(r)
            let length = (0..<K).reduce(0.0) { acc, _ in let g = rng.nextNormal(); return acc + g * g }.squareRoot()
            rows += r.map { $0 * length }
        }
        return rows
    }
}

/// Settings of a feature-map attention call besides the map.
public struct FeatureMapOptions: Sendable {
    /// Causal (`s <= t`) or every key.
    public var causal = true
    /// Divide by the normalizer `scale phi(q_t) . sum_s phi(k_s) + 1e-10` (linear_attn's `normalize`).
    public var normalize = false
    /// Multiplies every weight `phi(q) . phi(k)` (1 when nil; cancels with the normalizer).
    public var scale: Float?
    /// Check that inputs are finite and, unless allowed, that outputs are.
    public var validate = true, allowNonFiniteOutputs = false

    /// Causal, unnormalized, scale 1. O(1).
    public init(causal: Bool = true, normalize: Bool = false, scale: Float? = nil) {
        self.causal = causal
        self.normalize = normalize
        self.scale = scale
    }
}
