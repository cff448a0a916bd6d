import Foundation
import Linea

/// Moonshot's `kimi_linear` (Kimi-Linear), as transformers' modeling_kimi_linear.py computes it: Kimi Delta Attention
/// layers (q/k/v projections, one short SiLU convolution over [q, k, v], a low-rank per-channel forget gate
/// `g = -e^A_log · softplus(f_b(f_a(x)) + dt_bias)`, beta = sigmoid(b(x)), L2-normalized q and k, the KDA recurrence,
/// RMSNorm of the output gated by sigmoid(g_b(g_a(x)))) with multi-head latent attention layers between them (MLA
/// without rotary: the shared `k_rot` part of the keys is used as is), a dense SwiGLU MLP in the first
/// `first_k_dense_replace` layers and elsewhere a mixture of experts routed by sigmoid scores with a correction bias,
/// grouped top-k, renormalization and a routed scaling factor, plus shared experts.
///
/// The config is read as Moonshot's checkpoints write it (`linear_attn_config` with 1-indexed `kda_layers` and
/// `full_attn_layers`, `first_k_dense_replace`, `num_experts`, `num_experts_per_token`, `num_expert_group`,
/// `moe_renormalize`, `num_shared_experts`) or as transformers writes it (`layer_types`, `mlp_layer_types` first).
/// Weights in Moonshot's layout (`block_sparse_moe.`, `experts.N.w1/w2/w3`, `q_conv1d`/`k_conv1d`/`v_conv1d`) or
/// transformers' (`mlp.`, stacked `experts.gate_up_proj`/`down_proj`, one `conv1d`, `forget_gate.`).
public final class KimiLinear: CausalLM {
    struct Config {
        let vocab: Int, hidden: Int, layers: Int, eps: Float, maxContext: Int?, tied: Bool
        let fullAttention: [Bool], sparse: [Bool]
        // KDA.
        let linearHeads: Int, linearDim: Int, convWidth: Int
        // MLA.
        let heads: Int, kvRank: Int, qRank: Int?, nopeDim: Int, ropeDim: Int, valueDim: Int, attentionBias: Bool
        // MLP and experts.
        let intermediate: Int, experts: Int, topK: Int, groups: Int, topKGroups: Int, normalizeTopK: Bool, scaling: Float
        let expertIntermediate: Int, sharedExperts: Int

        var qkDim: Int { nopeDim + ropeDim }
        var linearWidth: Int { linearHeads * linearDim }

