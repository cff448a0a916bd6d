import Foundation
import Linea

/// fla's `retnet` (`fla/layers/multiscale_retention.py`): q, k, v projections, NeoX rotary on q and k, key and
/// value heads repeated to the query heads, retention (fixed per-head decays `log(1 - 2^(-5-h))`), and an RMSNorm
/// output gated by swish(g_proj(x)). No short convolutions, whatever `use_short_conv` says: the block never passes it.
enum FLARetNet {
    /// The mixer's config fields.
    struct Config {
        let hidden: Int, heads: Int, kvHeads: Int, keyDim: Int, valueDim: Int, eps: Float, outputGate: Bool, fusedNormName: Bool

        init(_ c: ConfigFields) throws {
            hidden = try c.int("hidden_size")
            heads = try c.int("num_heads", default: 8)
            kvHeads = try c.optionalInt("num_kv_heads") ?? heads
            keyDim = try FLAMath.headDim(c, total: Double(hidden) * c.double("expand_k", default: 1), heads: heads, key: "expand_k")
            valueDim = try FLAMath.headDim(c, total: Double(hidden) * c.double("expand_v", default: 2), heads: heads, key: "expand_v")
            eps = Float(try c.double("norm_eps", default: 1e-6))
            outputGate = try c.bool("use_output_gate", default: true)
            fusedNormName = try outputGate && c.bool("fuse_norm", default: true)
            if c.has("feature_map") { throw c.unsupported("feature_map", "null") }
            guard try c.bool("elementwise_affine", default: true) else { throw c.unsupported("elementwise_affine", "true") }
            c.ignore(["use_short_conv", "conv_size"])
            guard kvHeads >= 1, heads % kvHeads == 0 else {
                throw LineaError.invalidArgument(argument: "\(c.source): num_kv_heads", expected: "a divisor of num_heads (\(heads))", actual: "\(kvHeads)")
            }
            guard keyDim % 2 == 0 else { throw c.unsupported("expand_k", "an even key head dim (rotary)") }
        }
    }

    /// One layer's weights.
    struct Mixer: FLAMixer {
        let c: Config
        let q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, g: DeviceTensor?, norm: DeviceTensor, o: DeviceTensor

        init(_ c: Config, _ w: Weights, _ p: String) throws {
            self.c = c
            q = try w.take(p + "q_proj.weight", [c.heads * c.keyDim, c.hidden])
            k = try w.take(p + "k_proj.weight", [c.kvHeads * c.keyDim, c.hidden])
            v = try w.take(p + "v_proj.weight", [c.kvHeads * c.valueDim, c.hidden])
            g = c.outputGate ? try w.take(p + "g_proj.weight", [c.heads * c.valueDim, c.hidden]) : nil
            norm = try w.take(p + (c.fusedNormName ? "g_norm_swish_gate.weight" : "g_norm.weight"), [c.valueDim])
            o = try w.take(p + "o_proj.weight", [c.hidden, c.heads * c.valueDim])
        }

        func makeCache(batch: Int, capacity: Int, device: Device) throws -> [String: DeviceTensor] {
            ["state": try DeviceTensor.zeros([batch, c.heads, c.keyDim, c.valueDim], on: device)]
        }

        func forward(_ x: DeviceTensor, positions: DeviceTensor, start: Int, cache: inout [String: DeviceTensor]) throws -> DeviceTensor {
            let (B, T, group) = (x.shape[0], x.shape[1], c.heads / c.kvHeads)
            let q = try Ops.rotary(Ops.matmul(x, weight: q).reshaped([B, T, c.heads, c.keyDim]), positions: positions)
            let k = try Ops.rotary(Ops.matmul(x, weight: k).reshaped([B, T, c.kvHeads, c.keyDim]), positions: positions)
            let v = try Ops.matmul(x, weight: v).reshaped([B, T, c.kvHeads, c.valueDim])
            let out = try ModelMath.recurrence(.retention, q: q, k: FLAMath.repeatHeads(k, group), v: FLAMath.repeatHeads(v, group), weights: o, cache: &cache)
            let gate = try g.map { try Ops.matmul(x, weight: $0).reshaped(out.shape) }
            return try Ops.matmul(FLAMath.gatedNorm(out, gate: gate, weight: norm, eps: c.eps).reshaped([B, T, c.heads * c.valueDim]), weight: o)
        }
    }

    /// Loads a `retnet` checkpoint. O(weights).
    static func load(config: ConfigFields, weights: Weights, modelType: String) throws -> FLAModel {
        let c = try Config(config)
        return try FLAModel(config: config, weights: weights, modelType: modelType, hiddenRatio: 2) { _, p in try Mixer(c, weights, p) }
    }
}
