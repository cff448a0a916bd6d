import Foundation
import Linea

/// fla's `gated_deltanet` (`fla/layers/gated_deltanet.py`): separate q, k, v projections through SiLU short
/// convolutions, the gated delta rule with L2-normalized q and k (grouped value heads when `num_v_heads` >
/// `num_heads`), g = -e^A_log · softplus(a + dt_bias), beta = sigmoid(b) (doubled with `allow_neg_eigval`), and
/// an RMSNorm output gated by swish or sigmoid.
enum FLAGatedDeltaNet {
    /// The mixer's config fields.
    struct Config {
        let heads: Int, valueHeads: Int, keyDim: Int, valueDim: Int, hidden: Int
        let gate: Bool, sigmoidGate: Bool, shortConv: Bool, convWidth: Int, negativeEigenvalues: Bool, eps: Float

        init(_ c: ConfigFields) throws {
            hidden = try c.int("hidden_size")
            heads = try c.int("num_heads", default: 6)
            valueHeads = try c.optionalInt("num_v_heads") ?? heads
            keyDim = try c.int("head_dim", default: 256)
            valueDim = Int(Double(keyDim) * (try c.double("expand_v", default: 2)))
            gate = try c.bool("use_gate", default: true)
            let activation = try c.string("output_gate_activation", default: "swish")
            guard ["swish", "silu", "sigmoid"].contains(activation) else { throw c.unsupported("output_gate_activation", "swish, silu or sigmoid") }
            sigmoidGate = activation == "sigmoid"
            shortConv = try c.bool("use_short_conv", default: true)
            convWidth = try FLAMath.convWidth(c)
            negativeEigenvalues = try c.bool("allow_neg_eigval", default: false)
            eps = Float(try c.double("norm_eps", default: 1e-6))
            guard heads >= 1, keyDim >= 1, valueDim >= 1, valueHeads >= heads, valueHeads % heads == 0 else {
                throw LineaError.invalidArgument(argument: "\(c.source): num_v_heads", expected: "a multiple of num_heads (\(heads))",
                                                 actual: "\(valueHeads) (head_dim \(keyDim), value dim \(valueDim))")
            }
        }
    }

    /// One layer's weights.
    struct Mixer: FLAMixer {
        let c: Config
        let q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, a: DeviceTensor, b: DeviceTensor, g: DeviceTensor?
        let negA: DeviceTensor, dtBias: DeviceTensor, norm: DeviceTensor, o: DeviceTensor
        let convs: [ShortConv]

        init(_ c: Config, _ w: Weights, _ p: String) throws {
            self.c = c
            let (keyWidth, valueWidth) = (c.heads * c.keyDim, c.valueHeads * c.valueDim)
            q = try w.take(p + "q_proj.weight", [keyWidth, c.hidden])
            k = try w.take(p + "k_proj.weight", [keyWidth, c.hidden])
            v = try w.take(p + "v_proj.weight", [valueWidth, c.hidden])
            a = try w.take(p + "a_proj.weight", [c.valueHeads, c.hidden])
            b = try w.take(p + "b_proj.weight", [c.valueHeads, c.hidden])
            g = c.gate ? try w.take(p + "g_proj.weight", [valueWidth, c.hidden]) : nil
            negA = try ModelMath.negExp(w.take(p + "A_log", [c.valueHeads]))
            dtBias = try Ops.cast(w.take(p + "dt_bias", [c.valueHeads]), to: .float32)
            norm = try w.take(p + "o_norm.weight", [c.valueDim])
            o = try w.take(p + "o_proj.weight", [c.hidden, valueWidth])
            convs = c.shortConv ? try [("q_conv1d", keyWidth), ("k_conv1d", keyWidth), ("v_conv1d", valueWidth)].map {
                try ShortConv(w, p, $0.0, channels: $0.1, width: c.convWidth, silu: true)
            } : []
        }

        func makeCache(batch: Int, capacity: Int, device: Device) throws -> [String: DeviceTensor] {
            try FLAMath.recurrentCache(state: [batch, c.valueHeads, c.keyDim, c.valueDim], convs: convs, device: device)
        }

        func forward(_ x: DeviceTensor, positions: DeviceTensor, start: Int, cache: inout [String: DeviceTensor]) throws -> DeviceTensor {
            let (B, T) = (x.shape[0], x.shape[1])
            var (q, k, v) = (try Ops.matmul(x, weight: q), try Ops.matmul(x, weight: k), try Ops.matmul(x, weight: v))
            if convs.isEmpty {
                (q, k, v) = (try Ops.silu(q), try Ops.silu(k), try Ops.silu(v))
            } else {
                (q, k, v) = (try convs[0](q, cache), try convs[1](k, cache), try convs[2](v, cache))
            }
            let decay = try Ops.mul(Ops.softplus(Ops.add(Ops.matmul(x, weight: a), dtBias)), negA)
            var beta = try Ops.sigmoid(Ops.matmul(x, weight: b))
            if c.negativeEigenvalues { beta = try Ops.mul(beta, FLAMath.scalar(2, on: x.device)) }
            let out = try ModelMath.recurrence(.gatedDeltaRule, q: q.reshaped([B, T, c.heads, c.keyDim]), k: k.reshaped([B, T, c.heads, c.keyDim]),
                                               v: v.reshaped([B, T, c.valueHeads, c.valueDim]), g: decay, beta: beta, useQKL2Norm: true, weights: o, cache: &cache)
            return try Ops.matmul(FLAMath.gatedNorm(out, gate: g.map { try Ops.matmul(x, weight: $0).reshaped(out.shape) },
                                                    weight: norm, eps: c.eps, sigmoid: c.sigmoidGate).reshaped([B, T, c.valueHeads * c.valueDim]),
                                  weight: o)
        }
    }

    /// Loads a `gated_deltanet` checkpoint. O(weights).
    static func load(config: ConfigFields, weights: Weights, modelType: String) throws -> FLAModel {
        let c = try Config(config)
        return try FLAModel(config: config, weights: weights, modelType: modelType, hiddenRatio: 4) { _, p in try Mixer(c, weights, p) }
    }
}

extension FLAMath {
    /// fla's output norm: RMSNorm over each head's values, times swish(gate) (or sigmoid(gate)) when there is a gate. O(n).
    static func gatedNorm(_ o: DeviceTensor, gate: DeviceTensor?, weight: DeviceTensor, eps: Float, sigmoid: Bool = false) throws -> DeviceTensor {
        guard let gate else { return try Ops.rmsNorm(o, weight: weight, eps: eps) }
        return sigmoid ? try Ops.mul(Ops.rmsNorm(o, weight: weight, eps: eps), Ops.sigmoid(gate))
            : try Ops.rmsNormGated(o, gate: gate, weight: weight, eps: eps)
    }
}
