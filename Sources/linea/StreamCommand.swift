import ArgumentParser
import Foundation
import Linea

/// `linea stream`: a synthetic token stream through a KV cache and one layer of attention.
struct StreamCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stream",
        abstract: "Push a synthetic token stream through a KV cache and one attention layer, printing tokens/s and resident memory as it goes.",
        discussion: """
            Each token brings random q, k, v (uniform in [-1, 1)), rotary-embedded (theta 10000) at the positions the cache gives \
            them, and is attended over what the cache keeps (--chunk 1: one decode step per token). Progress goes to stderr; the \
            summary to stdout. For streaming-vlm the stream repeats 64 vision tokens (a frame) then 16 text tokens. The full, \
            think and topk caches keep every token: their capacity is --tokens.
            """)

    @Option(help: "KV cache: \(KVCacheConfig.names.joined(separator: ", ")).") var cache: String
    @Option(help: "Tokens to push.") var tokens: Int
    @OptionGroup var sizes: KVCacheOptions
    @Option(help: "Query heads.") var heads: Int = 8
    @Option(help: "Key/value heads (a divisor of --heads; default: --heads).") var kvHeads: Int?
    @Option(help: "Head dim of queries, keys and values (even: rotary pairs).") var dim: Int = 64
    @Option(help: "Tokens per call (1: a decode step per token).") var chunk: Int = 1
    @Option(help: "Device: cpu, or cuda (GPU 0).") var device: String = "cpu"
    @Option(help: "Seconds between progress lines.") var progressSeconds: Double = 5
    @Option(help: "Seed of the synthetic stream.") var seed: UInt64 = 0

    func validate() throws {
        _ = try sizes.config(name: cache, flag: "--cache")
        for (flag, value, low) in [("--tokens", tokens, 1), ("--heads", heads, 1), ("--kv-heads", kvHeads ?? heads, 1), ("--dim", dim, 2), ("--chunk", chunk, 1)]
        where value < low {
            throw ValidationError("\(flag): expected >= \(low), got \(value)")
        }
        guard dim % 2 == 0 else { throw ValidationError("--dim: expected an even number (rotary turns pairs of dims), got \(dim)") }
        guard heads % (kvHeads ?? heads) == 0 else { throw ValidationError("--kv-heads: expected a divisor of --heads (\(heads)), got \(kvHeads!)") }
        guard ["cpu", "cuda"].contains(device) else { throw validationErrorList(argument: "--device", got: device, known: ["cpu", "cuda"]) }
        guard progressSeconds > 0 else { throw ValidationError("--progress-seconds: expected > 0, got \(progressSeconds)") }
    }

    func run() throws {
        let config = try sizes.config(name: cache, flag: "--cache")
        let target = try openDevice(device)
        let kv = kvHeads ?? heads
        let layer = try config.make(batch: 1, capacity: tokens, kvHeads: kv, headDim: dim, valueDim: dim, device: target)
        var random = SeededRandom(seed: seed)
        func uniform(_ shape: [Int]) throws -> DeviceTensor {
            // Uniform draws from the top 24 bits: cheap next to the attention they feed (normal draws cost more than it).
            let scalars = (0..<shape.reduce(1, *)).map { _ in Float(random.next() >> 40) * 0x1p-23 - 1 }
            return try DeviceTensor(Tensor(shape: shape, scalars: scalars), on: target)
        }
        let rotation: KVRotation = { x, positions in
            try Ops.rotary(x, positions: DeviceTensor(integers: positions, shape: [1, positions.count], dtype: .int32, on: target))
        }
        printError("stream: \(config), \(tokens) tokens, heads \(heads) (kv \(kv)), dim \(dim), chunk \(chunk), \(device)")
        let start = Date()
        var (done, lastReport) = (0, start)
        while done < tokens {
            let T = min(chunk, tokens - done)
            let kinds = (done..<(done + T)).map { $0 % 80 < 64 ? KVTokenKind.vision : .text }
            _ = try layer.attend(q: uniform([1, T, heads, dim]), k: uniform([1, T, kv, dim]), v: uniform([1, T, kv, dim]), kinds: kinds,
                                 rotation: rotation, options: AttentionOptions())
            done += T
            if Date().timeIntervalSince(lastReport) >= progressSeconds {
                try Backends.backend(for: target).synchronize()
                lastReport = Date()
                let memory = Measure.residentBytes()
                printError(String(format: "stream: %d / %d tokens, %.0f tokens/s, kept %d (bound %d), resident %@ (peak %@)", done, tokens,
                                  Double(done) / lastReport.timeIntervalSince(start), layer.tokensKept, layer.boundTokens,
                                  formatBytes(memory.current), formatBytes(memory.peak)))
            }
        }
        try Backends.backend(for: target).synchronize()
        let seconds = Date().timeIntervalSince(start)
        printTable(header: ["cache", "tokens", "seconds", "tokens/s", "kept", "bound", "cache bytes", "peak resident"], rows: [[
            config.description, "\(tokens)", String(format: "%.1f", seconds), String(format: "%.0f", Double(tokens) / max(seconds, 1e-9)),
            "\(layer.tokensKept)", "\(layer.boundTokens)", formatBytes(layer.boundBytes), formatBytes(Measure.residentBytes().peak),
        ]])
        print("\(device), \(Parallel.threadCount) threads; heads \(heads) (kv \(kv)), dim \(dim), chunk \(chunk)")
    }
}
