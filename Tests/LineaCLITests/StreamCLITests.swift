import Foundation
import Linea
import Testing

/// `linea stream` and `linea generate --kv-cache`.
@Suite struct StreamCLITests {
    /// The peak resident memory in MiB from the last column of `linea stream`'s summary row.
    static func peakMiB(_ out: String) -> Double {
        let row = out.split(separator: "\n").dropFirst(2).first.map(String.init) ?? ""
        let cells = row.split(separator: " ")
        guard cells.count >= 2, let value = Double(cells[cells.count - 2]) else { return .nan }
        switch cells.last! {
        case "GiB": return value * 1024
        case "KiB": return value / 1024
        default: return value
        }
    }

    /// A sink-window cache keeps the stream's memory flat: 50,000 tokens peak within 5% of 5,000 (the must-show
    /// figure at 100,000 vs 1,000,000 tokens with 8 heads of 64 is in the report; this is its fast form).
    @Test func sinkWindowStreamKeepsMemoryFlat() throws {
        func peak(_ tokens: Int) throws -> Double {
            let r = try runLinea(["stream", "--cache", "sink-window", "--sinks", "4", "--window", "256", "--heads", "2", "--dim", "16",
                                  "--tokens", "\(tokens)"])
            #expect(r.code == 0, "\(r.err)")
            #expect(r.out.contains("sink-window (sinks 4, window 256)") && r.out.contains(" 260 "), "\(r.out)")
            return Self.peakMiB(r.out)
        }
        let (short, long) = (try peak(5_000), try peak(50_000))
        #expect(long <= short * 1.05, "5,000 tokens: \(short) MiB, 50,000 tokens: \(long) MiB")
    }

    /// Every cache streams, in decode steps and in pieces, printing its summary and progress lines.
    @Test func everyCacheStreams() throws {
        for cache in KVCacheConfig.names {
            for chunk in ["1", "7"] {
                let r = try runLinea(["stream", "--cache", cache, "--tokens", "300", "--heads", "4", "--kv-heads", "2", "--dim", "8", "--chunk", chunk,
                                      "--progress-seconds", "0.001"])
                #expect(r.code == 0 && r.out.contains("tokens/s") && r.out.contains(cache), "\(cache): \(r.out) \(r.err)")
                #expect(r.err.contains("stream: ") && r.err.contains("resident"), "\(cache): \(r.err)")
            }
        }
    }

    /// Bad input is a usage error naming the flag: a window smaller than the sinks, negative sizes, an unknown cache,
    /// a size the cache does not use, an odd head dim; the same sizes through `generate --kv-cache`.
    @Test func badInputIsNamed() throws {
        let model = ModelCLITests.models.appendingPathComponent("llama").path
        for (args, text) in [
            (["stream", "--cache", "sink-window", "--sinks", "8", "--window", "4", "--tokens", "10"], "--window: expected >= --sinks (8), got 4"),
            (["stream", "--cache", "sink-window", "--sinks=-1", "--tokens", "10"], "--sinks: expected >= 0, got -1"),
            (["stream", "--cache", "streaming-vlm", "--vision-window", "0", "--tokens", "10"], "--vision-window: expected >= 1"),
            (["stream", "--cache", "lru", "--tokens", "10"], "--cache: expected one of full, sink-window"),
            (["stream", "--cache", "sink-window", "--pages", "3", "--tokens", "10"], "--pages: only with --cache topk"),
            (["stream", "--cache", "think", "--prune-ratio", "1", "--tokens", "10"], "--prune-ratio: expected a number in [0, 1)"),
            (["stream", "--cache", "full", "--tokens", "0"], "--tokens: expected >= 1"),
            (["stream", "--cache", "full", "--tokens", "10", "--dim", "7"], "--dim: expected an even number"),
            (["generate", "--model", model, "--input-ids", "1", "--kv-cache", "sink-window", "--sinks", "8", "--window", "2"], "--window: expected >= --sinks (8), got 2"),
            (["generate", "--model", model, "--input-ids", "1", "--kv-cache", "nope"], "--kv-cache: expected one of full"),
        ] {
            let r = try runLinea(args)
            #expect(r.code == 2 && r.err.contains(text), "\(args): \(r.code) \(r.err)")
        }
    }

    /// `generate --kv-cache sink-window` streams past the model's 256 positions; the default (full) cache refuses.
    @Test func generateTakesAKVCache() throws {
        let model = ModelCLITests.models.appendingPathComponent("llama").path
        let r = try runLinea(["generate", "--model", model, "--input-ids", "1,2,3", "--max-tokens", "300", "--ignore-eos", "--kv-cache", "sink-window",
                              "--sinks", "4", "--window", "64"])
        #expect(r.code == 0 && r.out.split(separator: " ").count == 300, "\(r.err)")
        #expect(r.err.contains("kv cache sink-window (sinks 4, window 64)"), "\(r.err)")
        let full = try runLinea(["generate", "--model", model, "--input-ids", "1,2,3", "--max-tokens", "300", "--ignore-eos"])
        #expect(full.code == 1 && full.err.contains("max_position_embeddings"), "\(full.err)")
    }
}