        init(_ c: ConfigFields) throws {
            vocab = try c.int("vocab_size")
            hidden = try c.int("hidden_size")
            layers = try c.int("num_hidden_layers")
            eps = Float(try c.double("rms_norm_eps", default: 1e-5))
            maxContext = try c.optionalInt("model_max_length") ?? c.optionalInt("max_position_embeddings")
            tied = try c.bool("tie_word_embeddings", default: false)
            let count = layers
            // KDA sizes: linear_attn_config's take precedence (transformers' rule), then the flat fields.
            let linear = try c.object("linear_attn_config")
            linearHeads = try linear?.has("num_heads") == true ? linear!.int("num_heads") : c.int("linear_num_heads", default: 32)
            linearDim = try linear?.has("head_dim") == true ? linear!.int("head_dim") : c.int("linear_head_dim", default: 128)
            convWidth = try linear?.has("short_conv_kernel_size") == true ? linear!.int("short_conv_kernel_size")
                : c.int("linear_conv_kernel_dim", default: 4)
            if let flags = try c.layerFlags("layer_types", layers: layers, allowed: ["full_attention", "linear_attention"], flagged: "full_attention") {
                fullAttention = flags
            } else if let linear, linear.has("kda_layers"), linear.has("full_attn_layers") {
                // 1-indexed in Moonshot's config; every layer must be named exactly once.
                let kda = try linear.ints("kda_layers") ?? [], full = try linear.ints("full_attn_layers") ?? []
                var kinds = [Bool?](repeating: nil, count: count)
                for (list, isFull, name) in [(kda, false, "kda_layers"), (full, true, "full_attn_layers")] {
                    for n in list {
                        guard (1...max(count, 1)).contains(n), kinds[n - 1] == nil else {
                            throw LineaError.invalidArgument(argument: "\(c.source): linear_attn_config.\(name)",
                                                             expected: "layers numbered 1...\(count) (1-indexed), each in one list once", actual: "\(n)")
                        }
                        kinds[n - 1] = isFull
                    }
                }
                if let missing = kinds.firstIndex(where: { $0 == nil }) {
                    throw LineaError.invalidArgument(argument: "\(c.source): linear_attn_config", expected: "every layer in kda_layers or full_attn_layers",
                                                     actual: "layer \(missing + 1) in neither")
                }
                fullAttention = kinds.map { $0! }
            } else {
                fullAttention = (0..<count).map { $0 > 0 && $0 % 4 == 0 }
            }
            if let flags = try c.layerFlags("mlp_layer_types", layers: layers, allowed: ["dense", "sparse"], flagged: "sparse") {
                sparse = flags
            } else {
                let dense = try c.int("first_k_dense_replace", default: 1)
                sparse = (0..<count).map { $0 >= dense }
            }
            // linear_attn_config's other fields (gate_lower_bound, use_full_rank_gate: other models' KDA) would change
            // the layer: an error naming the field.
            linear?.ignore(["kda_layers", "full_attn_layers"])  // read above unless layer_types came first
            if let linear, let other = linear.unknownKeys.first {
                throw linear.unsupported(other, "absent (kimi_linear's linear_attn_config: kda_layers, full_attn_layers, num_heads, head_dim, short_conv_kernel_size)")
            }
            // transformers' MLA is NoPE (Moonshot's mla_use_nope true): the rotary fields are not used.
            if c.has("mla_use_nope"), try !c.bool("mla_use_nope", default: true) { throw c.unsupported("mla_use_nope", "true (MLA without rotary)") }
            c.ignore(["first_k_dense_replace", "linear_num_heads", "linear_head_dim", "linear_conv_kernel_dim", "head_dim", "qk_head_dim",
                      "initializer_range", "attention_dropout", "output_router_logits", "pretraining_tp", "router_aux_loss_coef",
                      "use_grouped_topk", "moe_layer_freq", "rope_theta", "rope_scaling", "num_nextn_predict_layers"])
            heads = try c.int("num_attention_heads")
            let kvHeads = try c.int("num_key_value_heads", default: heads)
            guard kvHeads == heads else {
                throw LineaError.invalidArgument(argument: "\(c.source): num_key_value_heads",
                                                 expected: "num_attention_heads (\(heads)): MLA expands its latent to every head", actual: "\(kvHeads)")
            }
            kvRank = try c.int("kv_lora_rank")
            qRank = try c.optionalInt("q_lora_rank")
            nopeDim = try c.int("qk_nope_head_dim")
            ropeDim = try c.int("qk_rope_head_dim")
            valueDim = try c.int("v_head_dim")
            attentionBias = try c.bool("attention_bias", default: false)
            intermediate = try c.int("intermediate_size")
            func either(_ moonshot: String, _ hf: String, _ fallback: Int) throws -> Int {
                try c.has(moonshot) ? c.int(moonshot) : c.int(hf, default: fallback)
            }
            experts = try either("num_experts", "num_local_experts", 0)
            topK = try either("num_experts_per_token", "num_experts_per_tok", 1)
            groups = try either("num_expert_group", "n_group", 1)
            topKGroups = try c.int("topk_group", default: 1)
            sharedExperts = try either("num_shared_experts", "n_shared_experts", 1)
            normalizeTopK = try c.has("moe_renormalize") ? c.bool("moe_renormalize", default: true) : c.bool("norm_topk_prob", default: true)
            scaling = Float(try c.double("routed_scaling_factor", default: 2.446))
            expertIntermediate = try c.int("moe_intermediate_size", default: intermediate)
            guard try c.string("hidden_act", default: "silu") == "silu" else { throw c.unsupported("hidden_act", "silu") }
            if c.has("moe_router_activation_func") {
                guard try c.string("moe_router_activation_func") == "sigmoid" else { throw c.unsupported("moe_router_activation_func", "sigmoid") }
            }
            for (name, n) in [("vocab_size", vocab), ("hidden_size", hidden), ("num_hidden_layers", layers), ("num_attention_heads", heads),
                              ("kv_lora_rank", kvRank), ("qk_nope_head_dim + qk_rope_head_dim", nopeDim + ropeDim), ("v_head_dim", valueDim),
                              ("linear_attn_config.num_heads", linearHeads), ("linear_attn_config.head_dim", linearDim),
                              ("intermediate_size", intermediate)] where n < 1 {
                throw LineaError.invalidArgument(argument: "\(c.source): \(name)", expected: ">= 1", actual: "\(n)")
            }
            guard nopeDim >= 0, ropeDim >= 0 else {
                throw LineaError.invalidArgument(argument: "\(c.source): qk_nope_head_dim, qk_rope_head_dim", expected: ">= 0", actual: "\(nopeDim), \(ropeDim)")
            }
            if let qRank, qRank < 1 { throw LineaError.invalidArgument(argument: "\(c.source): q_lora_rank", expected: ">= 1 or null", actual: "\(qRank)") }
            guard (2...4).contains(convWidth) else { throw c.unsupported("linear_attn_config.short_conv_kernel_size", "2, 3 or 4") }
            if sparse.contains(true) {
                guard experts >= 1 else {
                    throw LineaError.invalidArgument(argument: "\(c.source): num_experts", expected: ">= 1 (sparse layers are configured)", actual: "\(experts)")
                }
                guard groups >= 1, experts % groups == 0 else {
                    throw LineaError.invalidArgument(argument: "\(c.source): num_expert_group", expected: "a divisor of num_experts (\(experts))", actual: "\(groups)")
                }
                guard (1...groups).contains(topKGroups) else {
                    throw LineaError.invalidArgument(argument: "\(c.source): topk_group", expected: "1...\(groups) (num_expert_group)", actual: "\(topKGroups)")
                }
                guard (1...(topKGroups * experts / groups)).contains(topK) else {
                    throw LineaError.invalidArgument(argument: "\(c.source): num_experts_per_token",
                                                     expected: "1...\(topKGroups * experts / groups) (the experts of topk_group groups)", actual: "\(topK)")
                }
                guard expertIntermediate >= 1, sharedExperts >= 0 else {
                    throw LineaError.invalidArgument(argument: "\(c.source): moe_intermediate_size", expected: ">= 1", actual: "\(expertIntermediate)")
                }
            }
        }
    }

