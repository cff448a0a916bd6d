import Foundation
import Linea

/// fla's `delta_net` (`fla/layers/delta_net.py`): q, k, v projections through short convolutions (SiLU on v always,
/// on q and k with `qk_activation` silu), the delta rule with L2-normalized q and k, beta = sigmoid(b) (doubled with
/// `allow_neg_eigval`, or 1 without `use_beta`), and an RMSNorm output, gated by swish(g_proj(x)) with `use_gate`.
enum FLADeltaNet {
    /// The mixer's config fields.
    struct Config {
        let hidden: Int, heads: Int, keyDim: Int, valueDim: Int, eps: Float
        let gate: Bool, shortConv: Bool, convWidth: Int, useBeta: Bool, negativeEigenvalues: Bool, siluQK: Bool

        init(_ c: ConfigFields) throws {
            hidden = try c.int("hidden_size")
            heads = try c.int("num_heads", default: 16)
            keyDim = try FLAMath.headDim(c, total: Double(hidden) * c.double("expand_k", default: 1), heads: heads, key: "expand_k")
            valueDim = try FLAMath.headDim(c, total: Double(hidden) * c.double("expand_v", default: 1), heads: heads, key: "expand_v")
            eps = Float(try c.double("norm_eps", default: 1e-6))
            gate = try c.bool("use_gate", default: false)
            shortConv = try c.bool("use_short_conv", default: true)
            convWidth = try FLAMath.convWidth(c)
            useBeta = try c.bool("use_beta", default: true)
            negativeEigenvalues = try c.bool("allow_neg_eigval", default: false)
            let activation = try c.string("qk_activation", default: "silu")
            guard activation == "silu" || activation == "identity" else { throw c.unsupported("qk_activation", "silu or identity") }
            siluQK = activation == "silu"
            guard try c.string("qk_norm", default: "l2") == "l2" else { throw c.unsupported("qk_norm", "l2") }
            // Stored and passed by fla, but the layer always has its output norm.
            c.ignore(["use_output_norm"])
        }
    }

    /// One layer's weights.
    struct Mixer: FLAMixer {
        let c: Config
        let q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, b: DeviceTensor?, g: DeviceTensor?, norm: DeviceTensor, o: DeviceTensor
        let convs: [ShortConv]

        init(_ c: Config, _ w: Weights, _ p: String) throws {
            self.c = c
            let (keyWidth, valueWidth) = (c.heads * c.keyDim, c.heads * c.valueDim)
            q = try w.take(p + "q_proj.weight", [keyWidth, c.hidden])
            k = try w.take(p + "k_proj.weight", [keyWidth, c.hidden])
            v = try w.take(p + "v_proj.weight", [valueWidth, c.hidden])
            b = c.useBeta ? try w.take(p + "b_proj.weight", [c.heads, c.hidden]) : nil
            g = c.gate ? try w.take(p + "g_proj.weight", [valueWidth, c.hidden]) : nil
            norm = try w.take(p + "o_norm.weight", [c.valueDim])
            o = try w.take(p + "o_proj.weight", [c.hidden, valueWidth])
            convs = c.shortConv ? try [("q_conv1d", keyWidth, c.siluQK), ("k_conv1d", keyWidth, c.siluQK), ("v_conv1d", valueWidth, true)].map {
                try ShortConv(w, p, $0.0, channels: $0.1, width: c.convWidth, silu: $0.2)
            } : []
        }

        func makeCache(batch: Int, capacity: Int, device: Device) throws -> [String: DeviceTensor] {
            try FLAMath.recurrentCache(state: [batch, c.heads, c.keyDim, c.valueDim], convs: convs, device: device)
        }

        func forward(_ x: DeviceTensor, positions: DeviceTensor, start: Int, cache: inout [String: DeviceTensor]) throws -> DeviceTensor {
            let (B, T) = (x.shape[0], x.shape[1])
            var (q, k, v) = (try Ops.matmul(x, weight: q), try Ops.matmul(x, weight: k), try Ops.matmul(x, weight: v))
            if convs.isEmpty {
                v = try Ops.silu(v)
                if c.siluQK { (q, k) = (try Ops.silu(q), try Ops.silu(k)) }
            } else {
                (q, k, v) = (try convs[0](q, cache), try convs[1](k, cache), try convs[2](v, cache))
            }
            var beta = try b.map { try Ops.sigmoid(Ops.matmul(x, weight: $0)) }
                ?? DeviceTensor(Tensor(zeros: [B, T, c.heads], value: 1), on: x.device)
            if c.negativeEigenvalues { beta = try Ops.mul(beta, FLAMath.scalar(2, on: x.device)) }
            let out = try ModelMath.recurrence(.deltaRule, q: q.reshaped([B, T, c.heads, c.keyDim]), k: k.reshaped([B, T, c.heads, c.keyDim]),
                                               v: v.reshaped([B, T, c.heads, c.valueDim]), beta: beta, useQKL2Norm: true, weights: o, cache: &cache)
            let gate = try g.map { try Ops.matmul(x, weight: $0).reshaped(out.shape) }
            return try Ops.matmul(FLAMath.gatedNorm(out, gate: gate, weight: norm, eps: c.eps).reshaped([B, T, c.heads * c.valueDim]), weight: o)
        }
    }

    /// Loads a `delta_net` checkpoint. O(weights).
    static func load(config: ConfigFields, weights: Weights, modelType: String) throws -> FLAModel {
        let c = try Config(config)
        return try FLAModel(config: config, weights: weights, modelType: modelType, hiddenRatio: 4) { _, p in try Mixer(c, weights, p) }
    }
}
