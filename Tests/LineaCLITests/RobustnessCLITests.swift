import Foundation
import Linea
import Testing

/// Corrupt-looking files and odd options end in a clean error: exit 1 (bad data, over the memory limit,
/// non-finite results) or 2 (usage), a message naming the tensor or option, within seconds.
@Suite struct RobustnessCLITests {
    /// Writes `tensors` to a fresh file and returns its directory and path.
    func write(_ tensors: [String: Tensor]) throws -> (URL, String) {
        let dir = try temporaryDirectory()
        let path = dir.appendingPathComponent("in.safetensors").path
        try SafeTensors.write(tensors, to: path)
        return (dir, path)
    }

    @Test func tinyFileAskingForAHugeStateIsRefused() throws {
        let x = try Tensor(zeros: [1, 0, 1, 131072])
        let (dir, input) = try write(["q": x, "k": x, "v": x, "g": try Tensor(zeros: [1, 0, 1]), "beta": try Tensor(zeros: [1, 0, 1])])
        let out = dir.appendingPathComponent("out.safetensors").path
        let r = try runLinea(["op", "gated_delta_rule", "--inputs", input, "--output", out, "--max-memory", "16G"])
        #expect(r.code == 1, "\(r.err)")
        #expect(r.err.contains("final_state: [1, 1, 131072, 131072] Float32 needs 64.0 GiB, over the memory limit 16.0 GiB"), "\(r.err)")
        let env = try runLinea(["op", "gated_delta_rule", "--inputs", input, "--output", out], environment: ["LINEA_MAX_MEMORY": "1G"])
        #expect(env.code == 1 && env.err.contains("over the memory limit 1.0 GiB"), "\(env.err)")
    }

    @Test func zeroLengthKeysWithHugeValueDimIsRefused() throws {
        let (dir, input) = try write(["q": try Tensor.randomNormal([1, 4, 1, 8], seed: 1), "k": try Tensor(zeros: [1, 0, 1, 8]),
                                      "v": try Tensor(zeros: [1, 0, 1, 1 << 36])])
        let r = try runLinea(["op", "attention", "--inputs", input, "--output", dir.appendingPathComponent("o").path])
        #expect(r.code == 1 && r.err.contains("o: [1, 4, 1, 68719476736] Float32"), "\(r.err)")
    }

    @Test func oddNumbersInOptionsAreRefused() throws {
        let x = try Tensor.randomNormal([1, 64, 2, 8], seed: 1)
        let (dir, input) = try write(["q": x, "k": x, "v": x])
        let out = dir.appendingPathComponent("out.safetensors").path
        let window = try runLinea(["op", "attention", "--inputs", input, "--output", out, "--window", "\(Int.max)"])
        #expect(window.code == 0, "\(window.err)")
        // One partition per key would need 128 MiB of partial outputs here; one per 16 keys needs 8 MiB.
        let long = try Tensor.randomNormal([1, 2000, 1, 8], seed: 2)
        let (_, longInput) = try write(["q": long, "k": long, "v": long])
        let partitions = try runLinea(["op", "attention", "--inputs", longInput, "--output", out, "--form", "split_kv:100000",
                                       "--max-memory", "64M"])
        #expect(partitions.code == 0, "\(partitions.err)")
        let usage: [([String], String)] = [
            (["op", "attention", "--inputs", input, "--output", out, "--scale", "nan"], "--scale: expected a finite number > 0, got nan"),
            (["op", "attention", "--inputs", input, "--output", out, "--scale=-1"], "--scale: expected a finite number > 0"),
            (["op", "attention", "--inputs", input, "--output", out, "--scale", "inf"], "--scale"),
            (["op", "attention", "--inputs", input, "--output", out, "--form", "split_kv:0"], "--form: expected split_kv:N with N >= 1 partitions, got 'split_kv:0'"),
            (["op", "attention", "--inputs", input, "--output", out, "--form", "split_kv:-5"], "--form: expected split_kv:N with N >= 1 partitions, got 'split_kv:-5'"),
            (["op", "attention", "--inputs", input, "--output", out, "--window=-3"], "--window: expected >= 1"),
            (["op", "gla", "--inputs", input, "--output", out, "--chunk-size", "0"], "--chunk-size: expected >= 1"),
            (["op", "attention", "--inputs", input, "--output", out, "--no-causal", "--window", "4"], "--window: expected a causal mask (a sliding window is causal), got --no-causal"),
            (["op", "gla", "--inputs", input, "--output", out, "--normalize"], "--normalize: expected linear_attn"),
            (["op", "gla", "--inputs", input, "--output", out, "--form", "chunked:0"], "--form"),
            (["op", "attention", "--inputs", input, "--output", out, "--max-memory", "12Q"], "--max-memory: expected a byte count"),
            (["op", "attention", "--inputs", input, "--output", out, "--max-memory", "0"], "--max-memory"),
            (["bench", "--lengths", "\(Int.max)"], "--lengths \(Int.max)"),
            (["bench", "--lengths", "1024", "--batch", "\(Int.max / 2)"], "over the memory limit"),
            (["bench", "--heads", "0"], "--heads: expected >= 1, got 0"),
            (["op", "block_sparse", "--inputs", input, "--output", out, "--set", "block_rows=0"], "--set block_rows: expected >= 1, got 0"),
            (["op", "block_sparse", "--inputs", input, "--output", out, "--set", "rows"], "--set: expected NAME=INTEGER, got 'rows'"),
            (["bench", "--lengths", "-4"], "--lengths"),
            (["bench", "--mechanism", "attention", "--form", "split_kv:0"], "--form: expected split_kv:N with N >= 1"),
            (["verify", "--tolerance", "nan"], "--tolerance: expected a finite number >= 0"),
            (["verify", "--max-memory", "-1G"], "--max-memory"),
        ]
        for (arguments, expected) in usage {
            let r = try runLinea(arguments)
            #expect(r.code == 2 && r.err.contains(expected), "\(arguments): \(r.code) \(r.err)")
        }
        let env = try runLinea(["op", "attention", "--inputs", input, "--output", out], environment: ["LINEA_MAX_MEMORY": "lots"])
        #expect(env.code == 2 && env.err.contains("LINEA_MAX_MEMORY: expected a byte count"), "\(env.err)")
    }

