import Foundation
import Linea

/// fla's `transformer` (`fla/models/transformer`): every layer fla's softmax attention (GQA, optional qkv bias,
/// per-head q/k RMSNorm, sliding window, NeoX rotary) followed by the GatedMLP.
enum FLATransformer {
    /// Loads a `transformer` checkpoint. O(weights).
    static func load(config: ConfigFields, weights: Weights, modelType: String) throws -> FLAModel {
        let spec = try FLAAttention.Spec(config, hidden: config.int("hidden_size"), qkNorm: nil)
        return try FLAModel(config: config, weights: weights, modelType: modelType, hiddenRatio: 4, everyLayer: spec)
    }
}