    /// A KDA mixer's weights; `negA` is `-e^A_log` repeated over each head's channels `[H·K]` (f32), `dtBias` f32.
    struct DeltaMixer {
        let q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, conv: DeviceTensor
        let fA: DeviceTensor, fB: DeviceTensor, dtBias: DeviceTensor, negA: DeviceTensor, b: DeviceTensor
        let gA: DeviceTensor, gB: DeviceTensor, norm: DeviceTensor, out: DeviceTensor
    }

    /// An MLA mixer's weights.
    /// `keyUp[h]` is head h's k_nope rows of kv_b_proj transposed, `[kv_lora_rank, qk_nope_head_dim]` (q_nope · it is q
    /// in the latent's space); `valueUp[h]` its v rows, `[v_head_dim, kv_lora_rank]`.
    struct LatentMixer {
        let q: DeviceTensor?, qA: DeviceTensor?, qABias: DeviceTensor?, qANorm: DeviceTensor?, qB: DeviceTensor?
        let kvA: DeviceTensor, kvABias: DeviceTensor?, kvANorm: DeviceTensor, o: DeviceTensor, oBias: DeviceTensor?
        let keyUp: [DeviceTensor], valueUp: [DeviceTensor]

        init(q: DeviceTensor?, qA: DeviceTensor?, qABias: DeviceTensor?, qANorm: DeviceTensor?, qB: DeviceTensor?, kvA: DeviceTensor,
             kvABias: DeviceTensor?, kvANorm: DeviceTensor, kvB: DeviceTensor, o: DeviceTensor, oBias: DeviceTensor?, heads: Int, nope: Int, value: Int) throws {
            (self.q, self.qA, self.qABias, self.qANorm, self.qB) = (q, qA, qABias, qANorm, qB)
            (self.kvA, self.kvABias, self.kvANorm, self.o, self.oBias) = (kvA, kvABias, kvANorm, o, oBias)
            let per = nope + value
            let f32 = try Ops.cast(kvB, to: .float32)
            keyUp = try (0..<heads).map { h in try Ops.transposeLastTwo(f32.narrowed(axis: 0, (h * per)..<(h * per + nope)).contiguous()) }
            valueUp = try (0..<heads).map { h in try f32.narrowed(axis: 0, (h * per + nope)..<((h + 1) * per)).contiguous() }
        }
    }

