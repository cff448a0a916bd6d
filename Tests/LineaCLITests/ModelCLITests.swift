import Foundation
import Linea
import Testing

/// `linea generate`, `linea logits` and `linea tokenize` on the committed fixtures.
@Suite struct ModelCLITests {
    static let models = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("LineaLMTests/Fixtures/models")

    /// Greedy ids from `--input-ids` are transformers' greedy continuation; `logits` writes the full forward's logits.
    @Test func generateAndLogitsMatchTheFixture() throws {
        let dir = Self.models.appendingPathComponent("qwen3_next").path
        let expected = try SafeTensorsFile(path: dir + "/expected.safetensors")
        let ids = try expected.deviceTensor("input_ids_48").hostIntegers()
        let r = try runLinea(["generate", "--model", dir, "--input-ids", ids.map(String.init).joined(separator: ","), "--max-tokens", "16",
                              "--ignore-eos"])
        #expect(r.code == 0, "\(r.err)")
        let want = try expected.deviceTensor("greedy_48").hostIntegers().map(String.init).joined(separator: " ")
        #expect(r.out.trimmingCharacters(in: .whitespacesAndNewlines) == want, "\(r.out)")
        #expect(r.err.contains("prefill 48 tokens at") && r.err.contains("decode 16 tokens at") && r.err.contains("peak resident memory"), "\(r.err)")

        let tmp = try temporaryDirectory()
        let input = tmp.appendingPathComponent("ids.safetensors").path, output = tmp.appendingPathComponent("logits.safetensors").path
        try writeIDs(ids, to: input)
        let logits = try runLinea(["logits", "--model", dir, "--inputs", input, "--output", output])
        #expect(logits.code == 0, "\(logits.err)")
        #expect(ErrorStats(try SafeTensorsFile(path: output).tensor("logits"), try expected.tensor("logits_48")).relativeRMS <= 1e-3)
        // An id outside the vocabulary is named, and nothing is written.
        try writeIDs([1, 9999], to: input)
        try FileManager.default.removeItem(atPath: output)
        let bad = try runLinea(["logits", "--model", dir, "--inputs", input, "--output", output])
        #expect(bad.code == 1 && bad.err.contains("input_ids") && bad.err.contains("9999"), "\(bad.err)")
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    @Test func usageAndModelErrorsAreClear() throws {
        let dir = Self.models.appendingPathComponent("llama").path
        for (args, code, text) in [
            (["generate", "--model", dir, "--prompt", "a", "--input-ids", "1"], Int32(2), "expected one of --prompt and --input-ids, got both"),
            (["generate", "--model", dir, "--input-ids", "1,x"], 2, "--input-ids: expected comma-separated token ids"),
            (["generate", "--model", dir, "--prompt", ""], 2, "--prompt: expected some text"),
            (["generate", "--model", dir, "--input-ids", "1", "--top-p", "0"], 2, "--top-p"),
            (["generate", "--model", dir, "--input-ids", "1,2", "--max-tokens", "1000"], 1, "max_position_embeddings"),
            (["generate", "--model", "/nonexistent", "--input-ids", "1"], 1, "config.json"),
            (["generate", "--model", dir, "--prompt", "hello"], 1, "tokenizer.json"),
        ] {
            let r = try runLinea(args)
            #expect(r.code == code && r.err.contains(text), "\(args): \(r.code) \(r.err)")
        }
    }

    /// `linea tokenize` prints the tokenizer's ids on one line and, with --decode, the text exactly.
    @Test func tokenizeRoundTrips() throws {
        let dir = Self.models.deletingLastPathComponent().appendingPathComponent("qwen2").path
        let ids = try runLinea(["tokenize", "--model", dir, "--text", "Hello world"])
        #expect(ids.code == 0 && ids.out == "811 799\n", "\(ids.out) \(ids.err)")
        let text = try runLinea(["tokenize", "--model", dir, "--decode", "811,799"])
        #expect(text.code == 0 && text.out == "Hello world", "\(text.out)")
        let bad = try runLinea(["tokenize", "--model", dir, "--decode", "811,99999"])
        #expect(bad.code == 1 && bad.err.contains("99999"), "\(bad.err)")
    }

    /// `linea generate` with no options: the built-in demo model continues "In the beginning" with text.
    @Test func generateRunsTheDemoModelByDefault() throws {
        let r = try runLinea(["generate", "--max-tokens", "12"])
        #expect(r.code == 0, "\(r.err)")
        #expect(r.out.split(separator: " ").count >= 5, "\(r.out)")
    }

    /// Decoding 100,000 tokens with a recurrent-only 2-layer model (the mamba2 fixture) ends at the peak resident
    /// memory of 10,000 tokens, within 5%: nothing grows with the sequence.
    @Test func longDecodeKeepsMemoryFlat() throws {
        let dir = Self.models.appendingPathComponent("mamba2").path
        func peak(_ tokens: Int) throws -> Double {
            let r = try runLinea(["generate", "--model", dir, "--input-ids", "5", "--max-tokens", "\(tokens)", "--ignore-eos"])
            #expect(r.code == 0, "\(r.err)")
            let text = r.err.components(separatedBy: "peak resident memory ").last ?? ""
            let parts = text.split(separator: " ")
            let value = Double(parts.first ?? "") ?? .nan
            return parts.count > 1 && parts[1].hasPrefix("GiB") ? value * 1024 : value  // MiB
        }
        let (short, long) = (try peak(10_000), try peak(100_000))
        #expect(long <= short * 1.05, "10,000 tokens: \(short) MiB, 100,000 tokens: \(long) MiB")
    }

    /// Sampling is reproducible from its seed and differs across seeds.
    @Test func samplingFollowsItsSeed() throws {
        let dir = Self.models.appendingPathComponent("mamba2").path
        func run(_ seed: Int) throws -> String {
            let r = try runLinea(["generate", "--model", dir, "--input-ids", "5,6,7", "--max-tokens", "24", "--temperature", "1.5",
                                  "--top-k", "50", "--top-p", "0.95", "--seed", "\(seed)", "--ignore-eos"])
            #expect(r.code == 0, "\(r.err)")
            return r.out
        }
        #expect(try run(1) == run(1))
        #expect(try run(1) != run(2))
    }

    func writeIDs(_ ids: [Int], to path: String) throws {
        // I64 ids as a safetensors file: the header, then little-endian 8-byte integers.
        let header = #"{"input_ids":{"dtype":"I64","shape":[1,\#(ids.count)],"data_offsets":[0,\#(8 * ids.count)]}}"#
        var data = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: Array(header.utf8))
        for id in ids { withUnsafeBytes(of: Int64(id).littleEndian) { data.append(contentsOf: $0) } }
        try data.write(to: URL(fileURLWithPath: path))
    }
}

