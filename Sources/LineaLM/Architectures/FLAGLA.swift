import Foundation
import Linea

/// fla's `gla` (`fla/layers/gla.py`): gated linear attention with a per-channel log decay
/// `logsigmoid(gk_proj(x)) / 16` (floored at `clamp_min`) from a low-rank projection, optional SiLU short
/// convolutions on q, k, v, fewer key/value heads repeated to the query heads, and an RMSNorm output gated by
/// swish(g_proj(x)).
enum FLAGLA {
    /// The mixer's config fields.
    struct Config {
        let hidden: Int, heads: Int, kvHeads: Int, keyDim: Int, valueDim: Int, eps: Float
        let shortConv: Bool, convWidth: Int, outputGate: Bool, clampMin: Float?, featureMap: String?, fusedNormName: Bool

        init(_ c: ConfigFields) throws {
            hidden = try c.int("hidden_size")
            heads = try c.int("num_heads", default: 4)
            kvHeads = try c.optionalInt("num_kv_heads") ?? heads
            keyDim = try FLAMath.headDim(c, total: Double(hidden) * c.double("expand_k", default: 0.5), heads: heads, key: "expand_k")
            valueDim = try FLAMath.headDim(c, total: Double(hidden) * c.double("expand_v", default: 1), heads: heads, key: "expand_v")
            eps = Float(try c.double("norm_eps", default: 1e-6))
            shortConv = try c.bool("use_short_conv", default: false)
            convWidth = try FLAMath.convWidth(c)
            outputGate = try c.bool("use_output_gate", default: true)
            clampMin = c.has("clamp_min") ? Float(try c.double("clamp_min")) : nil
            featureMap = try c.has("feature_map") ? c.string("feature_map") : nil
            if let featureMap, !["silu", "swish", "sigmoid"].contains(featureMap) { throw c.unsupported("feature_map", "null, silu, swish or sigmoid") }
            // fla names the output norm by whether it fused the swish gate into it.
            fusedNormName = try outputGate && c.bool("fuse_norm", default: true)
            guard try c.bool("elementwise_affine", default: true) else { throw c.unsupported("elementwise_affine", "true") }
            // The layer always decays by gk and never gates v, whatever these say.
            c.ignore(["use_gk", "use_gv"])
            guard kvHeads >= 1, heads % kvHeads == 0 else {
                throw LineaError.invalidArgument(argument: "\(c.source): num_kv_heads", expected: "a divisor of num_heads (\(heads))", actual: "\(kvHeads)")
            }
        }
    }

    /// One layer's weights; `lowRank`, `gateUp`, `gateBias`: gk_proj's two linears.
    struct Mixer: FLAMixer {
        let c: Config
        let q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, g: DeviceTensor?, o: DeviceTensor, norm: DeviceTensor
        let lowRank: DeviceTensor, gateUp: DeviceTensor, gateBias: DeviceTensor
        let convs: [ShortConv]

        init(_ c: Config, _ w: Weights, _ p: String) throws {
            self.c = c
            let (keyWidth, valueWidth, kvKeyWidth, kvValueWidth) = (c.heads * c.keyDim, c.heads * c.valueDim, c.kvHeads * c.keyDim, c.kvHeads * c.valueDim)
            q = try w.take(p + "q_proj.weight", [keyWidth, c.hidden])
            k = try w.take(p + "k_proj.weight", [kvKeyWidth, c.hidden])
            v = try w.take(p + "v_proj.weight", [kvValueWidth, c.hidden])
            g = c.outputGate ? try w.take(p + "g_proj.weight", [valueWidth, c.hidden]) : nil
            // fla fixes gate_low_rank_dim at 16.
            lowRank = try w.take(p + "gk_proj.0.weight", [16, c.hidden])
            gateUp = try w.take(p + "gk_proj.1.weight", [kvKeyWidth, 16])
            gateBias = try w.take(p + "gk_proj.1.bias", [kvKeyWidth])
            o = try w.take(p + "o_proj.weight", [c.hidden, valueWidth])
            norm = try w.take(p + (c.fusedNormName ? "g_norm_swish_gate.weight" : "g_norm.weight"), [c.valueDim])
            convs = c.shortConv ? try [("q_conv1d", keyWidth), ("k_conv1d", kvKeyWidth), ("v_conv1d", kvValueWidth)].map {
                try ShortConv(w, p, $0.0, channels: $0.1, width: c.convWidth, silu: true)
            } : []
        }

        func makeCache(batch: Int, capacity: Int, device: Device) throws -> [String: DeviceTensor] {
            try FLAMath.recurrentCache(state: [batch, c.heads, c.keyDim, c.valueDim], convs: convs, device: device)
        }

        func forward(_ x: DeviceTensor, positions: DeviceTensor, start: Int, cache: inout [String: DeviceTensor]) throws -> DeviceTensor {
            let (B, T, group) = (x.shape[0], x.shape[1], c.heads / c.kvHeads)
            var (q, k, v) = (try Ops.matmul(x, weight: q), try Ops.matmul(x, weight: k), try Ops.matmul(x, weight: v))
            if !convs.isEmpty { (q, k, v) = (try convs[0](q, cache), try convs[1](k, cache), try convs[2](v, cache)) }
            // logsigmoid(y) / 16 = -softplus(-y) / 16, floored at clamp_min.
            let y = try Ops.matmul(Ops.matmul(x, weight: lowRank), weight: gateUp, bias: gateBias)
            var gk = try Ops.mul(Ops.softplus(Ops.mul(y, FLAMath.scalar(-1, on: x.device))), FLAMath.scalar(-1.0 / 16, on: x.device))
            if let clampMin = c.clampMin { gk = try Ops.clamp(gk, min: clampMin, max: .infinity) }
            if c.featureMap == "sigmoid" {
                (q, k) = (try Ops.sigmoid(q), try Ops.sigmoid(k))
            } else if c.featureMap != nil {
                (q, k) = (try Ops.silu(q), try Ops.silu(k))
            }
            let out = try ModelMath.recurrence(
                .gla, q: q.reshaped([B, T, c.heads, c.keyDim]), k: FLAMath.repeatHeads(k.reshaped([B, T, c.kvHeads, c.keyDim]), group),
                v: FLAMath.repeatHeads(v.reshaped([B, T, c.kvHeads, c.valueDim]), group),
                g: FLAMath.repeatHeads(gk.reshaped([B, T, c.kvHeads, c.keyDim]), group), weights: o, cache: &cache)
            let gate = try g.map { try Ops.matmul(x, weight: $0).reshaped(out.shape) }
            return try Ops.matmul(FLAMath.gatedNorm(out, gate: gate, weight: norm, eps: c.eps).reshaped([B, T, c.heads * c.valueDim]), weight: o)
        }
    }

    /// Loads a `gla` checkpoint. O(weights).
    static func load(config: ConfigFields, weights: Weights, modelType: String) throws -> FLAModel {
        let c = try Config(config)
        return try FLAModel(config: config, weights: weights, modelType: modelType, hiddenRatio: 4) { _, p in try Mixer(c, weights, p) }
    }
}
