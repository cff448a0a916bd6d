import Foundation
import Linea

/// Hugging Face's `qwen3_next`, `qwen3_5_text` and `qwen3_5_moe_text` (Qwen3.5's text models: split input projections): Gated DeltaNet layers (grouped value heads, a short SiLU convolution, gated RMSNorm on
/// the output) with gated full-attention layers between them (q/k RMSNorm, partial rotary, a sigmoid output gate),
/// zero-centered RMSNorms, and a sparse mixture of experts with a gated shared expert (or a dense SwiGLU MLP).
public final class Qwen3Next: CausalLM {
    /// The config fields the forward reads.
    struct Config {
        let vocab: Int, hidden: Int, layers: Int, eps: Float, maxContext: Int?, tied: Bool
        let fullAttention: [Bool]
        // Full attention.
        let heads: Int, kvHeads: Int, headDim: Int, theta: Float, rotaryDim: Int, attentionBias: Bool
        // Gated DeltaNet.
        let keyHeads: Int, valueHeads: Int, keyDim: Int, valueDim: Int, convWidth: Int
        // MLP and experts.
        let intermediate: Int, experts: Int, topK: Int, normalizeTopK: Bool, expertIntermediate: Int, sharedIntermediate: Int
        let sparse: [Bool]

        init(_ c: ConfigFields) throws {
            vocab = try c.int("vocab_size")
            hidden = try c.int("hidden_size")
            layers = try c.int("num_hidden_layers")
            eps = Float(try c.double("rms_norm_eps", default: 1e-6))
            maxContext = try c.optionalInt("max_position_embeddings")
            tied = try c.bool("tie_word_embeddings", default: false)
            heads = try c.int("num_attention_heads")
            kvHeads = try c.int("num_key_value_heads", default: heads)
            headDim = try c.int("head_dim", default: hidden / max(heads, 1))
            attentionBias = try c.bool("attention_bias", default: false)
            let rope = try RopeConfig.read(c, defaultTheta: 10_000)
            theta = Float(rope.theta)
            if rope.scaling != nil { throw c.unsupported("rope_scaling", "none or rope_type default") }
            rotaryDim = Int(Double(headDim) * rope.partial)
            keyHeads = try c.int("linear_num_key_heads")
            valueHeads = try c.int("linear_num_value_heads")
            keyDim = try c.int("linear_key_head_dim")
            valueDim = try c.int("linear_value_head_dim")
            convWidth = try c.int("linear_conv_kernel_dim", default: 4)
            experts = try c.int("num_experts", default: 0)
            // Qwen3.5's MoE models have no dense MLP and no intermediate_size.
            intermediate = experts > 0 ? try c.int("intermediate_size", default: 0) : try c.int("intermediate_size")
            topK = try c.int("num_experts_per_tok", default: 1)
            normalizeTopK = try c.bool("norm_topk_prob", default: true)
            expertIntermediate = try c.int("moe_intermediate_size", default: intermediate)
            sharedIntermediate = try c.int("shared_expert_intermediate_size", default: 0)
            let sparseStep = try c.int("decoder_sparse_step", default: 1)
            let mlpOnly = Set(try c.ints("mlp_only_layers") ?? [])
            let (count, expertCount) = (layers, experts)
            sparse = (0..<count).map { i in !mlpOnly.contains(i) && expertCount > 0 && sparseStep > 0 && (i + 1) % sparseStep == 0 }
            if let flags = try c.layerFlags("layer_types", layers: layers, allowed: ["full_attention", "linear_attention"], flagged: "full_attention") {
                fullAttention = flags
            } else {
                let interval = try c.int("full_attention_interval", default: 4)
                fullAttention = (0..<count).map { interval > 0 && ($0 + 1) % interval == 0 }
            }
            guard try c.string("hidden_act", default: "silu") == "silu" else { throw c.unsupported("hidden_act", "silu") }
            c.ignore(["attention_dropout", "router_aux_loss_coef", "output_router_logits", "full_attention_interval", "partial_rotary_factor"])
            for (name, n) in [("vocab_size", vocab), ("hidden_size", hidden), ("num_hidden_layers", layers), ("num_attention_heads", heads),
                              ("head_dim", headDim), ("linear_num_key_heads", keyHeads), ("linear_key_head_dim", keyDim),
                              ("linear_value_head_dim", valueDim), ("intermediate_size", sparse.allSatisfy { $0 } ? 1 : intermediate)] where n < 1 {
                throw LineaError.invalidArgument(argument: "\(c.source): \(name)", expected: ">= 1", actual: "\(n)")
            }
            guard kvHeads >= 1, heads % kvHeads == 0 else {
                throw LineaError.invalidArgument(argument: "\(c.source): num_key_value_heads", expected: "a divisor of num_attention_heads (\(heads))", actual: "\(kvHeads)")
            }
            guard valueHeads >= keyHeads, valueHeads % keyHeads == 0 else {
                throw LineaError.invalidArgument(argument: "\(c.source): linear_num_value_heads",
                                                 expected: "a multiple of linear_num_key_heads (\(keyHeads))", actual: "\(valueHeads)")
            }
            guard (2...4).contains(convWidth) else { throw c.unsupported("linear_conv_kernel_dim", "2, 3 or 4") }
            guard rotaryDim >= 2, rotaryDim % 2 == 0 else {
                throw LineaError.invalidArgument(argument: "\(c.source): partial_rotary_factor", expected: "an even number of rotary dims >= 2",
                                                 actual: "\(rotaryDim) of head_dim \(headDim)")
            }
            if experts > 0 && !(1...experts).contains(topK) {
                throw LineaError.invalidArgument(argument: "\(c.source): num_experts_per_tok", expected: "1...\(experts)", actual: "\(topK)")
            }
        }

