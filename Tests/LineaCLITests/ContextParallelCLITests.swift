import Foundation
import Linea
import Testing

/// `linea op NAME --context-parallel N` and `linea bench --context-parallel N` on the CPU.
@Suite struct ContextParallelCLITests {
    /// The same o and final_state files with 3 ranks as with one (grouped value heads, an initial state); bad rank counts
    /// exit 2 (usage) or 1 (more ranks than tokens) naming the option.
    @Test func opOverRanksMatchesOneRank() throws {
        let dir = try temporaryDirectory()
        let input = dir.appendingPathComponent("in.safetensors").path
        let x = try RecurrenceInputs.random(.gatedDeltaRule, B: 2, T: 50, H: 1, HV: 2, K: 16, V: 8, seed: 3)
        try SafeTensors.write(["q": x.q, "k": x.k, "v": x.v, "g": x.g!, "beta": x.beta!, "initial_state": x.initialState!], to: input)
        var files: [[String: Tensor]] = []
        for extra in [[], ["--context-parallel", "3"]] {
            let output = dir.appendingPathComponent("out\(extra.count).safetensors").path
            let r = try runLinea(["op", "gated_delta_rule", "--inputs", input, "--output", output, "--chunk-size", "16"] + extra)
            #expect(r.code == 0, "\(extra): \(r.err)")
            files.append(try SafeTensors.read(path: output))
        }
        for name in ["o", "final_state"] {
            let e = ErrorStats(files[1][name]!, files[0][name]!)
            #expect(e.relativeRMS <= 1e-5, "\(name): \(e)")
        }
        let out = dir.appendingPathComponent("bad.safetensors").path
        let zero = try runLinea(["op", "gated_delta_rule", "--inputs", input, "--output", out, "--context-parallel", "0"])
        #expect(zero.code == 2 && zero.err.contains("--context-parallel"), "\(zero.err)")
        let attention = try runLinea(["op", "attention", "--inputs", input, "--output", out, "--context-parallel", "2"])
        #expect(attention.code == 2 && attention.err.contains("--context-parallel"), "\(attention.err)")
        let many = try runLinea(["op", "gated_delta_rule", "--inputs", input, "--output", out, "--context-parallel", "51"])
        #expect(many.code == 1 && many.err.contains("ranks"), "\(many.err)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    /// `linea bench --context-parallel 2` prints both ranks' times and the efficiency; N = 0 or a GPU backend is a usage error.
    @Test func benchReportsEfficiency() throws {
        let r = try runLinea(["bench", "--context-parallel", "2", "--mechanism", "gla,delta_rule", "--lengths", "128", "--heads", "2", "--dim", "16"])
        #expect(r.code == 0, "\(r.err)")
        #expect(r.out.contains("efficiency") && r.out.contains("gla") && r.out.contains("delta_rule"), "\(r.out)")
        let zero = try runLinea(["bench", "--context-parallel", "0"])
        #expect(zero.code == 2 && zero.err.contains("--context-parallel"), "\(zero.err)")
        let other = try runLinea(["bench", "--context-parallel", "2", "--mechanism", "attention"])
        #expect(other.code == 2 && other.err.contains("recurrence"), "\(other.err)")
    }
}
