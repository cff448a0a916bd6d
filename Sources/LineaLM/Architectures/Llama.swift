import Foundation
import Linea

/// Hugging Face's `llama`: RMSNorm, grouped-query attention with rotary embeddings (half-split), a SwiGLU MLP,
/// optional biases and tied embeddings.
public final class Llama: CausalLM {
    /// The config fields the forward reads.
    struct Config {
        let vocab: Int, hidden: Int, layers: Int, heads: Int, kvHeads: Int, headDim: Int, intermediate: Int
        let eps: Float, theta: Float, scaling: RotaryScaling?, maxContext: Int?, tied: Bool, attentionBias: Bool, mlpBias: Bool

        init(_ c: ConfigFields) throws {
            vocab = try c.int("vocab_size")
            hidden = try c.int("hidden_size")
            layers = try c.int("num_hidden_layers")
            heads = try c.int("num_attention_heads")
            kvHeads = try c.int("num_key_value_heads", default: heads)
            headDim = try c.int("head_dim", default: hidden / max(heads, 1))
            intermediate = try c.int("intermediate_size")
            eps = Float(try c.double("rms_norm_eps", default: 1e-6))
            let rope = try RopeConfig.read(c, defaultTheta: 10_000)
            guard rope.partial == 1 else { throw c.unsupported("partial_rotary_factor", "1") }
            (theta, scaling) = (Float(rope.theta), rope.scaling)
            maxContext = try c.optionalInt("max_position_embeddings")
            tied = try c.bool("tie_word_embeddings", default: false)
            attentionBias = try c.bool("attention_bias", default: false)
            mlpBias = try c.bool("mlp_bias", default: false)
            let act = try c.string("hidden_act", default: "silu")
            guard act == "silu" else { throw c.unsupported("hidden_act", "silu") }
            _ = try c.double("attention_dropout", default: 0)  // training only
            guard try c.int("pretraining_tp", default: 1) == 1 else { throw c.unsupported("pretraining_tp", "1") }
            for (name, n) in [("vocab_size", vocab), ("hidden_size", hidden), ("num_hidden_layers", layers), ("num_attention_heads", heads),
                              ("head_dim", headDim), ("intermediate_size", intermediate)] where n < 1 {
                throw LineaError.invalidArgument(argument: "\(c.source): \(name)", expected: ">= 1", actual: "\(n)")
            }
            guard kvHeads >= 1, heads % kvHeads == 0 else {
                throw LineaError.invalidArgument(argument: "\(c.source): num_key_value_heads", expected: "a divisor of num_attention_heads (\(heads))",
                                                 actual: "\(kvHeads)")
            }
        }
    }

    /// One decoder layer's weights.
    struct Layer {
        let inputNorm: DeviceTensor, postNorm: DeviceTensor
        let q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, o: DeviceTensor
        let qBias: DeviceTensor?, kBias: DeviceTensor?, vBias: DeviceTensor?, oBias: DeviceTensor?
        let mlp: GatedMLP
    }

    public let modelType: String
    public var vocabularySize: Int { config.vocab }
    public var maxContext: Int? { config.maxContext }
    public let device: Device
    let config: Config
    let embed: DeviceTensor, norm: DeviceTensor, head: DeviceTensor
    let layers: [Layer]

    /// Reads the config and takes every weight (throws naming a missing, misshapen or left-over tensor). O(weights).
    init(config fields: ConfigFields, weights w: Weights, modelType: String) throws {
        let c = try Config(fields)
        (config, self.modelType, device) = (c, modelType, w.device)
        embed = try w.take("model.embed_tokens.weight", [c.vocab, c.hidden])
        norm = try w.take("model.norm.weight", [c.hidden])
        head = try w.head(tied: c.tied, embedding: embed)
        let (q, kv) = (c.heads * c.headDim, c.kvHeads * c.headDim)
        layers = try (0..<c.layers).map { i in
            let p = "model.layers.\(i)."
            func bias(_ name: String, _ n: Int, _ present: Bool) throws -> DeviceTensor? { present ? try w.take(p + name, [n]) : nil }
            return Layer(
                inputNorm: try w.take(p + "input_layernorm.weight", [c.hidden]), postNorm: try w.take(p + "post_attention_layernorm.weight", [c.hidden]),
                q: try w.take(p + "self_attn.q_proj.weight", [q, c.hidden]), k: try w.take(p + "self_attn.k_proj.weight", [kv, c.hidden]),
                v: try w.take(p + "self_attn.v_proj.weight", [kv, c.hidden]), o: try w.take(p + "self_attn.o_proj.weight", [c.hidden, q]),
                qBias: try bias("self_attn.q_proj.bias", q, c.attentionBias), kBias: try bias("self_attn.k_proj.bias", kv, c.attentionBias),
                vBias: try bias("self_attn.v_proj.bias", kv, c.attentionBias), oBias: try bias("self_attn.o_proj.bias", c.hidden, c.attentionBias),
                mlp: try GatedMLP(w, p + "mlp.", hidden: c.hidden, width: c.intermediate, bias: c.mlpBias))
        }
        w.skip { $0.hasSuffix("rotary_emb.inv_freq") }
        try w.finish()
    }