    struct Layer {
        let inputNorm: DeviceTensor, postNorm: DeviceTensor
        let delta: DeltaMixer?, latent: LatentMixer?
        let mlp: GatedMLP?, router: DeviceTensor?, bias: [Float], experts: [GatedMLP], shared: GatedMLP?
    }

    public let modelType: String
    public var vocabularySize: Int { config.vocab }
    public var maxContext: Int? { config.maxContext }
    public let device: Device
    let config: Config
    let embed: DeviceTensor, norm: DeviceTensor, head: DeviceTensor
    let layers: [Layer]

    init(config fields: ConfigFields, weights w: Weights, modelType: String) throws {
        let c = try Config(fields)
        (config, self.modelType, device) = (c, modelType, w.device)
        embed = try w.take("model.embed_tokens.weight", [c.vocab, c.hidden])
        norm = try w.take("model.norm.weight", [c.hidden])
        head = try w.head(tied: c.tied, embedding: embed)
        let device = w.device
        func mlp(_ p: String, _ width: Int) throws -> GatedMLP { try GatedMLP(w, p, hidden: c.hidden, width: width) }
        func experts(_ p: String) throws -> [GatedMLP] {
            let width = c.expertIntermediate
            if let stacked = try GatedMLP.stacked(w, p, count: c.experts, hidden: c.hidden, width: width) { return stacked }
            if w.has(p + "0.gate_proj.weight") { return try (0..<c.experts).map { try mlp(p + "\($0).", width) } }
            // Moonshot's release: w1 gate, w3 up, w2 down.
            return try (0..<c.experts).map { e in
                GatedMLP(.separate(gate: try w.take(p + "\(e).w1.weight", [width, c.hidden]), up: try w.take(p + "\(e).w3.weight", [width, c.hidden])),
                         down: try w.take(p + "\(e).w2.weight", [c.hidden, width]))
            }
        }
        let (H, K, width) = (c.linearHeads, c.linearDim, c.linearWidth)
        layers = try (0..<c.layers).map { i in
            let p = "model.layers.\(i)."
            let a = p + "self_attn."
            var delta: DeltaMixer?, latent: LatentMixer?
            if c.fullAttention[i] {
                func bias(_ name: String, _ n: Int) throws -> DeviceTensor? { c.attentionBias ? try w.take(a + name, [n]) : nil }
                let qWidth = c.heads * c.qkDim
                if let r = c.qRank {
                    latent = try LatentMixer(
                        q: nil, qA: try w.take(a + "q_a_proj.weight", [r, c.hidden]), qABias: try bias("q_a_proj.bias", r),
                        qANorm: try w.take(a + "q_a_layernorm.weight", [r]), qB: try w.take(a + "q_b_proj.weight", [qWidth, r]),
                        kvA: try w.take(a + "kv_a_proj_with_mqa.weight", [c.kvRank + c.ropeDim, c.hidden]),
                        kvABias: try bias("kv_a_proj_with_mqa.bias", c.kvRank + c.ropeDim), kvANorm: try w.take(a + "kv_a_layernorm.weight", [c.kvRank]),
                        kvB: try w.take(a + "kv_b_proj.weight", [c.heads * (c.nopeDim + c.valueDim), c.kvRank]),
                        o: try w.take(a + "o_proj.weight", [c.hidden, c.heads * c.valueDim]), oBias: try bias("o_proj.bias", c.hidden),
                        heads: c.heads, nope: c.nopeDim, value: c.valueDim)
                } else {
                    latent = try LatentMixer(
                        q: try w.take(a + "q_proj.weight", [qWidth, c.hidden]), qA: nil, qABias: nil, qANorm: nil, qB: nil,
                        kvA: try w.take(a + "kv_a_proj_with_mqa.weight", [c.kvRank + c.ropeDim, c.hidden]),
                        kvABias: try bias("kv_a_proj_with_mqa.bias", c.kvRank + c.ropeDim), kvANorm: try w.take(a + "kv_a_layernorm.weight", [c.kvRank]),
                        kvB: try w.take(a + "kv_b_proj.weight", [c.heads * (c.nopeDim + c.valueDim), c.kvRank]),
                        o: try w.take(a + "o_proj.weight", [c.hidden, c.heads * c.valueDim]), oBias: try bias("o_proj.bias", c.hidden),
                        heads: c.heads, nope: c.nopeDim, value: c.valueDim)
                }
            } else {
                // One conv over [q | k | v] (transformers) or three (Moonshot's q_conv1d, k_conv1d, v_conv1d).
                let conv: DeviceTensor
                if w.has(a + "q_conv1d.weight") {
                    let parts = try ["q", "k", "v"].map { try w.take(a + "\($0)_conv1d.weight", [width, 1, c.convWidth]).reshaped([width, c.convWidth]) }
                    conv = try DeviceTensor.zeros([3 * width, c.convWidth], dtype: parts[0].dtype, on: device)
                    for (j, part) in parts.enumerated() { try conv.narrowed(axis: 0, (j * width)..<((j + 1) * width)).copy(from: part) }
                } else {
                    conv = try w.take(a + "conv1d.weight", [3 * width, 1, c.convWidth]).reshaped([3 * width, c.convWidth])
                }
                let gate = w.has(a + "forget_gate.A_log") ? a + "forget_gate." : a
                // A_log [1, 1, H, 1] as released (or [H]); -e^A_log repeated over each head's K channels.
                let aShape: [Int] = (try? w.checkpoint?.shape(of: w.rename(gate + "A_log"))) == [H] ? [H] : [1, 1, H, 1]
                let negA = try ModelMath.negExp(w.take(gate + "A_log", aShape)).host().scalars
                delta = DeltaMixer(
                    q: try w.take(a + "q_proj.weight", [width, c.hidden]), k: try w.take(a + "k_proj.weight", [width, c.hidden]),
                    v: try w.take(a + "v_proj.weight", [width, c.hidden]), conv: conv,
                    fA: try w.take(gate + "f_a_proj.weight", [K, c.hidden]), fB: try w.take(gate + "f_b_proj.weight", [width, K]),
                    dtBias: try Ops.cast(w.take(gate + "dt_bias", [width]), to: .float32),
                    negA: try DeviceTensor(Tensor(shape: [width], scalars: (0..<width).map { negA[$0 / K] }), on: device),
                    b: try w.take(a + "b_proj.weight", [H, c.hidden]),
                    gA: try w.take(a + "g_a_proj.weight", [K, c.hidden]), gB: try w.take(a + "g_b_proj.weight", [width, K]),
                    norm: try w.take(a + "o_norm.weight", [K]), out: try w.take(a + "o_proj.weight", [c.hidden, width]))
            }
            // The MLP or MoE: under mlp. (transformers) or block_sparse_moe. (Moonshot).
            let m = w.has(p + "block_sparse_moe.gate.weight") || w.has(p + "block_sparse_moe.gate_proj.weight") ? p + "block_sparse_moe." : p + "mlp."
            let sparse = c.sparse[i]
            return Layer(
                inputNorm: try w.take(p + "input_layernorm.weight", [c.hidden]), postNorm: try w.take(p + "post_attention_layernorm.weight", [c.hidden]),
                delta: delta, latent: latent,
                mlp: sparse ? nil : try mlp(m, c.intermediate),
                router: sparse ? try w.take(m + "gate.weight", [c.experts, c.hidden]) : nil,
                bias: sparse ? (w.has(m + "gate.e_score_correction_bias")
                    ? try w.take(m + "gate.e_score_correction_bias", [c.experts]).host().scalars : [Float](repeating: 0, count: c.experts)) : [],
                experts: sparse ? try experts(m + "experts.") : [],
                shared: sparse && c.sharedExperts > 0 ? try mlp(m + "shared_experts.", c.expertIntermediate * c.sharedExperts) : nil)
        }
        try w.finish()
    }

