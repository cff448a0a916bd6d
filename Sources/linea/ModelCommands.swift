import ArgumentParser
import Foundation
import Linea
import LineaLM

/// `--model` and `--device`, shared by the model commands.
struct ModelOptions: ParsableArguments {
    @Option(help: "Model folder: config.json, *.safetensors, tokenizer.json (as Hugging Face saves them); default: the built-in demo model (Models/demo).")
    var model: String = ModelOptions.demo
    @Option(help: "Device: cpu, or cuda (GPU 0).") var device: String = "cpu"

    /// The built-in demo model, in the repository this binary was built from ($LINEA_DEMO_MODEL overrides).
    static let demo = ProcessInfo.processInfo.environment["LINEA_DEMO_MODEL"]
        ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Models/demo").path

    func validate() throws {
        guard ["cpu", "cuda"].contains(device) else { throw validationErrorList(argument: "--device", got: device, known: ["cpu", "cuda"]) }
    }

    /// The model loaded on the device; each config warning printed to stderr.
    func load() throws -> LoadedModel {
        let loaded = try LoadedModel.load(directory: model, device: try openDevice(device))
        for warning in loaded.warnings { printError("warning: \(warning)") }
        return loaded
    }

    /// The folder's tokenizer.
    func tokenizer() throws -> Tokenizer { try Tokenizer(directory: URL(fileURLWithPath: model)) }
}

/// Parses `1,2,3` (commas or spaces) into ids; a usage error names `argument`.
func parseIDs(_ text: String, argument: String) throws -> [Int] {
    let parts = text.split(whereSeparator: { $0 == "," || $0 == " " })
    let ids = parts.compactMap { Int($0) }
    guard !parts.isEmpty, ids.count == parts.count else {
        throw ValidationError("\(argument): expected comma-separated token ids, got '\(text)'")
    }
    return ids
}