        /// Value heads per key head, and the widths of the concatenated q, k, v (the convolution's channels).
        var group: Int { valueHeads / keyHeads }
        var convChannels: Int { 2 * keyHeads * keyDim + valueHeads * valueDim }
    }

    /// A Gated DeltaNet mixer's weights.
    struct LinearMixer {
        /// Qwen3-Next fuses the input projections per key head ([q | k | v | z] and [b | a] for each group of value
        /// heads); Qwen3.5 splits them into [q | k | v], z, b and a, which a checkpoint written in name order stores
        /// back to back as a, b, qkv, z: then one matmul computes all four (`stacked`, rows [a | b | qkv | z]).
        enum Projections {
            case fused(qkvz: DeviceTensor, ba: DeviceTensor)
            case split(qkv: DeviceTensor, z: DeviceTensor, b: DeviceTensor, a: DeviceTensor)
            case stacked(DeviceTensor)
        }
        let projections: Projections
        /// `-e^A_log` and `dt_bias` per value head, f32.
        let negA: DeviceTensor, dtBias: DeviceTensor
        let conv: DeviceTensor, norm: DeviceTensor, out: DeviceTensor
    }

    /// A gated full-attention mixer's weights; q_proj's rows ([q | gate] per head) split at load into `q` and `gate`.
    struct AttentionMixer {
        let q: DeviceTensor, gate: DeviceTensor, k: DeviceTensor, v: DeviceTensor, o: DeviceTensor, qNorm: DeviceTensor, kNorm: DeviceTensor
        let qBias: DeviceTensor?, gateBias: DeviceTensor?, kBias: DeviceTensor?, vBias: DeviceTensor?, oBias: DeviceTensor?
    }

    /// One decoder layer.
    struct Layer {
        let inputNorm: DeviceTensor, postNorm: DeviceTensor
        let linear: LinearMixer?, attention: AttentionMixer?
        let mlp: GatedMLP?, router: DeviceTensor?, experts: [GatedMLP], shared: GatedMLP?, sharedGate: DeviceTensor?
    }

    public let modelType: String
    public var vocabularySize: Int { config.vocab }
    public var maxContext: Int? { config.maxContext }
    public let device: Device
    let config: Config
    let embed: DeviceTensor, norm: DeviceTensor, head: DeviceTensor
    let layers: [Layer]