    /// The MLA layers keep their compressed latent per token (every token: only the `full` policy applies to them).
    public func makeCache(batch: Int, capacity: Int, kvCache: KVCacheConfig) throws -> ModelCache {
        let c = config
        guard kvCache == .full || !c.fullAttention.contains(true) else {
            throw LineaError.invalidArgument(argument: "--kv-cache", expected: "full (kimi_linear's MLA layers cache their compressed latent whole)",
                                             actual: "\(kvCache)")
        }
        let cache = ModelCache(batch: batch, capacity: capacity, layers: c.layers)
        for i in 0..<c.layers {
            if c.fullAttention[i] {
                // The compressed latent (normed kv_nope, then the shared k_rot) per token, as one key/value head.
                cache.layers[i]["latent"] = try DeviceTensor.zeros([batch, capacity, 1, c.kvRank + c.ropeDim], on: device)
            } else {
                cache.layers[i]["state"] = try DeviceTensor.zeros([batch, c.linearHeads, c.linearDim, c.linearDim], on: device)
                cache.layers[i]["conv"] = try DeviceTensor.zeros([batch, 3 * c.linearWidth, c.convWidth - 1], on: device)
            }
        }
        return cache
    }

    public func forward(_ ids: DeviceTensor, cache: ModelCache, lastOnly: Bool) throws -> DeviceTensor {
        let c = config
        let (_, T, start) = try ModelMath.begin(ids, cache)
        var h = try Ops.cast(Ops.embedding(ids: ids, table: embed), to: .float32)
        for (i, layer) in layers.enumerated() {
            let x = try Ops.rmsNorm(h, weight: layer.inputNorm, eps: c.eps)
            let mixed = if let delta = layer.delta {
                try kimiDelta(x, delta, cache: &cache.layers[i])
            } else {
                try latentAttention(x, layer.latent!, start: start, cache: cache.layers[i])
            }
            h = try Ops.add(h, mixed)
            let y = try Ops.rmsNorm(h, weight: layer.postNorm, eps: c.eps)
            h = try Ops.add(h, layer.mlp.map { try $0(y) } ?? moe(y, layer))
        }
        cache.length += T
        return try ModelMath.logits(h, norm: norm, eps: c.eps, head: head, lastOnly: lastOnly)
    }