/// `linea generate`: streams a continuation of a prompt.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Continue a prompt with a model, streaming the text (or, with --input-ids, the new ids) as it comes.",
        discussion: "Prefill and decode tokens/s and the peak resident memory go to stderr at the end.")

    @OptionGroup var options: ModelOptions
    @Option(help: "The prompt text (tokenized with the model's tokenizer.json; default without --input-ids: 'In the beginning').")
    var prompt: String?
    @Option(help: "The prompt as token ids, comma-separated; the new ids are printed space-separated.") var inputIds: String?
    @Flag(help: "Wrap the prompt in the model's chat template as one user message.") var chat = false
    @Option(help: "Most new tokens.") var maxTokens: Int = 64
    @Flag(help: "Greedy decoding (the default unless --temperature is given).") var greedy = false
    @Option(help: "Sampling temperature (> 0 samples).") var temperature: Float?
    @Option(help: "Sample among the k most likely tokens (0: all).") var topK: Int = 0
    @Option(help: "Sample among the smallest set of tokens reaching probability p.") var topP: Float = 1
    @Option(help: "Repetition penalty (1: off).") var repetitionPenalty: Float = 1
    @Option(help: "Seed of the sampling draws.") var seed: UInt64 = 0
    @Flag(help: "Do not stop at the end-of-sequence ids.") var ignoreEos = false
    @Option(help: "KV cache of the attention layers: \(KVCacheConfig.names.joined(separator: ", ")) (sizes below).") var kvCache: String = "full"
    @OptionGroup var kvSizes: KVCacheOptions

    func validate() throws {
        if prompt != nil && inputIds != nil { throw ValidationError("expected one of --prompt and --input-ids, got both") }
        guard maxTokens >= 0 else { throw ValidationError("--max-tokens: expected >= 0, got \(maxTokens)") }
        if let temperature, !(temperature.isFinite && temperature >= 0) { throw ValidationError("--temperature: expected a finite number >= 0, got \(temperature)") }
        if greedy, let temperature, temperature > 0 { throw ValidationError("--greedy: not with --temperature \(temperature)") }
        guard topK >= 0 else { throw ValidationError("--top-k: expected >= 0, got \(topK)") }
        guard topP > 0 && topP <= 1 else { throw ValidationError("--top-p: expected a number in (0, 1], got \(topP)") }
        guard repetitionPenalty.isFinite && repetitionPenalty > 0 else { throw ValidationError("--repetition-penalty: expected a finite number > 0, got \(repetitionPenalty)") }
        if let inputIds { _ = try parseIDs(inputIds, argument: "--input-ids") }
        if chat && inputIds != nil { throw ValidationError("--chat: only with --prompt (the template renders text)") }
        if prompt == "" { throw ValidationError("--prompt: expected some text, got an empty prompt") }
        _ = try kvSizes.config(name: kvCache, flag: "--kv-cache")
    }

    func run() throws {
        let loaded = try options.load()
        var sampling = SamplingOptions()
        (sampling.temperature, sampling.topK, sampling.topP) = (temperature ?? 0, topK, topP)
        (sampling.repetitionPenalty, sampling.seed) = (repetitionPenalty, seed)
        let generator = Generator(model: loaded.model, eosTokenIDs: loaded.eosTokenIDs)
        let kv = try kvSizes.config(name: kvCache, flag: "--kv-cache")
        let out = FileHandle.standardOutput
        let result: (ids: [Int], stats: Generator.Stats)
        if let inputIds {
            var first = true
            result = try generator.generate(prompt: try parseIDs(inputIds, argument: "--input-ids"), maxTokens: maxTokens, sampling: sampling,
                                            stopAtEOS: !ignoreEos, keepIDs: false, kvCache: kv) { id in
                out.write(Data(((first ? "" : " ") + "\(id)").utf8))
                first = false
            }
            out.write(Data("\n".utf8))
        } else {
            let tokenizer = try options.tokenizer()
            let prompt = self.prompt ?? "In the beginning"
            let text = chat ? try tokenizer.applyChatTemplate([ChatMessage(role: "user", content: prompt)]) : prompt
            let ids = tokenizer.encode(text, addSpecialTokens: !chat)
            var stream = tokenizer.streamingDecoder(skipSpecialTokens: true)
            result = try generator.generate(prompt: ids, maxTokens: maxTokens, sampling: sampling, stopAtEOS: !ignoreEos, keepIDs: false,
                                            kvCache: kv) { id in
                out.write(Data(try stream.next(id).utf8))
            }
            out.write(Data((stream.finish() + "\n").utf8))
        }
        let s = result.stats
        printError(String(format: "generate: prefill %d tokens at %.1f tokens/s, decode %d tokens at %.1f tokens/s, peak resident memory %@",
                          s.promptTokens, Double(s.promptTokens) / max(s.prefillSeconds, 1e-9), s.newTokens,
                          Double(max(s.newTokens - 1, 0)) / max(s.decodeSeconds, 1e-9), formatBytes(Measure.residentBytes().peak))
                   + (kv == .full ? "" : ", kv cache \(kv)"))
    }
}

/// `linea logits`: the full forward's logits for the ids in a file.
struct LogitsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logits", abstract: "Write logits [1, T, vocab] (F32) for input_ids [1, T] (I64) read from a safetensors file.")

    @OptionGroup var options: ModelOptions
    @Option(help: "Input safetensors file with input_ids [1, T] (I64 or I32).") var inputs: String
    @Option(help: "Output safetensors file (logits).") var output: String

    func run() throws {
        let loaded = try options.load()
        let ids = try SafeTensorsFile(path: inputs).deviceTensor("input_ids")
        try ids.expectDType([.int64, .int32], "input_ids")
        try ids.expectRank(2, "input_ids", layout: "[1, T]")
        guard ids.shape[0] == 1, ids.shape[1] >= 1 else { throw LineaError.shapeMismatch(argument: "input_ids", expected: "[1, T] with T >= 1", actual: "\(ids.shape)") }
        let values = try ids.hostIntegers()
        let vocab = loaded.model.vocabularySize
        if let bad = values.first(where: { !(0..<vocab).contains($0) }) {
            throw LineaError.invalidArgument(argument: "input_ids", expected: "ids in 0..<\(vocab) (the vocabulary)", actual: "\(bad)")
        }
        if let limit = loaded.model.maxContext, values.count > limit {
            throw LineaError.invalidArgument(argument: "input_ids", expected: "at most \(limit) tokens (max_position_embeddings)", actual: "\(values.count)")
        }
        let cache = try loaded.model.makeCache(batch: 1, capacity: values.count)
        let logits = try loaded.model.forward(ids.to(loaded.model.device), cache: cache, lastOnly: false)
        try SafeTensors.write(["logits": try logits.host()], to: output, metadata: ["producer": "linea logits", "model_type": loaded.model.modelType])
        printError("logits: wrote logits \(logits.shape) to \(output)")
    }
}