/// `linea model init` writes a checkpoint each architecture loads back, and `linea bench --model` times it.
@Suite struct ModelInitCLITests {
    @Test(arguments: ["llama", "qwen3_next", "qwen3_5_text", "mamba2", "kimi_linear"])
    func initThenBench(_ type: String) throws {
        let dir = try temporaryDirectory().appendingPathComponent(type).path
        let made = try runLinea(["model", "init", "--type", type, "--size", "3M", "--vocab", "300", "--output", dir, "--dtype", "bf16"])
        #expect(made.code == 0 && made.err.contains("parameters"), "\(made.err)")
        let bench = try runLinea(["bench", "--model", dir, "--prompt-tokens", "70", "--new-tokens", "3", "--batch", "2"])
        #expect(bench.code == 0, "\(bench.err)")
        #expect(bench.out.contains("prefill tokens/s") && bench.out.contains(type), "\(bench.out)")
        #expect(bench.err.contains("1 warm-up + 2 timed"), "\(bench.err)")
        let noReps = try runLinea(["bench", "--model", dir, "--prefill-reps", "0"])
        #expect(noReps.code == 2 && noReps.err.contains("--prefill-reps: expected 1...100, got 0"), "\(noReps.err)")
        let bad = try runLinea(["model", "init", "--type", "gpt9", "--size", "3M", "--output", dir])
        #expect(bad.code == 2 && bad.err.contains("--type"), "\(bad.err)")
    }
}