    /// Reads the config and takes every weight under `model.` (throws naming a missing, misshapen or left-over
    /// tensor). O(weights).
    init(config fields: ConfigFields, weights w: Weights, modelType: String) throws {
        let c = try Config(fields)
        (config, self.modelType, device) = (c, modelType, w.device)
        embed = try w.take("model.embed_tokens.weight", [c.vocab, c.hidden])
        norm = try w.take("model.norm.weight", [c.hidden])
        head = try w.head(tied: c.tied, embedding: embed)
        func mlp(_ p: String, _ width: Int) throws -> GatedMLP { try GatedMLP(w, p, hidden: c.hidden, width: width) }
        // Experts one by one (as released), or stacked as transformers 5 holds them.
        func experts(_ p: String) throws -> [GatedMLP] {
            try GatedMLP.stacked(w, p, count: c.experts, hidden: c.hidden, width: c.expertIntermediate)
                ?? (0..<c.experts).map { try mlp(p + "\($0).", c.expertIntermediate) }
        }
        layers = try (0..<c.layers).map { i in
            let p = "model.layers.\(i)."
            var linear: LinearMixer?, attention: AttentionMixer?
            if c.fullAttention[i] {
                let a = p + "self_attn."
                func bias(_ name: String, _ n: Int) throws -> DeviceTensor? { c.attentionBias ? try w.take(a + name, [n]) : nil }
                // q_proj's output is [q | gate] per head: its rows (and bias) de-interleaved once here, so that no
                // forward copies the two column blocks out of one product.
                let (qRows, qBias) = (try w.take(a + "q_proj.weight", [2 * c.heads * c.headDim, c.hidden]), try bias("q_proj.bias", 2 * c.heads * c.headDim))
                func half(_ t: DeviceTensor, _ j: Int) throws -> DeviceTensor {
                    let trailing = Array(t.shape.dropFirst())  // [hidden] for the weight, [] for the bias
                    return try t.reshaped([c.heads, 2, c.headDim] + trailing).narrowed(axis: 1, j..<(j + 1)).contiguous()
                        .reshaped([c.heads * c.headDim] + trailing)
                }
                attention = AttentionMixer(
                    q: try half(qRows, 0), gate: try half(qRows, 1),
                    k: try w.take(a + "k_proj.weight", [c.kvHeads * c.headDim, c.hidden]),
                    v: try w.take(a + "v_proj.weight", [c.kvHeads * c.headDim, c.hidden]), o: try w.take(a + "o_proj.weight", [c.hidden, c.heads * c.headDim]),
                    qNorm: try w.take(a + "q_norm.weight", [c.headDim]), kNorm: try w.take(a + "k_norm.weight", [c.headDim]),
                    qBias: try qBias.map { try half($0, 0) }, gateBias: try qBias.map { try half($0, 1) }, kBias: try bias("k_proj.bias", c.kvHeads * c.headDim),
                    vBias: try bias("v_proj.bias", c.kvHeads * c.headDim), oBias: try bias("o_proj.bias", c.hidden))
            } else {
                let l = p + "linear_attn."
                let (keyWidth, valueWidth) = (c.keyHeads * c.keyDim, c.valueHeads * c.valueDim)
                let split = [(l + "in_proj_a.weight", [c.valueHeads, c.hidden]), (l + "in_proj_b.weight", [c.valueHeads, c.hidden]),
                             (l + "in_proj_qkv.weight", [c.convChannels, c.hidden]), (l + "in_proj_z.weight", [valueWidth, c.hidden])]
                let projections: LinearMixer.Projections = !w.has(split[2].0) ? .fused(qkvz: try w.take(l + "in_proj_qkvz.weight", [2 * keyWidth + 2 * valueWidth, c.hidden]),
                             ba: try w.take(l + "in_proj_ba.weight", [2 * c.valueHeads, c.hidden]))
                    : try w.takeRows(split).map { .stacked($0) } ?? {
                        let t = try split.map { try w.take($0.0, $0.1) }  // a, b, qkv, z
                        return .split(qkv: t[2], z: t[3], b: t[1], a: t[0])
                    }()
                linear = LinearMixer(
                    projections: projections,
                    negA: try ModelMath.negExp(w.take(l + "A_log", [c.valueHeads])),
                    dtBias: try Ops.cast(w.take(l + "dt_bias", [c.valueHeads]), to: .float32),
                    conv: try w.take(l + "conv1d.weight", [c.convChannels, 1, c.convWidth]).reshaped([c.convChannels, c.convWidth]),
                    norm: try w.take(l + "norm.weight", [c.valueDim]), out: try w.take(l + "out_proj.weight", [c.hidden, valueWidth]))
            }
            let sparse = c.sparse[i]
            return Layer(
                inputNorm: try w.take(p + "input_layernorm.weight", [c.hidden]), postNorm: try w.take(p + "post_attention_layernorm.weight", [c.hidden]),
                linear: linear, attention: attention,
                mlp: sparse ? nil : try mlp(p + "mlp.", c.intermediate),
                router: sparse ? try w.take(p + "mlp.gate.weight", [c.experts, c.hidden]) : nil,
                experts: sparse ? try experts(p + "mlp.experts.") : [],
                shared: sparse && c.sharedIntermediate > 0 ? try mlp(p + "mlp.shared_expert.", c.sharedIntermediate) : nil,
                sharedGate: sparse && c.sharedIntermediate > 0 ? try w.take(p + "mlp.shared_expert_gate.weight", [1, c.hidden]) : nil)
        }
        try w.finish()
    }