/// `linea tokenize`: text to ids, or ids back to text.
struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize", abstract: "Print the token ids of a text (space-separated, one line), or with --decode the text of ids exactly.")

    @Option(help: "Model folder holding tokenizer.json (default: the built-in demo model).") var model: String = ModelOptions.demo
    @Option(help: "The text.") var text: String?
    @Option(help: "A file whose contents are the text.") var file: String?
    @Option(help: "Token ids to decode, comma-separated.") var decode: String?

    func validate() throws {
        guard [text, file, decode].compactMap({ $0 }).count == 1 else { throw ValidationError("expected exactly one of --text, --file and --decode") }
        if let decode { _ = try parseIDs(decode, argument: "--decode") }
    }

    func run() throws {
        let tokenizer = try Tokenizer(directory: URL(fileURLWithPath: model))
        if let decode {
            FileHandle.standardOutput.write(Data(try tokenizer.decode(try parseIDs(decode, argument: "--decode")).utf8))
            return
        }
        let source = try text ?? {
            guard let data = FileManager.default.contents(atPath: file!), let s = String(data: data, encoding: .utf8) else {
                throw LineaError.file(path: file!, problem: "cannot be read as UTF-8 text")
            }
            return s
        }()
        print(tokenizer.encode(source).map(String.init).joined(separator: " "))
    }
}

/// `linea model`: checkpoint tools.
struct ModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "model", abstract: "Checkpoint tools.", subcommands: [ModelInitCommand.self])
}

/// `linea model init`: a checkpoint of random weights.
struct ModelInitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init", abstract: "Write a checkpoint of random weights of an architecture at about a parameter count (for benchmarks and tests).")

    @Option(help: "Architecture: \(ModelInit.types.joined(separator: ", ")).") var type: String
    @Option(help: "About this many parameters, e.g. 100M, 1.5B.") var size: String
    @Option(help: "Output folder (created).") var output: String
    @Option(help: "Weight dtype: f32, bf16 or f16.") var dtype: String = "f32"
    @Option(help: "Vocabulary size (50257: GPT-2's byte-level BPE, which llama.cpp converts as is).") var vocab: Int = 50257
    @Option(help: "Seed of the weights.") var seed: UInt64 = 0

    func validate() throws {
        guard ModelInit.types.contains(type) else { throw validationErrorList(argument: "--type", got: type, known: ModelInit.types) }
        guard ModelInit.parseSize(size) != nil else { throw ValidationError("--size: expected a count such as 100M or 1.5B, got '\(size)'") }
        guard ["f32", "bf16", "f16"].contains(dtype) else { throw validationErrorList(argument: "--dtype", got: dtype, known: ["f32", "bf16", "f16"]) }
        guard vocab >= 2 else { throw ValidationError("--vocab: expected >= 2, got \(vocab)") }
    }

    func run() throws {
        let config = try ModelInit.config(type: type, parameters: ModelInit.parseSize(size)!, vocab: vocab)
        try MemoryBudget.check([.init("weights", [ModelInit.parseSize(size)!])])
        let count = try ModelInit.write(config: config, dtype: DType(name: dtype)!, seed: seed, to: output)
        printError(String(format: "model init: %@ with %.1fM parameters (hidden %@, %@ layers) in %@", type, Double(count) / 1e6,
                          "\(config["hidden_size"]!)", "\(config["num_hidden_layers"]!)", output))
    }
}

