import Foundation

/// How close one feature map comes to softmax attention, and whether its fast form agrees with its reference.
public struct FeatureMapApproximation: Sendable {
    /// The map's name, with Performer's feature count (e.g. `performer m256`).
    public let label: String
    /// Causal or not (always normalized, as softmax is).
    public let causal: Bool
    /// rel-RMS of the fast form's output against exact softmax attention (`scale = 1/sqrt(K)`) on the same inputs.
    public let softmaxError: Double
    /// rel-RMS of the fast (chunked) form against the map's own Float64 reference.
    public let formError: Double
}

extension FeatureMapAttention {
    /// Every map, normalized, causal and not, on seeded inputs `q, k, v [B,T,H,K]` (v standard normal, q and k normal
    /// times `qkScale`; identity's q, k uniform in [0, qkScale)): its error against exact softmax attention, and its
    /// fast form against its reference. Performer at each of `performerFeatures` (its estimator's variance grows as
    /// exp(|q + k|² / sqrt K): at unit-variance q and k of K = 16 even 1024 features stay near 100% error, hence
    /// `qkScale` 1/2); Hedgehog with the identity as its map (its initialization), hashing with 16 Gaussian
    /// projections. O(maps · B·H·T²·F).
    public static func approximations(seed: UInt64, B: Int = 1, T: Int = 128, H: Int = 2, K: Int = 16, qkScale: Float = 0.5,
                                      performerFeatures: [Int] = [16, 64, 256, 1024]) throws -> [FeatureMapApproximation] {
        var rows: [FeatureMapApproximation] = []
        var maps: [(String, FeatureMapKind, Int)] = []
        for kind in FeatureMapKind.allCases {
            if kind == .performer {
                maps += performerFeatures.map { ("performer m\($0)", kind, $0) }
            } else {
                maps.append((kind == .identity ? "identity (q, k in [0, 1))" : kind.rawValue, kind, 0))
            }
        }
        for (label, kind, features) in maps {
            var x = try FeatureMapFamily.inputs(kind, B: B, T: T, H: H, HV: H, K: K, V: K, width: 16, seed: seed)
            for name in ["q", "k"] { x[name]!.scalars = x[name]!.scalars.map { $0 * qkScale } }
            if kind == .hedgehog {
                var eye = [Float](repeating: 0, count: H * K * K)
                for h in 0..<H { for i in 0..<K { eye[(h * K + i) * K + i] = 1 } }
                x["hedgehog_weight"] = try Tensor(shape: [H, K, K], scalars: eye)
            }
            let map = FeatureMap(kind, features: max(features, 1), seed: seed, weights: kind.weightInput.flatMap { x[$0] })
            for causal in [true, false] {
                let options = FeatureMapOptions(causal: causal, normalize: true)
                let fast = try forward(q: x["q"]!, k: x["k"]!, v: x["v"]!, map: map, options: options)
                let reference = try forward(q: x["q"]!, k: x["k"]!, v: x["v"]!, map: map, options: options, form: .reference)
                let exact = try Attention.forward(q: x["q"]!, k: x["k"]!, v: x["v"]!, options: AttentionOptions(causal: causal), form: .reference)
                rows.append(FeatureMapApproximation(label: label, causal: causal, softmaxError: ErrorStats(fast, exact.o).relativeRMS,
                                                    formError: ErrorStats(fast, reference).relativeRMS))
            }
        }
        return rows
    }
}
