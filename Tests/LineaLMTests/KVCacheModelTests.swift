import Foundation
import Linea
import LineaLM
import Testing

/// The model runtime's attention layers through each KV cache (Llama, Qwen3-Next / Qwen3.5, fla's attention layers).
@Suite struct KVCacheModelTests {
    /// Fixtures with softmax-attention layers and no sliding window (a windowed layer takes the full cache only).
    static let attentionModels = ["llama", "qwen3_next", "qwen3_5", "fla_linear_attn"]

    /// The full cache is the default: the same greedy tokens as transformers (the fixtures'), and a sink-window or
    /// streaming-vlm cache larger than the sequence gives the same tokens and logits (rel-RMS <= 1e-5).
    @Test(arguments: attentionModels)
    func largeBoundedCachesEqualFull(_ name: String) throws {
        let (loaded, expected) = try ModelParityTests.load(name)
        let prompt = try expected.deviceTensor("input_ids_48").hostIntegers()
        let generator = Generator(model: loaded.model)
        let full = try generator.generate(prompt: prompt, maxTokens: 16, stopAtEOS: false, kvCache: .full).ids
        #expect(full == (try expected.deviceTensor("greedy_48").hostIntegers()), "\(name)")
        for config in [KVCacheConfig.sinkWindow(sinks: 4, window: 64), .streamingVLM(sinks: 4, textWindow: 64, visionWindow: 1)] {
            #expect(try generator.generate(prompt: prompt, maxTokens: 16, stopAtEOS: false, kvCache: config).ids == full, "\(name) \(config)")
            let logits = try loaded.model.forward(DeviceTensor(integers: prompt, shape: [1, 48]), cache: loaded.model.makeCache(batch: 1, capacity: 48, kvCache: config),
                                                  lastOnly: false).host()
            let error = ErrorStats(logits, try expected.tensor("logits_48"))
            #expect(error.relativeRMS <= 1e-3, "\(name) \(config): \(error)")
        }
    }

    /// A small sink-window cache in a model: 150 tokens in pieces and steps leave every attention layer holding
    /// its bound, its last step having read exactly the sinks and the window; every cache runs through generation.
    @Test(arguments: attentionModels)
    func boundedCachesRunInModels(_ name: String) throws {
        let model = try ModelParityTests.load(name).0.model
        let cache = try model.makeCache(batch: 1, capacity: 150, kvCache: .sinkWindow(sinks: 2, window: 8))
        var random = SeededRandom(seed: 9)
        let tokens = (0..<150).map { _ in Int(random.next() % UInt64(model.vocabularySize)) }
        var offset = 0
        for length in [8, 8, 1, 5, 1, 1] + Array(repeating: 1, count: 126) {
            _ = try model.forward(DeviceTensor(integers: Array(tokens[offset..<(offset + length)]), shape: [1, length]), cache: cache, lastOnly: true)
            offset += length
        }
        let layers = cache.kv.compactMap { $0 }
        #expect(!layers.isEmpty)
        for kv in layers {
            #expect(kv.tokensSeen == 150 && kv.tokensKept == 10 && kv.boundTokens == 10)
            #expect(kv.attendedTokens(batch: 0, head: 0) == [0, 1] + Array(142..<150))
        }
        for config in KVCacheConfig.names {
            let kv = try KVCacheConfig(name: config, window: config == "topk" ? 8 : nil, pages: config == "topk" ? 2 : nil, pageSize: config == "topk" ? 4 : nil)
            let ids = try Generator(model: model).generate(prompt: Array(tokens.prefix(40)), maxTokens: 24, stopAtEOS: false, kvCache: kv).ids
            #expect(ids.count == 24 && ids.allSatisfy { (0..<model.vocabularySize).contains($0) }, "\(name) \(config)")
        }
    }

    /// A bounded cache places tokens at its slots: generation past `max_position_embeddings` (256 in the fixture)
    /// runs with it, and a cache spanning more positions than the model has is an error naming it.
    @Test func boundedCachesStreamPastTheContext() throws {
        let model = try ModelParityTests.load("llama").0.model
        let generator = Generator(model: model)
        let ids = try generator.generate(prompt: [1, 2, 3], maxTokens: 300, stopAtEOS: false, kvCache: .sinkWindow(sinks: 4, window: 60)).ids
        #expect(ids.count == 300)
        #expect(throws: LineaError.self) { try generator.generate(prompt: [1, 2, 3], maxTokens: 300, stopAtEOS: false) }
        do {
            _ = try generator.generate(prompt: [1, 2, 3], maxTokens: 300, stopAtEOS: false, kvCache: .sinkWindow(sinks: 4, window: 300))
            Issue.record("a 304-position cache ran in a 256-position model")
        } catch {
            #expect("\(error)".contains("kv cache") && "\(error)".contains("256"), "\(error)")
        }
        // A sliding-window layer (fla's attn with window_size) takes the full cache only, and says so.
        let windowed = try ModelParityTests.load("fla_transformer").0.model
        #expect(throws: LineaError.self) {
            try Generator(model: windowed).generate(prompt: [1, 2, 3], maxTokens: 2, kvCache: .sinkWindow(sinks: 1, window: 8))
        }
    }
}