/// `linea bench --model`: prefill and decode tokens/s of a checkpoint. Per prompt length, one untimed prefill and decode step first
/// (weights paged in, GPU kernels compiled, buffers cached, as llama-bench and the transformers comparisons warm up),
/// then the median of `prefillReps` timed prefills, each into a fresh cache; the decode continues the last.
struct ModelBench {
    let options: ModelOptions
    let promptTokens: [Int], newTokens: Int, batch: Int, prefillReps: Int, profile: Bool

    func run() throws {
        Profile.enabled = profile
        var profiles: [String] = []
        let loaded = try options.load()
        let model = loaded.model
        var rows: [[String]] = []
        for prompt in promptTokens {
            var random = SeededRandom(seed: UInt64(prompt))
            let ids = (0..<(batch * prompt)).map { _ in Int(random.next() % UInt64(model.vocabularySize)) }
            printError("bench: \(model.modelType) prefill B = \(batch) T = \(prompt) (1 warm-up + \(prefillReps) timed) ...")
            let before = Measure.residentBytes().current
            var times: [Double] = [], profiled = 0.0, cache: ModelCache!, logits: DeviceTensor!
            // One greedy decode step: the argmax of the last logits fed back as the next token of every sequence.
            func decodeStep() throws -> DeviceTensor {
                let next = try Ops.argmax(logits.reshaped([batch, model.vocabularySize])).hostIntegers()
                return try model.forward(DeviceTensor(integers: next, shape: [batch, 1], on: model.device), cache: cache, lastOnly: true)
            }
            for rep in 0...prefillReps {
                let cacheStart = Date()  // the profile counts the cache's allocations too
                cache = try model.makeCache(batch: batch, capacity: prompt + max(newTokens, 1))
                let start = Date()
                logits = try model.forward(DeviceTensor(integers: ids, shape: [batch, prompt], on: model.device), cache: cache, lastOnly: true)
                try Backends.backend(for: model.device).synchronize()
                if rep > 0 {
                    let end = Date()
                    times.append(end.timeIntervalSince(start))
                    profiled += end.timeIntervalSince(cacheStart)
                }
                if rep == 0 {
                    // The warm-up also takes one decode step, so that the decode kernels (split-KV attention, the
                    // recurrent steps) are compiled before the timed decode, as the prefill's are before its timing.
                    _ = try decodeStep()
                    try Backends.backend(for: model.device).synchronize()
                    _ = Profile.take()  // the warm-up's compiles and first touches
                }
            }
            if profile {
                profiles.append("prefill B = \(batch) T = \(prompt), \(prefillReps) timed prefills:\n"
                                + Profile.format(Profile.take(), wall: profiled))
            }
            let prefill = times.sorted()[times.count / 2]
            let decodeStart = Date()
            for _ in 0..<newTokens { logits = try decodeStep() }
            try Backends.backend(for: model.device).synchronize()
            let decode = Date().timeIntervalSince(decodeStart)
            if profile { profiles.append("decode B = \(batch), \(newTokens) tokens after T = \(prompt):\n" + Profile.format(Profile.take(), wall: decode)) }
            rows.append([model.modelType, "\(batch)", "\(prompt)", String(format: "%.1f", Double(batch * prompt) / prefill), "\(newTokens)",
                         String(format: "%.1f", Double(batch * newTokens) / max(decode, 1e-9)),
                         formatBytes(max(0, Measure.residentBytes().peak - before))])
        }
        printTable(header: ["model", "B", "prompt", "prefill tokens/s", "new", "decode tokens/s", "peak extra"], rows: rows)
        print("\(options.device), \(Parallel.threadCount) threads; decode greedy after the prompt; tokens/s count every sequence of the batch")
        for text in profiles { print("\nprofile, " + text) }
    }
}