    public func makeCache(batch: Int, capacity: Int, kvCache: KVCacheConfig) throws -> ModelCache {
        let cache = ModelCache(batch: batch, capacity: capacity, layers: config.layers, kvCache: kvCache)
        for i in 0..<config.layers { try cache.addKV(layer: i, kvHeads: config.kvHeads, headDim: config.headDim, device: device, weights: embed) }
        return cache
    }

    public func forward(_ ids: DeviceTensor, cache: ModelCache, lastOnly: Bool) throws -> DeviceTensor {
        let c = config
        let (B, T, _) = try ModelMath.begin(ids, cache)
        let rotation = ModelMath.rotation(theta: c.theta, scaling: c.scaling, on: device)
        var h = try Ops.cast(Ops.embedding(ids: ids, table: embed), to: .float32)
        for (i, layer) in layers.enumerated() {
            let x = try Ops.rmsNorm(h, weight: layer.inputNorm, eps: c.eps, outputDType: ModelMath.matmulInput(layer.q))
            // q and k go to the KV cache before rotation: it places them (stream positions, or its slots).
            let q = try Ops.matmul(x, weight: layer.q, bias: layer.qBias, outputDType: .float32).reshaped([B, T, c.heads, c.headDim])
            let k = try Ops.matmul(x, weight: layer.k, bias: layer.kBias, outputDType: .float32).reshaped([B, T, c.kvHeads, c.headDim])
            let v = try Ops.matmul(x, weight: layer.v, bias: layer.vBias, outputDType: .float32).reshaped([B, T, c.kvHeads, c.headDim])
            let o = try cache.kv[i]!.attend(q: q, k: k, v: v, kinds: nil, rotation: rotation, options: AttentionOptions(causal: true))
            h = try Ops.add(h, Ops.matmul(o.reshaped([B, T, c.heads * c.headDim]), weight: layer.o, bias: layer.oBias))
            let y = try Ops.rmsNorm(h, weight: layer.postNorm, eps: c.eps, outputDType: ModelMath.matmulInput(layer.mlp.down))
            h = try Ops.add(h, layer.mlp(y))
        }
        cache.length += T
        return try ModelMath.logits(h, norm: norm, eps: c.eps, head: head, lastOnly: lastOnly)
    }
}

/// Rotary settings as configs write them: `rope_theta` and `partial_rotary_factor` at the top level, or inside
/// `rope_parameters` (transformers 5).
enum RopeConfig {
    /// The base theta, the fraction of each head's dims that rotate, and Llama 3's frequency scaling if any (in
    /// `rope_scaling`, or in `rope_parameters` as transformers 5 writes it). O(1).
    static func read(_ c: ConfigFields, defaultTheta: Double) throws -> (theta: Double, partial: Double, scaling: RotaryScaling?) {
        var partial = try c.double("partial_rotary_factor", default: 1)
        var theta = try c.double("rope_theta", default: defaultTheta)
        var scaling: RotaryScaling?
        /// A `rope_type` and its fields: default, or llama3's.
        func readType(_ o: ConfigFields) throws {
            let type = try o.has("rope_type") ? o.string("rope_type") : o.string("type", default: "default")
            switch type {
            case "default": break
            case "llama3":
                scaling = try RotaryScaling(factor: o.double("factor"), lowFrequencyFactor: o.double("low_freq_factor"),
                                            highFrequencyFactor: o.double("high_freq_factor"),
                                            originalContext: o.double("original_max_position_embeddings"))
            default: throw o.unsupported("rope_type", "default or llama3")
            }
        }
        if let p = try c.object("rope_parameters") {
            try readType(p)
            theta = try p.double("rope_theta", default: theta)
            partial = try p.double("partial_rotary_factor", default: partial)
            // Qwen3.5's multimodal rotary: for text every position component is the token index, so the sections all
            // turn by the same angle and the rotation is the plain one.
            p.ignore(["mrope_section", "mrope_interleaved"])
            if let unknown = p.unknownKeys.first { throw p.unsupported(unknown, "the fields of rope_type default or llama3") }
        }
        if let s = try c.object("rope_scaling") {
            try readType(s)
            if let unknown = s.unknownKeys.first { throw s.unsupported(unknown, "the fields of rope_type default or llama3") }
        }
        guard theta > 0, partial > 0, partial <= 1 else {
            throw LineaError.invalidArgument(argument: "\(c.source): rope", expected: "theta > 0 and partial_rotary_factor in (0, 1]",
                                             actual: "theta \(theta), partial_rotary_factor \(partial)")
        }
        return (theta, partial, scaling)
    }
}
