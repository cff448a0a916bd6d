import Foundation
import Linea

/// Checkpoints of random weights for benchmarks and tests (`linea model init`): a config of a supported architecture
/// sized to about a parameter count, and its weights made by the architecture's own loader (so names and shapes
/// always match what it reads).
public enum ModelInit {
    /// The architectures it makes.
    public static let types = ["llama", "qwen3_next", "qwen3_5_text", "mamba2", "kimi_linear"]

    /// Reads `100M`, `1.5B`, `800K` or a plain count. O(1).
    public static func parseSize(_ text: String) -> Int? {
        let units: [Character: Double] = ["K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9]
        let upper = text.uppercased()
        if let unit = upper.last.flatMap({ units[$0] }), let value = Double(upper.dropLast()), value > 0 { return Int(value * unit) }
        return Int(upper).flatMap { $0 > 0 ? $0 : nil }
    }

    /// The config of `type` with about `parameters` parameters and a `vocab`-token vocabulary: a hidden size and a
    /// depth with about 64 hidden units per layer. Throws for an unknown type. O(1).
    public static func config(type: String, parameters: Int, vocab: Int) throws -> [String: Any] {
        guard types.contains(type) else {
            throw LineaError.invalidArgument(argument: "--type", expected: "one of " + types.joined(separator: ", "), actual: "'\(type)'")
        }
        let widths = [128, 256, 384, 512, 640, 768, 896, 1024, 1280, 1536, 2048, 2560, 3072, 4096, 5120]
        func layers(_ h: Int) -> Int {
            let perLayer: Double = switch type {
            case "llama": 4 * Double(h * h) + 3 * Double(h) * Double(inter(h))
            case "mamba2": 6 * Double(h * h) + Double(h) * 300
            // 3 KDA layers (~4.2h²) per MLA layer (~4.5h²); 8 experts h/2 wide and a shared one (13.5h²) in all but the first.
            case "kimi_linear": (3 * 4.2 + 4.5) / 4 * Double(h * h) + 13.5 * Double(h * h)
            default: (3 * 8 + 3.5) / 4 * Double(h * h) + 3 * Double(h) * Double(3 * h)  // 3 Gated DeltaNet layers per attention layer
            }
            let head = type == "llama" ? 2 : 1  // llama's head untied
            return max(2, Int(((Double(parameters) - Double(head * vocab * h)) / perLayer).rounded()))
        }
        func inter(_ h: Int) -> Int { (8 * h / 3 + 63) / 64 * 64 }
        let h = widths.min { abs(Double(layers($0)) - Double($0) / 64) < abs(Double(layers($1)) - Double($1) / 64) }!
        var L = layers(h)
        var c: [String: Any] = ["model_type": type, "vocab_size": vocab, "hidden_size": h, "rms_norm_eps": 1e-6, "max_position_embeddings": 65536,
                                "eos_token_id": 0, "bos_token_id": 0]
        switch type {
        case "llama":
            let heads = max(1, h / 64)
            c.merge(["num_hidden_layers": L, "num_attention_heads": heads, "num_key_value_heads": max(1, heads / 4), "head_dim": 64,
                     "intermediate_size": inter(h), "rope_theta": 10000.0, "tie_word_embeddings": false, "hidden_act": "silu"]) { $1 }
        case "mamba2":
            c.merge(["num_hidden_layers": L, "num_heads": 2 * h / 64, "head_dim": 64, "state_size": 128, "n_groups": 1, "expand": 2,
                     "conv_kernel": 4, "layer_norm_epsilon": 1e-5, "tie_word_embeddings": true, "use_conv_bias": true, "use_bias": false]) { $1 }
            c["max_position_embeddings"] = nil
        default:
            L = max(4, (L + 2) / 4 * 4)
            let keyHeads = max(1, h / 128), heads = max(2, h / 64)
            c.merge(["num_hidden_layers": L, "layer_types": (0..<L).map { ($0 + 1) % 4 == 0 ? "full_attention" : "linear_attention" },
                     "num_attention_heads": heads, "num_key_value_heads": max(1, heads / 4), "head_dim": 64,
                     "linear_num_key_heads": keyHeads, "linear_num_value_heads": 2 * keyHeads, "linear_key_head_dim": 128,
                     "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4, "intermediate_size": 3 * h,
                     "rope_parameters": ["rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25],
                     "tie_word_embeddings": true, "hidden_act": "silu"]) { $1 }
            if type == "qwen3_next" { c["num_experts"] = 0 }
        }
        if type == "kimi_linear" {
            // As Moonshot writes it: three KDA layers per MLA layer, 1-indexed under linear_attn_config; the first
            // layer's MLP dense; 8 experts (top 2) h/2 wide with one shared expert; MLA without a q latent.
            L = max(4, (L + 2) / 4 * 4)
            let heads = max(2, h / 128)
            c = ["model_type": type, "vocab_size": vocab, "hidden_size": h, "rms_norm_eps": 1e-5, "model_max_length": 65536,
                 "eos_token_id": 0, "bos_token_id": 0, "pad_token_id": 0, "num_hidden_layers": L, "hidden_act": "silu", "tie_word_embeddings": false,
                 "linear_attn_config": ["kda_layers": (1...L).filter { $0 % 4 != 0 }, "full_attn_layers": (1...L).filter { $0 % 4 == 0 },
                                        "head_dim": 128, "num_heads": heads, "short_conv_kernel_size": 4],
                 "num_attention_heads": heads, "num_key_value_heads": heads, "kv_lora_rank": min(512, h / 2), "q_lora_rank": NSNull(),
                 "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "intermediate_size": 3 * h,
                 "first_k_dense_replace": 1, "num_experts": 8, "num_experts_per_token": 2, "num_expert_group": 1, "topk_group": 1,
                 "moe_renormalize": true, "num_shared_experts": 1, "routed_scaling_factor": 2.446, "moe_intermediate_size": h / 2,
                 "moe_router_activation_func": "sigmoid"]
        }
        return c
    }

    /// Writes `config` and weights in `dtype` drawn from `seed` to `directory` (config.json, generation_config.json,
    /// model.safetensors); returns the parameter count. O(parameters).
    @discardableResult
    public static func write(config: [String: Any], dtype: DType, seed: UInt64 = 0, to directory: String) throws -> Int {
        let data = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        let fields = try ConfigFields(json: data, source: "config.json")
        let type = try fields.string("model_type")
        // Qwen3.5's split projections exist; nothing else optional does (untied llama heads are made explicitly).
        // kimi_linear's are made in Moonshot's layout (q/k/v convs apart, block_sparse_moe., the router's correction bias).
        let weights = Weights(randomSeed: seed, dtype: dtype) { name in
            switch type {
            case "qwen3_5_text": name.hasSuffix("in_proj_qkv.weight")
            case "kimi_linear": name.hasSuffix("q_conv1d.weight") || name.hasSuffix("block_sparse_moe.gate.weight")
                || name.hasSuffix("e_score_correction_bias")
            default: false
            }
        }
        switch type {
        case "llama": _ = try Llama(config: fields, weights: weights, modelType: type)
        case "mamba2": _ = try Mamba2(config: fields, weights: weights, modelType: type)
        case "kimi_linear": _ = try KimiLinear(config: fields, weights: weights, modelType: type)
        default: _ = try Qwen3Next(config: fields, weights: weights, modelType: type)
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try data.write(to: URL(fileURLWithPath: (directory as NSString).appendingPathComponent("config.json")))
        let generation = try JSONSerialization.data(withJSONObject: ["eos_token_id": config["eos_token_id"] ?? 0], options: [.sortedKeys])
        try generation.write(to: URL(fileURLWithPath: (directory as NSString).appendingPathComponent("generation_config.json")))
        try SafeTensors.write(weights.made, to: (directory as NSString).appendingPathComponent("model.safetensors"),
                              metadata: ["format": "pt", "producer": "linea model init"])
        return weights.made.values.reduce(0) { $0 + $1.count }
    }
}