    public func makeCache(batch: Int, capacity: Int, kvCache: KVCacheConfig) throws -> ModelCache {
        let c = config
        let cache = ModelCache(batch: batch, capacity: capacity, layers: c.layers, kvCache: kvCache)
        for i in 0..<c.layers {
            if c.fullAttention[i] {
                try cache.addKV(layer: i, kvHeads: c.kvHeads, headDim: c.headDim, device: device, weights: embed)
            } else {
                cache.layers[i]["state"] = try DeviceTensor.zeros([batch, c.valueHeads, c.keyDim, c.valueDim], on: device)
                cache.layers[i]["conv"] = try DeviceTensor.zeros([batch, c.convChannels, c.convWidth - 1], on: device)
            }
        }
        return cache
    }

    public func forward(_ ids: DeviceTensor, cache: ModelCache, lastOnly: Bool) throws -> DeviceTensor {
        let c = config
        let (_, T, _) = try ModelMath.begin(ids, cache)
        let rotation = ModelMath.rotation(theta: c.theta, rotaryDim: c.rotaryDim, on: device)
        var h = try Ops.cast(Ops.embedding(ids: ids, table: embed), to: .float32)
        // On a GPU, norms round straight into the 16-bit input of the matmuls they feed (their only readers).
        let narrow = ModelMath.matmulInput(head)
        for (i, layer) in layers.enumerated() {
            let x = try Ops.rmsNorm(h, weight: layer.inputNorm, eps: c.eps, zeroCentered: true, outputDType: narrow)
            let mixed = if let linear = layer.linear {
                try gatedDeltaNet(x, linear, cache: &cache.layers[i])
            } else {
                try attention(x, layer.attention!, kv: cache.kv[i]!, rotation: rotation)
            }
            h = try Ops.add(h, mixed)
            let y = try Ops.rmsNorm(h, weight: layer.postNorm, eps: c.eps, zeroCentered: true, outputDType: narrow)
            h = try Ops.add(h, layer.mlp.map { try $0(y) } ?? moe(y, layer))
        }
        cache.length += T
        return try ModelMath.logits(h, norm: norm, eps: c.eps, zeroCentered: true, head: head, lastOnly: lastOnly)
    }


    /// The Gated DeltaNet mixer: the input projections (fused per key head or split), the causal SiLU convolution over [q, k, v] with its carried state, L2-normalized q and k, the
    /// gated delta rule from the carried state (g = -e^A_log · softplus(a + dt_bias), beta = sigmoid(b)), then a
    /// gated RMSNorm per value head and the output projection.
    private func gatedDeltaNet(_ x: DeviceTensor, _ m: LinearMixer, cache: inout [String: DeviceTensor]) throws -> DeviceTensor {
        let c = config
        let (B, T) = (x.shape[0], x.shape[1])
        let (g, hk, hv) = (c.group, c.keyDim, c.valueDim)
        let (keyWidth, valueWidth) = (c.keyHeads * hk, c.valueHeads * hv)
        var (channels, z, b, a): (DeviceTensor, DeviceTensor, DeviceTensor, DeviceTensor)
        switch m.projections {
        case let .split(qkv, zWeight, bWeight, aWeight):
            channels = try Ops.matmul(x, weight: qkv, outputDType: .float32)
            z = try Ops.matmul(x, weight: zWeight, outputDType: .float32).reshaped([B, T, c.valueHeads, hv])
            (b, a) = (try Ops.matmul(x, weight: bWeight, outputDType: .float32), try Ops.matmul(x, weight: aWeight, outputDType: .float32))
        case let .stacked(weight):
            let parts = try ModelMath.projections(x, weight: weight, widths: [c.valueHeads, c.valueHeads, c.convChannels, valueWidth])
            (a, b, channels, z) = (parts[0], parts[1], parts[2], try parts[3].reshaped([B, T, c.valueHeads, hv]))
        case let .fused(qkvzWeight, baWeight):
            let qkvz = try Ops.matmul(x, weight: qkvzWeight, outputDType: .float32).reshaped([B, T, c.keyHeads, 2 * hk + 2 * g * hv])
            channels = try DeviceTensor.zeros([B, T, c.convChannels], on: device)
            try channels.narrowed(axis: 2, 0..<keyWidth).copy(from: ModelMath.slice(qkvz, 0..<hk).reshaped([B, T, keyWidth]))
            try channels.narrowed(axis: 2, keyWidth..<(2 * keyWidth)).copy(from: ModelMath.slice(qkvz, hk..<(2 * hk)).reshaped([B, T, keyWidth]))
            try channels.narrowed(axis: 2, (2 * keyWidth)..<c.convChannels)
                .copy(from: ModelMath.slice(qkvz, (2 * hk)..<(2 * hk + g * hv)).reshaped([B, T, valueWidth]))
            z = try ModelMath.slice(qkvz, (2 * hk + g * hv)..<(2 * hk + 2 * g * hv)).reshaped([B, T, c.valueHeads, hv])
            // [b | a] per key head: b and a each in value-head order.
            let ba = try Ops.matmul(x, weight: baWeight, outputDType: .float32).reshaped([B, T, c.keyHeads, 2 * g])
            (b, a) = (try ModelMath.slice(ba, 0..<g).reshaped([B, T, c.valueHeads]), try ModelMath.slice(ba, g..<(2 * g)).reshaped([B, T, c.valueHeads]))
        }
        let conv = try Ops.causalConv1d(channels, weight: m.conv, state: cache["conv"]!, silu: true, parts: [keyWidth, keyWidth, valueWidth])
        let q = try Ops.l2Norm(conv[0].reshaped([B, T, c.keyHeads, hk]))
        let k = try Ops.l2Norm(conv[1].reshaped([B, T, c.keyHeads, hk]))
        let v = try conv[2].reshaped([B, T, c.valueHeads, hv])
        // beta = sigmoid(b), g = -e^A_log · softplus(a + dt_bias), per value head.
        let decay = try Ops.mul(Ops.softplus(Ops.add(a, m.dtBias)), m.negA)
        let o = try ModelMath.recurrence(.gatedDeltaRule, q: q, k: k, v: v, g: decay, beta: Ops.sigmoid(b), weights: m.out, cache: &cache)
        let normed = try Ops.rmsNormGated(o, gate: z, weight: m.norm, eps: c.eps, outputDType: ModelMath.matmulInput(m.out))
        return try Ops.matmul(normed.reshaped([B, T, valueWidth]), weight: m.out, outputDType: .float32)
    }

