import Foundation
import Linea

/// A checkpoint folder as Hugging Face saves it, loaded: the model, its generation settings and what the loader
/// noticed (config fields it does not know).
public struct LoadedModel {
    /// The model.
    public let model: any CausalLM
    /// End-of-sequence ids from generation_config.json (else config.json), empty when none.
    public let eosTokenIDs: [Int]
    /// Config fields the runtime does not read, as warnings for the user.
    public let warnings: [String]

    /// Config fields every model type carries that do not change inference.
    static let metadata = ["architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "use_cache", "bos_token_id",
                           "eos_token_id", "pad_token_id", "initializer_range", "output_attentions", "output_hidden_states",
                           "return_dict", "_name_or_path", "tie_word_embeddings"]

    /// Loads `directory` (config.json, model.safetensors or an index of shards) onto `device`: weights in their file
    /// dtype, memory-mapped on the CPU. Throws naming the field or tensor at fault. O(weights).
    public static func load(directory: String, device: Device = .cpu) throws -> LoadedModel {
        let configPath = (directory as NSString).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: configPath) else {
            throw LineaError.file(path: configPath, problem: "cannot be read (a model folder holds config.json and *.safetensors)")
        }
        let outer = try ConfigFields(json: data, source: "config.json")
        var notes: [String] = []
        var (config, type) = (outer, try outer.string("model_type"))
        let checkpoint = try SafeTensorsCheckpoint(directory: directory)
        var weights = Weights(checkpoint, device: device)
        if type == "qwen3_5" || type == "qwen3_5_moe", let text = try outer.object("text_config") {
            // The multimodal layout real Qwen3.5 checkpoints ship: the text model's config nested, its weights under
            // model.language_model., the vision tower's skipped.
            (config, type) = (text, try text.string("model_type", default: type + "_text"))
            weights = Weights(checkpoint, device: device) { $0.hasPrefix("model.") ? "model.language_model." + $0.dropFirst(6) : $0 }
            let vision = checkpoint.names.filter { $0.hasPrefix("model.visual.") || $0.hasPrefix("mtp.") }
            weights.skip { $0.hasPrefix("model.visual.") || $0.hasPrefix("mtp.") }
            if !vision.isEmpty { notes.append("skipped \(vision.count) vision-tower and multi-token-prediction tensors (text generation only)") }
            outer.ignore(["vision_config", "image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "text_config"])
            outer.ignore(metadata)
            notes += outer.unknownKeys.map { "config.json: field '\($0)' is not read by the runtime; ignored" }
        }
        let model: any CausalLM
        switch type {
        case "llama": model = try Llama(config: config, weights: weights, modelType: type)
        case "qwen3_next", "qwen3_5_text", "qwen3_5_moe_text": model = try Qwen3Next(config: config, weights: weights, modelType: type)
        case "mamba2": model = try Mamba2(config: config, weights: weights, modelType: type)
        case "mamba", "falcon_mamba": model = try Mamba(config: config, weights: weights, modelType: type)
        case "kimi_linear": model = try KimiLinear(config: config, weights: weights, modelType: type)
        case "gated_deltanet": model = try FLAGatedDeltaNet.load(config: config, weights: weights, modelType: type)
        case "gla": model = try FLAGLA.load(config: config, weights: weights, modelType: type)
        case "delta_net": model = try FLADeltaNet.load(config: config, weights: weights, modelType: type)
        case "retnet": model = try FLARetNet.load(config: config, weights: weights, modelType: type)
        case "transformer": model = try FLATransformer.load(config: config, weights: weights, modelType: type)
        case "linear_attn": model = try FLALinearAttention.load(config: config, weights: weights, modelType: type)
        default:
            throw LineaError.invalidArgument(argument: "config.json: model_type", expected: "one of llama, qwen3_next, qwen3_5 (text), qwen3_5_text, qwen3_5_moe (text), qwen3_5_moe_text, mamba2 (Hugging Face's or fla's), mamba, falcon_mamba, kimi_linear, gated_deltanet, gla, delta_net, retnet, transformer, linear_attn", actual: "'\(type)'")
        }
        config.ignore(metadata)
        let warnings = notes + config.unknownKeys.map { "\(config.source): field '\($0)' is not read by the \(type) runtime; ignored" }
        return LoadedModel(model: model, eosTokenIDs: try eosIDs(directory: directory, config: outer), warnings: warnings)
    }

    /// `eos_token_id` (an id or a list) from generation_config.json, else config.json. O(1).
    static func eosIDs(directory: String, config: ConfigFields) throws -> [Int] {
        let path = (directory as NSString).appendingPathComponent("generation_config.json")
        if let data = FileManager.default.contents(atPath: path),
           let ids = try ConfigFields(json: data, source: "generation_config.json").ints("eos_token_id") {
            return ids
        }
        return try config.ints("eos_token_id") ?? []
    }
}
