import Foundation
import Linea
import LineaLM
import Testing

/// `linea-lm-<pid>` in the temporary directory: the tests' modified checkpoints go inside, and it is removed when the
/// test process exits.
let scratchFolder: URL = {
    atexit { try? FileManager.default.removeItem(at: FileManager.default.temporaryDirectory.appendingPathComponent("linea-lm-\(getpid())")) }
    return FileManager.default.temporaryDirectory.appendingPathComponent("linea-lm-\(getpid())")
}()

/// A fresh directory for one test, inside `scratchFolder`.
func temporaryDirectory() throws -> URL {
    let dir = scratchFolder.appendingPathComponent(UUID().uuidString)
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// The model fixtures (scripts/model_fixtures.py: tiny random checkpoints saved by transformers, with their logits
/// and greedy continuations) against the runtime on the CPU.
@Suite struct ModelParityTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/models")
    /// The fixtures whose architecture the runtime implements.
    static let supported = ["llama", "llama_tied", "qwen3_next", "qwen3_next_dense", "qwen3_5", "qwen3_5_moe", "mamba2", "mamba", "falcon_mamba", "kimi_linear",
                            "fla_gated_deltanet", "fla_gla", "fla_delta_net", "fla_retnet", "fla_transformer", "fla_linear_attn",
                            "fla_linear_attn_norm", "fla_mamba2"]

    static func load(_ name: String) throws -> (LoadedModel, SafeTensorsFile) {
        let dir = fixtures.appendingPathComponent(name)
        return (try LoadedModel.load(directory: dir.path), try SafeTensorsFile(path: dir.appendingPathComponent("expected.safetensors").path))
    }

    /// Logits of the full forward within rel-RMS 1e-3 of transformers' (f32 weights), and the same 16 greedy tokens,
    /// for a 48-token and a 1-token prompt.
    @Test(arguments: supported)
    func logitsAndGreedyTokensMatchTransformers(_ name: String) throws {
        let (loaded, expected) = try Self.load(name)
        for n in [48, 1] {
            let ids = try expected.deviceTensor("input_ids_\(n)")
            let logits = try loaded.model.forward(ids, cache: loaded.model.makeCache(batch: 1, capacity: n), lastOnly: false).host()
            let error = ErrorStats(logits, try expected.tensor("logits_\(n)"))
            #expect(error.relativeRMS <= 1e-3, "\(name) T=\(n): logits \(error)")
            let greedy = try Generator(model: loaded.model).generate(prompt: ids.hostIntegers(), maxTokens: 16, stopAtEOS: false).ids
            #expect(greedy == (try expected.deviceTensor("greedy_\(n)").hostIntegers()), "\(name) T=\(n)")
        }
    }

    /// A prompt fed in pieces (a chunked piece, a single token, a recurrent piece) gives the logits of one full
    /// forward (rel-RMS <= 1e-4): the carried states, conv states and key/value caches continue exactly.
    @Test(arguments: supported)
    func piecesContinueLikeOneForward(_ name: String) throws {
        let (loaded, _) = try Self.load(name)
        let model = loaded.model
        var random = SeededRandom(seed: 5)
        let tokens = (0..<150).map { _ in Int(random.next() % UInt64(model.vocabularySize)) }
        func ids(_ range: Range<Int>) throws -> DeviceTensor { try DeviceTensor(integers: Array(tokens[range]), shape: [1, range.count]) }
        let full = try model.forward(ids(0..<150), cache: model.makeCache(batch: 1, capacity: 150), lastOnly: false).host()
        let cache = try model.makeCache(batch: 1, capacity: 150)
        var pieces: [Float] = []
        for range in [0..<70, 70..<71, 71..<100, 100..<101, 101..<150] {
            pieces += try model.forward(ids(range), cache: cache, lastOnly: false).host().scalars
        }
        let error = ErrorStats(pieces, full.scalars)
        #expect(error.relativeRMS <= 1e-4, "\(name): \(error)")
        #expect(cache.length == 150)
    }

    /// Two sequences in one batch give each one's own logits, in a prefill and in the decode step after it.
    @Test(arguments: supported)
    func batchedSequencesMatchSingleOnes(_ name: String) throws {
        let model = try Self.load(name).0.model
        let rows = [(0..<40).map { ($0 * 7 + 3) % model.vocabularySize }, (0..<40).map { ($0 * 11 + 5) % model.vocabularySize }]
        let batched = try model.makeCache(batch: 2, capacity: 41)
        var got = try model.forward(DeviceTensor(integers: rows[0] + rows[1], shape: [2, 40]), cache: batched, lastOnly: false).host().scalars
        got += try model.forward(DeviceTensor(integers: [1, 2], shape: [2, 1]), cache: batched, lastOnly: false).host().scalars
        var want: [Float] = [], steps: [Float] = []
        for (i, row) in rows.enumerated() {
            let cache = try model.makeCache(batch: 1, capacity: 41)
            want += try model.forward(DeviceTensor(integers: row, shape: [1, 40]), cache: cache, lastOnly: false).host().scalars
            steps += try model.forward(DeviceTensor(integers: [i + 1], shape: [1, 1]), cache: cache, lastOnly: false).host().scalars
        }
        #expect(ErrorStats(got, want + steps).relativeRMS <= 1e-5, "\(name)")
    }

    /// Qwen3.5 as its real checkpoints ship: the text config nested in a conditional-generation config, the text
    /// weights under `model.language_model.`, vision-tower weights beside them (skipped with a note).
    @Test func qwen35MultimodalLayoutLoadsItsTextModel() throws {
        let source = Self.fixtures.appendingPathComponent("qwen3_5")
        let dir = try temporaryDirectory()
        var tensors: [String: Tensor] = [:]
        for (name, tensor) in try SafeTensors.read(path: source.appendingPathComponent("model.safetensors").path) {
            tensors[name.hasPrefix("model.") ? "model.language_model." + name.dropFirst(6) : name] = tensor
        }
        tensors["model.visual.patch_embed.proj.weight"] = try Tensor(zeros: [4, 3])
        try SafeTensors.write(tensors, to: dir.appendingPathComponent("model.safetensors").path)
        let text = try JSONSerialization.jsonObject(with: Data(contentsOf: source.appendingPathComponent("config.json")))
        let nested: [String: Any] = ["model_type": "qwen3_5", "architectures": ["Qwen3_5ForConditionalGeneration"], "text_config": text,
                                     "vision_config": ["depth": 1], "image_token_id": 5, "tie_word_embeddings": true]
        try JSONSerialization.data(withJSONObject: nested).write(to: dir.appendingPathComponent("config.json"))
        let loaded = try LoadedModel.load(directory: dir.path)
        #expect(loaded.warnings.contains { $0.contains("vision-tower") }, "\(loaded.warnings)")
        let expected = try SafeTensorsFile(path: source.appendingPathComponent("expected.safetensors").path)
        let logits = try loaded.model.forward(expected.deviceTensor("input_ids_48"), cache: loaded.model.makeCache(batch: 1, capacity: 48),
                                              lastOnly: false).host()
        #expect(ErrorStats(logits, try expected.tensor("logits_48")).relativeRMS <= 1e-3)
    }

    /// A decode step whose recurrent state went non-finite is an error naming the output, as a prefill's is.
    @Test func nonFiniteStateInADecodeStepIsAnError() throws {
        let model = try Self.load("mamba2").0.model
        let cache = try model.makeCache(batch: 1, capacity: 4)
        let state = cache.layers[0]["state"]!
        try state.copy(from: Tensor(shape: state.shape, scalars: [Float](repeating: .nan, count: state.count)))
        #expect(throws: LineaError.self) { try model.forward(DeviceTensor(integers: [3], shape: [1, 1]), cache: cache, lastOnly: true) }
    }

    /// Qwen3.5-MoE's experts stacked as transformers 5 holds them (gate_up_proj [E, 2I, H], down_proj [E, H, I]) load
    /// to the logits of the expert-by-expert checkpoint.
    @Test func stackedExpertsLoadLikeSeparateOnes() throws {
        let source = Self.fixtures.appendingPathComponent("qwen3_5_moe")
        let dir = try temporaryDirectory()
        var tensors = try SafeTensors.read(path: source.appendingPathComponent("model.safetensors").path)
        let experts = Set(tensors.keys.compactMap { name in name.range(of: "mlp.experts.").map { String(name[..<$0.upperBound]) } })
        #expect(!experts.isEmpty)
        for prefix in experts {
            var gateUp: [Float] = [], down: [Float] = []
            var e = 0, width = 0, hidden = 0
            while let gate = tensors.removeValue(forKey: prefix + "\(e).gate_proj.weight") {
                (width, hidden) = (gate.shape[0], gate.shape[1])  // each expert's gate_proj is [I, H]
                gateUp += gate.scalars + tensors.removeValue(forKey: prefix + "\(e).up_proj.weight")!.scalars
                down += tensors.removeValue(forKey: prefix + "\(e).down_proj.weight")!.scalars
                e += 1
            }
            tensors[prefix + "gate_up_proj"] = try Tensor(shape: [e, 2 * width, hidden], scalars: gateUp)
            tensors[prefix + "down_proj"] = try Tensor(shape: [e, hidden, width], scalars: down)
        }
        try SafeTensors.write(tensors, to: dir.appendingPathComponent("model.safetensors").path)
        try FileManager.default.copyItem(at: source.appendingPathComponent("config.json"), to: dir.appendingPathComponent("config.json"))
        let loaded = try LoadedModel.load(directory: dir.path)
        let expected = try SafeTensorsFile(path: source.appendingPathComponent("expected.safetensors").path)
        let logits = try loaded.model.forward(expected.deviceTensor("input_ids_48"), cache: loaded.model.makeCache(batch: 1, capacity: 48),
                                              lastOnly: false).host()
        #expect(ErrorStats(logits, try expected.tensor("logits_48")).relativeRMS <= 1e-5)
    }
}

