import Foundation
import Linea

/// fla's `linear_attn` (`fla/layers/linear_attn.py`): q, k, v projections, key and value heads repeated to the
/// query heads, a feature map on q and k (identity, or the learnable Hadamard product `elementwise_product`), plain
/// linear attention (no decay), and an RMSNorm output.
enum FLALinearAttention {
    /// The mixer's config fields.
    struct Config {
        let hidden: Int, heads: Int, kvHeads: Int, keyDim: Int, valueDim: Int, eps: Float, featureMap: String, tiedMaps: Bool

        init(_ c: ConfigFields) throws {
            hidden = try c.int("hidden_size")
            heads = try c.int("num_heads", default: 4)
            kvHeads = try c.optionalInt("num_kv_heads") ?? heads
            keyDim = try FLAMath.headDim(c, total: Double(hidden) * c.double("expand_k", default: 1), heads: heads, key: "expand_k")
            valueDim = try FLAMath.headDim(c, total: Double(hidden) * c.double("expand_v", default: 1), heads: heads, key: "expand_v")
            eps = Float(try c.double("norm_eps", default: 1e-6))
            featureMap = try c.string("feature_map", default: "elementwise_product")
            guard ["elementwise_product", "identity"].contains(featureMap) else { throw c.unsupported("feature_map", "elementwise_product or identity") }
            tiedMaps = try c.bool("tie_feature_map_qk", default: false)
            for key in ["norm_q", "norm_k", "norm_feature_map"] where try c.bool(key, default: false) {
                throw c.unsupported(key, "false")
            }
            guard kvHeads >= 1, heads % kvHeads == 0 else {
                throw LineaError.invalidArgument(argument: "\(c.source): num_kv_heads", expected: "a divisor of num_heads (\(heads))", actual: "\(kvHeads)")
            }
        }
    }

    /// fla's `HadamardFeatureMap`: `layer1(x) · layer2(x)`, two Linears with biases over the head dim.
    struct HadamardMap {
        let w1: DeviceTensor, b1: DeviceTensor, w2: DeviceTensor, b2: DeviceTensor

        init(_ w: Weights, _ p: String, dim: Int) throws {
            (w1, b1) = (try w.take(p + "layer1.weight", [dim, dim]), try w.take(p + "layer1.bias", [dim]))
            (w2, b2) = (try w.take(p + "layer2.weight", [dim, dim]), try w.take(p + "layer2.bias", [dim]))
        }

        func callAsFunction(_ x: DeviceTensor) throws -> DeviceTensor {
            try Ops.mul(Ops.matmul(x, weight: w1, bias: b1), Ops.matmul(x, weight: w2, bias: b2))
        }
    }

    /// One layer's weights.
    struct Mixer: FLAMixer {
        let c: Config
        let q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, norm: DeviceTensor, o: DeviceTensor
        let qMap: HadamardMap?, kMap: HadamardMap?

        init(_ c: Config, _ w: Weights, _ p: String) throws {
            self.c = c
            q = try w.take(p + "q_proj.weight", [c.heads * c.keyDim, c.hidden])
            k = try w.take(p + "k_proj.weight", [c.kvHeads * c.keyDim, c.hidden])
            v = try w.take(p + "v_proj.weight", [c.kvHeads * c.valueDim, c.hidden])
            norm = try w.take(p + "norm.weight", [c.valueDim])
            o = try w.take(p + "o_proj.weight", [c.hidden, c.heads * c.valueDim])
            if c.featureMap == "elementwise_product" {
                let qMap = try HadamardMap(w, p + "feature_map_q.", dim: c.keyDim)
                // A tied map is one module, saved under both names (equal tensors) or under q's only: q's serves both.
                let kCopy = !c.tiedMaps || w.has(p + "feature_map_k.layer1.weight") ? try HadamardMap(w, p + "feature_map_k.", dim: c.keyDim) : qMap
                (self.qMap, kMap) = (qMap, c.tiedMaps ? qMap : kCopy)
            } else {
                (qMap, kMap) = (nil, nil)
            }
        }

        func makeCache(batch: Int, capacity: Int, device: Device) throws -> [String: DeviceTensor] {
            ["state": try DeviceTensor.zeros([batch, c.heads, c.keyDim, c.valueDim], on: device)]
        }

        func forward(_ x: DeviceTensor, positions: DeviceTensor, start: Int, cache: inout [String: DeviceTensor]) throws -> DeviceTensor {
            let (B, T, group) = (x.shape[0], x.shape[1], c.heads / c.kvHeads)
            var q = try Ops.matmul(x, weight: q).reshaped([B, T, c.heads, c.keyDim])
            var k = try FLAMath.repeatHeads(Ops.matmul(x, weight: k).reshaped([B, T, c.kvHeads, c.keyDim]), group)
            let v = try FLAMath.repeatHeads(Ops.matmul(x, weight: v).reshaped([B, T, c.kvHeads, c.valueDim]), group)
            if let qMap, let kMap { (q, k) = (try qMap(q), try kMap(k)) }
            let out = try Recurrence.forward(.linearAttention, q: q, k: k, v: v, initialState: cache["state"]!)
            cache["state"] = out.finalState
            return try Ops.matmul(Ops.rmsNorm(out.o, weight: norm, eps: c.eps).reshaped([B, T, c.heads * c.valueDim]), weight: o)
        }
    }

    /// Loads a `linear_attn` checkpoint. O(weights).
    static func load(config: ConfigFields, weights: Weights, modelType: String) throws -> FLAModel {
        let c = try Config(config)
        return try FLAModel(config: config, weights: weights, modelType: modelType, hiddenRatio: 4) { _, p in try Mixer(c, weights, p) }
    }
}