    /// Kimi Delta Attention: q, k, v through one causal SiLU convolution (state carried), L2-normalized q and k, the
    /// per-channel gate and beta, the KDA recurrence from the carried state, then RMSNorm · sigmoid(output gate).
    private func kimiDelta(_ x: DeviceTensor, _ m: DeltaMixer, cache: inout [String: DeviceTensor]) throws -> DeviceTensor {
        let c = config
        let (B, T) = (x.shape[0], x.shape[1])
        let (H, K, width) = (c.linearHeads, c.linearDim, c.linearWidth)
        let channels = try DeviceTensor.zeros([B, T, 3 * width], on: device)
        for (j, weight) in [m.q, m.k, m.v].enumerated() {
            try channels.narrowed(axis: 2, (j * width)..<((j + 1) * width)).copy(from: Ops.matmul(x, weight: weight))
        }
        let conv = try Ops.causalConv1d(channels, weight: m.conv, state: cache["conv"]!, silu: true, parts: [width, width, width])
        let q = try Ops.l2Norm(conv[0].reshaped([B, T, H, K]))
        let k = try Ops.l2Norm(conv[1].reshaped([B, T, H, K]))
        let v = try conv[2].reshaped([B, T, H, K])
        let forget = try Ops.matmul(Ops.matmul(x, weight: m.fA), weight: m.fB)
        let g = try Ops.mul(Ops.softplus(Ops.add(forget, m.dtBias)), m.negA).reshaped([B, T, H, K])
        let beta = try Ops.sigmoid(Ops.matmul(x, weight: m.b))
        let o = try ModelMath.recurrence(.kda, q: q, k: k, v: v, g: g, beta: beta, weights: m.out, cache: &cache)
        let gate = try Ops.matmul(Ops.matmul(x, weight: m.gA), weight: m.gB).reshaped([B, T, H, K])
        let normed = try Ops.mul(Ops.rmsNorm(o, weight: m.norm, eps: c.eps), Ops.sigmoid(gate))
        return try Ops.matmul(normed.reshaped([B, T, width]), weight: m.out)
    }

