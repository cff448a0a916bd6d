import Foundation
import Linea

/// How the next token is chosen: greedy, or sampled with temperature, top-k, top-p and a repetition penalty from a seed.
public struct SamplingOptions: Sendable, Equatable {
    /// Softmax temperature; 0 is greedy.
    public var temperature: Float = 0
    /// Keep the k most likely tokens (0: all).
    public var topK = 0
    /// Keep the smallest set of tokens whose probability reaches p (1: all).
    public var topP: Float = 1
    /// Divide positive logits of tokens already seen by this (multiply negative ones), as transformers does; 1: off.
    public var repetitionPenalty: Float = 1
    /// Seed of the draws.
    public var seed: UInt64 = 0

    /// Greedy decoding. O(1).
    public init() {}
}

/// Prefill then token-by-token decode of one model: streams each new id to a callback, stops at an end-of-sequence
/// id or after `maxTokens`.
public struct Generator {
    /// The model.
    public let model: any CausalLM
    /// Ids that end generation (generation_config.json's eos).
    public var eosTokenIDs: Set<Int>

    /// A generator for `model` stopping at `eosTokenIDs`. O(1).
    public init(model: any CausalLM, eosTokenIDs: [Int] = []) {
        self.model = model
        self.eosTokenIDs = Set(eosTokenIDs)
    }

    /// Timings of one generation.
    public struct Stats: Sendable {
        /// Prompt tokens and the seconds their prefill took.
        public var promptTokens = 0, prefillSeconds = 0.0
        /// New tokens and the seconds their decode took (the first one comes from the prefill).
        public var newTokens = 0, decodeSeconds = 0.0
    }

    /// Generates up to `maxTokens` ids after `prompt` (ids in [0, vocab)), calling `onToken` with each as it comes;
    /// the prompt is prefilled in pieces of `prefillChunk` tokens (at most the KV cache's window). Attention layers
    /// keep what `kvCache` says: a bounded cache (sink-window, streaming-vlm) places tokens at its slots, so a model's
    /// `max_position_embeddings` then bounds the cache, not the stream. Returns the new ids (none kept when `keepIDs`
    /// is false: a streaming caller's memory then stays flat however long it runs) and the timings.
    /// O(prompt + maxTokens) forwards' worth of work.
    public func generate(prompt: [Int], maxTokens: Int, sampling: SamplingOptions = SamplingOptions(), prefillChunk: Int = 2048,
                         stopAtEOS: Bool = true, keepIDs: Bool = true, kvCache: KVCacheConfig = .full,
                         onToken: (Int) throws -> Void = { _ in }) throws -> (ids: [Int], stats: Stats) {
        guard !prompt.isEmpty else { throw LineaError.invalidArgument(argument: "prompt", expected: "at least one token", actual: "none") }
        guard maxTokens >= 0 else { throw LineaError.invalidArgument(argument: "maxTokens", expected: ">= 0", actual: "\(maxTokens)") }
        guard prefillChunk >= 1 else { throw LineaError.invalidArgument(argument: "prefillChunk", expected: ">= 1", actual: "\(prefillChunk)") }
        if let bad = prompt.first(where: { !(0..<model.vocabularySize).contains($0) }) {
            throw LineaError.invalidArgument(argument: "prompt", expected: "token ids in 0..<\(model.vocabularySize) (the vocabulary)", actual: "\(bad)")
        }
        let capacity = prompt.count + maxTokens
        if let limit = model.maxContext, capacity > limit {
            if let span = kvCache.positionSpan {
                guard span <= limit else {
                    throw LineaError.invalidArgument(argument: "kv cache", expected: "positions within \(limit) (max_position_embeddings)",
                                                     actual: "\(kvCache), spanning \(span)")
                }
            } else {
                throw LineaError.invalidArgument(argument: "prompt", expected: "prompt + new tokens <= \(limit) (max_position_embeddings)",
                                                 actual: "\(prompt.count) + \(maxTokens)")
            }
        }
        var stats = Stats()
        stats.promptTokens = prompt.count
        guard maxTokens > 0 else { return ([], stats) }
        let cache = try model.makeCache(batch: 1, capacity: capacity, kvCache: kvCache)
        let piece = min(prefillChunk, kvCache.longestPiece ?? prefillChunk)
        var random = SeededRandom(seed: sampling.seed)
        // The ids the repetition penalty applies to: a set, bounded by the vocabulary.
        var seen = sampling.repetitionPenalty == 1 ? [] : Set(prompt)
        var logits: DeviceTensor?
        let start = Date()
        var offset = 0
        while offset < prompt.count {
            let tokens = Array(prompt[offset..<min(prompt.count, offset + piece)])
            logits = try model.forward(ids(tokens), cache: cache, lastOnly: true)
            offset += tokens.count
        }
        stats.prefillSeconds = Date().timeIntervalSince(start)
        var out: [Int] = []
        let decodeStart = Date()
        while true {
            let next = try choose(logits!, seen: seen, sampling: sampling, random: &random)
            if keepIDs { out.append(next) }
            if sampling.repetitionPenalty != 1 { seen.insert(next) }
            stats.newTokens += 1
            try onToken(next)
            if stats.newTokens == maxTokens || (stopAtEOS && eosTokenIDs.contains(next)) { break }
            logits = try model.forward(ids([next]), cache: cache, lastOnly: true)
        }
        stats.decodeSeconds = Date().timeIntervalSince(decodeStart)
        return (out, stats)
    }

    /// `tokens` as an i64 `[1, T]` tensor on the model's device. O(T).
    func ids(_ tokens: [Int]) throws -> DeviceTensor {
        try DeviceTensor(integers: tokens, shape: [1, tokens.count], dtype: .int64, on: model.device)
    }

    /// The next id from `logits [1, 1, vocab]`: argmax when greedy, else a seeded draw after the penalty. O(vocab).
    func choose(_ logits: DeviceTensor, seen: Set<Int>, sampling: SamplingOptions, random: inout SeededRandom) throws -> Int {
        var row = try logits.reshaped([1, logits.shape[2]])
        if sampling.repetitionPenalty != 1 {
            var host = try row.host()
            for id in seen {
                let x = host.scalars[id]
                host.scalars[id] = x > 0 ? x / sampling.repetitionPenalty : x * sampling.repetitionPenalty
            }
            row = try DeviceTensor(host, on: model.device)
        }
        let chosen = sampling.temperature == 0 ? try Ops.argmax(row)
            : try Ops.sample(row, temperature: sampling.temperature, topK: sampling.topK, topP: sampling.topP, random: &random)
        return try chosen.hostIntegers()[0]
    }
}