    /// Gated full attention: q_proj gives q and its gate per head, q and k get a zero-centered RMSNorm over the head
    /// dim and partial rotary (applied by the KV cache, which places them), and the output is gated by sigmoid(gate).
    private func attention(_ x: DeviceTensor, _ m: AttentionMixer, kv: any KVCache, rotation: @escaping KVRotation) throws -> DeviceTensor {
        let c = config
        let (B, T, hd) = (x.shape[0], x.shape[1], c.headDim)
        let gate = try Ops.matmul(x, weight: m.gate, bias: m.gateBias, outputDType: .float32)
        let q = try Ops.rmsNorm(Ops.matmul(x, weight: m.q, bias: m.qBias, outputDType: .float32).reshaped([B, T, c.heads, hd]), weight: m.qNorm,
                                eps: c.eps, zeroCentered: true)
        let k = try Ops.rmsNorm(Ops.matmul(x, weight: m.k, bias: m.kBias, outputDType: .float32).reshaped([B, T, c.kvHeads, hd]), weight: m.kNorm,
                                eps: c.eps, zeroCentered: true)
        let v = try Ops.matmul(x, weight: m.v, bias: m.vBias, outputDType: .float32).reshaped([B, T, c.kvHeads, hd])
        let o = try kv.attend(q: q, k: k, v: v, kinds: nil, rotation: rotation, options: AttentionOptions(causal: true))
        return try Ops.matmul(Ops.mul(o.reshaped([B, T, c.heads * hd]), Ops.sigmoid(gate)), weight: m.o, bias: m.oBias)
    }

    /// The sparse MoE block: softmax routing to the top-k experts (renormalized when `norm_topk_prob`), each expert
    /// run on the rows routed to it and added into them weighted (`Ops.indexAdd`), plus the shared expert gated by
    /// sigmoid(x · w). Only the routing's indices come to the host (to group rows by expert). O(rows · k · expert width · hidden).
    private func moe(_ y: DeviceTensor, _ layer: Layer) throws -> DeviceTensor {
        let c = config
        let rows = y.count / c.hidden
        let flat = try y.reshaped([rows, c.hidden])
        let routing = try Ops.topKRouting(Ops.matmul(flat, weight: layer.router!, outputDType: .float32), k: c.topK, normalize: c.normalizeTopK)
        let indices = try routing.indices.hostIntegers()
        var sum = try GatedMLP.routed(layer.experts, flat: flat, indices: indices, slotWeights: routing.weights.reshaped([rows * c.topK, 1]),
                                      topK: c.topK)
        if let shared = layer.shared, let sharedGate = layer.sharedGate {
            sum = try Ops.add(sum, Ops.mul(shared(flat), Ops.sigmoid(Ops.matmul(flat, weight: sharedGate, outputDType: .float32))))
        }
        return try sum.reshaped(y.shape)
    }
}