/// Bad checkpoints, configs and prompts end in errors naming the tensor, field or argument.
@Suite struct ModelLoaderErrorTests {
    /// A copy of the llama fixture in a fresh folder, with `change` applied to its tensors and config.
    static func mutatedLlama(_ fixture: String = "llama", _ change: (inout [String: Tensor], inout [String: Any]) throws -> Void) throws -> String {
        let source = ModelParityTests.fixtures.appendingPathComponent(fixture)
        let dir = try temporaryDirectory()
        var tensors = try SafeTensors.read(path: source.appendingPathComponent("model.safetensors").path)
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: source.appendingPathComponent("config.json"))) as! [String: Any]
        try change(&tensors, &config)
        try SafeTensors.write(tensors, to: dir.appendingPathComponent("model.safetensors").path)
        try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("config.json"))
        return dir.path
    }

    static func message(_ body: () throws -> Void) -> String {
        do { try body() } catch { return "\(error)" }
        return "no error"
    }

    @Test func missingExtraAndMisshapenWeightsAreNamed() throws {
        let missing = try Self.mutatedLlama { t, _ in t["model.layers.1.mlp.up_proj.weight"] = nil }
        #expect(Self.message { _ = try LoadedModel.load(directory: missing) }.contains("weight model.layers.1.mlp.up_proj.weight"))
        let extra = try Self.mutatedLlama { t, _ in t["model.layers.0.extra.weight"] = try Tensor(zeros: [2]) }
        #expect(Self.message { _ = try LoadedModel.load(directory: extra) }.contains("left over: model.layers.0.extra.weight"))
        var hidden = 0
        let misshapen = try Self.mutatedLlama { t, c in
            hidden = c["hidden_size"] as! Int
            t["model.norm.weight"] = try Tensor(zeros: [hidden - 1])
        }
        let text = Self.message { _ = try LoadedModel.load(directory: misshapen) }
        #expect(text.contains("model.norm.weight") && text.contains("[\(hidden)]") && text.contains("[\(hidden - 1)]"), "\(text)")
    }

    @Test func configValuesItCannotHonorAreErrorsAndUnknownFieldsWarnings() throws {
        let gelu = try Self.mutatedLlama { _, c in c["hidden_act"] = "gelu" }
        #expect(Self.message { _ = try LoadedModel.load(directory: gelu) }.contains("hidden_act"))
        let scaled = try Self.mutatedLlama { _, c in c["rope_scaling"] = ["rope_type": "yarn", "factor": 4] }
        #expect(Self.message { _ = try LoadedModel.load(directory: scaled) }.contains("rope_scaling"))
        let unknownType = try Self.mutatedLlama { _, c in c["model_type"] = "gpt_neo" }
        #expect(Self.message { _ = try LoadedModel.load(directory: unknownType) }.contains("model_type"))
        let extraField = try Self.mutatedLlama { _, c in c["sliding_window_pattern"] = 6 }
        #expect(try LoadedModel.load(directory: extraField).warnings.contains { $0.contains("sliding_window_pattern") })
        let badType = try Self.mutatedLlama { _, c in c["num_hidden_layers"] = "two" }
        #expect(Self.message { _ = try LoadedModel.load(directory: badType) }.contains("num_hidden_layers"))
    }

    /// fla's configs: every fixture's fields are all read or known to be irrelevant; what the runtime cannot honor is
    /// an error naming the field.
    @Test func flaConfigsAreReadStrictly() throws {
        for name in ModelParityTests.supported where name.hasPrefix("fla_") {
            #expect(try ModelParityTests.load(name).0.warnings.isEmpty, "\(name)")
        }
        let cases: [(String, String, Any)] = [("fla_gla", "attnres_block_size", 4), ("fla_delta_net", "qk_norm", "sum"),
                                              ("fla_mamba2", "norm_before_gate", true), ("fla_gla", "hidden_act", "powlu"),
                                              ("fla_linear_attn", "feature_map", "hedgehog")]
        for (fixture, field, value) in cases {
            let dir = try Self.mutatedLlama(fixture) { _, c in c[field] = value }
            #expect(Self.message { _ = try LoadedModel.load(directory: dir) }.contains(field), "\(fixture) \(field)")
        }
        let outside = try Self.mutatedLlama("fla_gated_deltanet") { _, c in c["attn"] = ["layers": [7], "num_heads": 4] }
        #expect(Self.message { _ = try LoadedModel.load(directory: outside) }.contains("layers"))
        let extra = try Self.mutatedLlama("fla_retnet") { _, c in c["some_new_field"] = 1 }
        #expect(try LoadedModel.load(directory: extra).warnings.contains { $0.contains("some_new_field") })
    }

    @Test func truncatedCheckpointIsAnError() throws {
        let dir = try Self.mutatedLlama { _, _ in }
        let path = (dir as NSString).appendingPathComponent("model.safetensors")
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: path))
        #expect(Self.message { _ = try LoadedModel.load(directory: dir) } != "no error")
    }

    @Test func badPromptsAreNamed() throws {
        let (loaded, _) = try ModelParityTests.load("llama")
        let generator = Generator(model: loaded.model)
        #expect(Self.message { _ = try generator.generate(prompt: [], maxTokens: 4) }.contains("prompt"))
        #expect(Self.message { _ = try generator.generate(prompt: [1, 999_999], maxTokens: 4) }.contains("999999"))
        #expect(Self.message { _ = try generator.generate(prompt: [1, 2], maxTokens: 1000) }.contains("max_position_embeddings"))
        let cache = try loaded.model.makeCache(batch: 1, capacity: 2)
        #expect(Self.message { _ = try loaded.model.forward(DeviceTensor(integers: [1, 2, 3], shape: [1, 3]), cache: cache, lastOnly: true) }
            .contains("capacity"))
    }

    @Test func infinityTokensInConfigsRead() throws {
        let c = try ConfigFields(json: Data(#"{"a": Infinity, "b": {"__float__": "-Infinity"}, "s": "Infinity in text", "n": NaN}"#.utf8), source: "x")
        #expect(try c.double("a") == .infinity && c.double("b") == -.infinity && c.double("n").isNaN)
        #expect(try c.string("s") == "Infinity in text")
    }
}