    /// Multi-head latent attention without rotary, over the cached latent: q per head (direct or through its low-rank,
    /// normed latent) split into q_nope and q_rot; q_nope is taken into the latent's space by each head's k_nope
    /// up-projection (the absorbed form: q_nope · k_nope = (q_nope · W_uk) · c), so every head attends over one shared
    /// key [c | k_rot] (c the KV latent RMS-normed, eps 1e-6 as transformers' default for these norms) and value c at
    /// the scale 1/sqrt(nope + rope) of the expanded heads; each head's output returns through its v up-projection. The
    /// cache holds kv_lora_rank + qk_rope_head_dim numbers a token. O(T · S · H · (kv_lora_rank + rope)).
    private func latentAttention(_ x: DeviceTensor, _ m: LatentMixer, start: Int, cache: [String: DeviceTensor]) throws -> DeviceTensor {
        let c = config
        let (B, T) = (x.shape[0], x.shape[1])
        let (H, Dn, Dr, Dv, R) = (c.heads, c.nopeDim, c.ropeDim, c.valueDim, c.kvRank)
        let qFlat = if let q = m.q {
            try Ops.matmul(x, weight: q)
        } else {
            try Ops.matmul(Ops.rmsNorm(Ops.matmul(x, weight: m.qA!, bias: m.qABias), weight: m.qANorm!, eps: 1e-6), weight: m.qB!)
        }
        let q = try qFlat.reshaped([B, T, H, c.qkDim])
        // The absorbed query [q_nope · W_uk | q_rot] per head.
        let query = try DeviceTensor.zeros([B, T, H, R + Dr], on: device)
        for h in 0..<H {
            let head = try q.narrowed(axis: 2, h..<(h + 1)).contiguous().reshaped([B, T, c.qkDim])
            if Dn > 0 {
                try query.narrowed(axis: 2, h..<(h + 1)).narrowed(axis: 3, 0..<R)
                    .copy(from: Ops.matmul(ModelMath.slice(head, 0..<Dn), weight: m.keyUp[h]).reshaped([B, T, 1, R]))
            }
            if Dr > 0 { try query.narrowed(axis: 2, h..<(h + 1)).narrowed(axis: 3, R..<(R + Dr)).copy(from: ModelMath.slice(head, Dn..<(Dn + Dr)).reshaped([B, T, 1, Dr])) }
        }
        let compressed = try Ops.matmul(x, weight: m.kvA, bias: m.kvABias)
        let latent = try Ops.rmsNorm(ModelMath.slice(compressed, 0..<R), weight: m.kvANorm, eps: 1e-6)
        let cached = try cache["latent"]!.narrowed(axis: 1, start..<(start + T))
        try cached.narrowed(axis: 3, 0..<R).copy(from: latent.reshaped([B, T, 1, R]))
        if Dr > 0 { try cached.narrowed(axis: 3, R..<(R + Dr)).copy(from: ModelMath.slice(compressed, R..<(R + Dr)).reshaped([B, T, 1, Dr])) }
        let keys = try cache["latent"]!.narrowed(axis: 1, 0..<(start + T))
        let o = try Attention.forward(q: query, k: keys, v: keys.narrowed(axis: 3, 0..<R).contiguous(),
                                      options: AttentionOptions(scale: 1 / Float(c.qkDim).squareRoot(), causal: true)).o
        let out = try DeviceTensor.zeros([B, T, H, Dv], on: device)
        for h in 0..<H {
            try out.narrowed(axis: 2, h..<(h + 1))
                .copy(from: Ops.matmul(o.narrowed(axis: 2, h..<(h + 1)).contiguous().reshaped([B, T, R]), weight: m.valueUp[h]).reshaped([B, T, 1, Dv]))
        }
        return try Ops.matmul(out.reshaped([B, T, H * Dv]), weight: m.o, bias: m.oBias)
    }

