import Foundation
import Linea

/// fla's `linear_attn` (`fla/layers/linear_attn.py`): q, k, v projections, key and value heads repeated to the
/// query heads, a feature map on q and k (identity, relu, elu + 1, or the learnable Hadamard product
/// `elementwise_product`), optional sum normalization of q and k, linear attention (no decay) with fla's optional
/// running normalizer (`norm_feature_map`), and an RMSNorm output.
package enum FLALinearAttention {
    /// The mixer's config fields.
    struct Config {
        let hidden: Int, heads: Int, kvHeads: Int, keyDim: Int, valueDim: Int, eps: Float, featureMap: String, tiedMaps: Bool
        let normQ: Bool, normK: Bool, normalize: Bool

        init(_ c: ConfigFields) throws {
            hidden = try c.int("hidden_size")
            heads = try c.int("num_heads", default: 4)
            kvHeads = try c.optionalInt("num_kv_heads") ?? heads
            keyDim = try FLAMath.headDim(c, total: Double(hidden) * c.double("expand_k", default: 1), heads: heads, key: "expand_k")
            valueDim = try FLAMath.headDim(c, total: Double(hidden) * c.double("expand_v", default: 1), heads: heads, key: "expand_v")
            eps = Float(try c.double("norm_eps", default: 1e-6))
            featureMap = try c.string("feature_map", default: "elementwise_product")
            guard ["elementwise_product", "identity", "relu", "elu"].contains(featureMap) else {
                throw c.unsupported("feature_map", "elementwise_product, identity, relu or elu")
            }
            tiedMaps = try c.bool("tie_feature_map_qk", default: false)
            normQ = try c.bool("norm_q", default: false)
            normK = try c.bool("norm_k", default: false)
            normalize = try c.bool("norm_feature_map", default: false)
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
                let kMap = !c.tiedMaps || w.has(p + "feature_map_k.layer1.weight") ? try HadamardMap(w, p + "feature_map_k.", dim: c.keyDim) : qMap
                (self.qMap, self.kMap) = (qMap, c.tiedMaps ? qMap : kMap)
            } else {
                (qMap, kMap) = (nil, nil)
            }
        }

        /// With the normalizer the state has one more value column: the running key sum z (values augmented by a 1).
        func makeCache(batch: Int, capacity: Int, device: Device) throws -> [String: DeviceTensor] {
            ["state": try DeviceTensor.zeros([batch, c.heads, c.keyDim, c.valueDim + (c.normalize ? 1 : 0)], on: device)]
        }

        func forward(_ x: DeviceTensor, positions: DeviceTensor, start: Int, cache: inout [String: DeviceTensor]) throws -> DeviceTensor {
            let (B, T, group) = (x.shape[0], x.shape[1], c.heads / c.kvHeads)
            var q = try Ops.matmul(x, weight: q).reshaped([B, T, c.heads, c.keyDim])
            var k = try FLAMath.repeatHeads(Ops.matmul(x, weight: k).reshaped([B, T, c.kvHeads, c.keyDim]), group)
            let v = try FLAMath.repeatHeads(Ops.matmul(x, weight: v).reshaped([B, T, c.kvHeads, c.valueDim]), group)
            if let qMap, let kMap {
                (q, k) = (try qMap(q), try kMap(k))
            } else if c.featureMap == "relu" {
                (q, k) = (try Ops.clamp(q, min: 0, max: .infinity), try Ops.clamp(k, min: 0, max: .infinity))
            } else if c.featureMap == "elu" {
                (q, k) = (try FLALinearAttention.eluPlusOne(q), try FLALinearAttention.eluPlusOne(k))
            }
            if c.normQ { q = try FLALinearAttention.sumNormalized(q) }
            if c.normK { k = try FLALinearAttention.sumNormalized(k) }
            let out = c.normalize ? try FLALinearAttention.normalized(q: q, k: k, v: v, state: cache["state"]!)
                : try Recurrence.forward(.linearAttention, q: q, k: k, v: v, initialState: cache["state"]!)
            cache["state"] = out.finalState
            return try Ops.matmul(Ops.rmsNorm(out.o, weight: norm, eps: c.eps).reshaped([B, T, c.heads * c.valueDim]), weight: o)
        }
    }

    /// fla's normalized linear attention (`normalize=True`): `o_t = scale q_tᵀ S_t / (scale q_t·z_t + 1e-10)`, z_t the
    /// running key sum, for `q, k [B,T,H,K]`, `v [B,T,H,V]` and `state [B,H,K,V+1]` whose last column is z (carried
    /// across calls, unlike the recurrence's own normalizer): a value column of ones makes the recurrence carry z and
    /// output `scale q_t·z_t` beside o_t. Returns `o [B,T,H,V]` and the new state. O(B·T·H·K·V).
    package static func normalized(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, state: DeviceTensor) throws
        -> (o: DeviceTensor, finalState: DeviceTensor) {
        let (B, T, H, V) = (v.shape[0], v.shape[1], v.shape[2], v.shape[3])
        let augmented = try Ops.add(DeviceTensor.zeros([B, T, H, V + 1], on: v.device), FLAMath.scalar(1, on: v.device))
        try augmented.narrowed(axis: 3, 0..<V).copy(from: v)
        let out = try Recurrence.forward(.linearAttention, q: q, k: k, v: augmented, initialState: state)
        // Rows of [B·T·H, ...]: a [B,T,H,1] divisor would not broadcast when T = 1 < B.
        let rows = B * T * H
        let denominator = try Ops.add(ModelMath.slice(out.o, V..<(V + 1)).reshaped([rows, 1]), FLAMath.scalar(1e-10, on: v.device))
        let o = try Ops.div(ModelMath.slice(out.o, 0..<V).reshaped([rows, V]), denominator)
        return (try o.reshaped([B, T, H, V]), out.finalState)
    }

    /// fla's `elu_p1`: `x + 1` above 0, `e^x` below: `max(x, 0) + e^min(x, 0)`. O(n).
    package static func eluPlusOne(_ x: DeviceTensor) throws -> DeviceTensor {
        try Ops.add(Ops.clamp(x, min: 0, max: .infinity), Ops.exp(Ops.clamp(x, min: -.infinity, max: 0)))
    }

    /// fla's `norm_q` / `norm_k`: `x / (sum over the head dim of x + 1e-4)` for `x [B, T, H, K]`. O(n).
    static func sumNormalized(_ x: DeviceTensor) throws -> DeviceTensor {
        let K = x.shape[x.rank - 1]
        let rows = try x.reshaped([x.count / K, K])
        let ones = try DeviceTensor(Tensor(zeros: [1, K], value: 1), on: x.device)
        let sums = try Ops.add(Ops.matmul(rows, weight: ones), FLAMath.scalar(1e-4, on: x.device))
        return try Ops.div(rows, sums).reshaped(x.shape)
    }

    /// Loads a `linear_attn` checkpoint. O(weights).
    static func load(config: ConfigFields, weights: Weights, modelType: String) throws -> FLAModel {
        let c = try Config(config)
        return try FLAModel(config: config, weights: weights, modelType: modelType, hiddenRatio: 4) { _, p in try Mixer(c, weights, p) }
    }
}