    @Test func seedNearUInt64MaxVerifies() throws {
        let r = try runLinea(["verify", "--mechanism", "attention", "--seed", "\(UInt64.max)"])
        #expect(r.code == 0, "\(r.err)")
    }

    @Test func float32OverflowInFlashIsAnError() throws {
        // Scores 8e38·scale = 2.8e38 fit Float32 in the reference, but flash's scores carry a log2(e) factor.
        let q = try Tensor(zeros: [1, 16, 2, 8], value: 1e19)
        let (dir, input) = try write(["q": q, "k": q, "v": try Tensor.randomNormal([1, 16, 2, 8], seed: 2)])
        let out = dir.appendingPathComponent("out.safetensors").path
        let r = try runLinea(["op", "attention", "--inputs", input, "--output", out])
        #expect(r.code == 1 && r.err.contains("q, k: expected max|q|·max|k|·D·|scale|"), "\(r.err)")
        let reference = try runLinea(["op", "attention", "--inputs", input, "--output", out, "--form", "reference"])
        #expect(reference.code == 0, "\(reference.err)")
        #expect(try SafeTensors.read(path: out)["lse"]!.scalars.allSatisfy(\.isFinite))
        let big = try Tensor(zeros: [1, 16, 2, 8], value: 3e19)
        let (_, overflow) = try write(["q": big, "k": big, "v": q])
        let lse = try runLinea(["op", "attention", "--inputs", overflow, "--output", out, "--form", "reference"])
        #expect(lse.code == 1 && lse.err.contains("lse: expected finite values, got inf at index [0, 0, 0]"), "\(lse.err)")
    }

    @Test func nonFiniteOutputsFailAndKeepTheOldFile() throws {
        let (B, T, H, K) = (1, 64, 1, 16)
        let (dir, input) = try write([
            "q": try Tensor.randomNormal([B, T, H, K], seed: 1), "k": try Tensor.randomNormal([B, T, H, K], seed: 2, scale: 40),
            "v": try Tensor.randomNormal([B, T, H, K], seed: 3), "beta": try Tensor(zeros: [B, T, H], value: 1)])
        let out = dir.appendingPathComponent("out.safetensors").path
        try Data("precious".utf8).write(to: URL(fileURLWithPath: out))
        for form in ["recurrent", "chunked", "reference"] {
            let r = try runLinea(["op", "delta_rule", "--inputs", input, "--output", out, "--form", form])
            #expect(r.code == 1 && r.err.contains("o: expected finite values, got") && r.err.contains("--allow-nonfinite"), "\(form): \(r.err)")
            #expect(try String(contentsOfFile: out, encoding: .utf8) == "precious")
        }
        let allowed = try runLinea(["op", "delta_rule", "--inputs", input, "--output", out, "--allow-nonfinite"])
        #expect(allowed.code == 0, "\(allowed.err)")
        #expect(try SafeTensors.read(path: out)["o"]!.scalars.contains { !$0.isFinite })
    }
}