    /// The experts' routing as transformers' KimiLinearTopkRouter: sigmoid scores of f32 logits, the correction bias
    /// added for the choice only, groups ranked by the sum of their two best biased scores, the best `topk_group`
    /// groups kept, the top-k experts among them weighted by their unbiased scores (renormalized, + 1e-20, when
    /// `moe_renormalize`) times `routed_scaling_factor`. On the host (the logits are rows × experts). O(rows · experts).
    static func route(logits: [Float], rows: Int, experts E: Int, bias: [Float], groups: Int, topKGroups: Int, topK: Int,
                      normalize: Bool, scaling: Float) -> (indices: [Int], weights: [Float]) {
        let per = E / groups
        var indices: [Int] = [], weights: [Float] = []
        indices.reserveCapacity(rows * topK)
        for r in 0..<rows {
            let scores = (0..<E).map { 1 / (1 + exp(-logits[r * E + $0])) }
            let choice = (0..<E).map { scores[$0] + bias[$0] }
            let groupScores = (0..<groups).map { gIndex -> Float in
                let members = choice[(gIndex * per)..<((gIndex + 1) * per)].sorted(by: >)
                return members.prefix(2).reduce(0, +)
            }
            let kept = Set((0..<groups).sorted { groupScores[$0] > groupScores[$1] || (groupScores[$0] == groupScores[$1] && $0 < $1) }.prefix(topKGroups))
            let candidates = (0..<E).filter { kept.contains($0 / per) }
            let picked = candidates.sorted { choice[$0] > choice[$1] || (choice[$0] == choice[$1] && $0 < $1) }.prefix(topK)
            var w = picked.map { scores[$0] }
            if normalize {
                let sum = w.reduce(0, +) + 1e-20
                w = w.map { $0 / sum }
            }
            indices += picked
            weights += w.map { $0 * scaling }
        }
        return (indices, weights)
    }

    /// The MoE block: the routed experts (each on the rows routed to it, added in weighted) plus the shared experts.
    private func moe(_ y: DeviceTensor, _ layer: Layer) throws -> DeviceTensor {
        let c = config
        let rows = y.count / c.hidden
        let flat = try y.reshaped([rows, c.hidden])
        let logits = try Ops.cast(Ops.matmul(Ops.cast(flat, to: .float32), weight: layer.router!), to: .float32).host().scalars
        let routing = Self.route(logits: logits, rows: rows, experts: c.experts, bias: layer.bias, groups: c.groups, topKGroups: c.topKGroups,
                                 topK: c.topK, normalize: c.normalizeTopK, scaling: c.scaling)
        let slotWeights = try DeviceTensor(Tensor(shape: [rows * c.topK, 1], scalars: routing.weights), on: device)
        var sum = try GatedMLP.routed(layer.experts, flat: flat, indices: routing.indices, slotWeights: slotWeights, topK: c.topK)
        if let shared = layer.shared { sum = try Ops.add(sum, shared(flat)) }
        return try sum.reshaped(y.shape)
    }
}
