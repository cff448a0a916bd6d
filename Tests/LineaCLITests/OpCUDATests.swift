import Foundation
import Linea
import Testing

/// `linea op ... --backend cuda` on a machine without a GPU (CI): exit 1 with CUDA's reason, no output written.
@Suite struct OpCUDATests {
    @Test(.enabled(if: !FileManager.default.fileExists(atPath: "/dev/nvidiactl"), "this machine has an NVIDIA device"))
    func opOnCUDAWithoutAGPUExitsOneWithTheReason() throws {
        let dir = try temporaryDirectory()
        let input = dir.appendingPathComponent("in.safetensors").path, output = dir.appendingPathComponent("out.safetensors").path
        try SafeTensors.write(["q": try Tensor.randomNormal([1, 4, 2, 8], seed: 1), "k": try Tensor.randomNormal([1, 4, 2, 8], seed: 2),
                               "v": try Tensor.randomNormal([1, 4, 2, 8], seed: 3)], to: input)
        for (name, extra) in [("attention", ["--dtype", "bf16"]), ("attention", ["--form", "split_kv"]), ("linear_attn", [])] {
            let r = try runLinea(["op", name, "--inputs", input, "--output", output, "--backend", "cuda"] + extra)
            #expect(r.code == 1, "\(name): \(r.err)")
            #expect(r.err.contains("CUDA backend is unavailable"), "\(name): \(r.err)")
            #expect(!FileManager.default.fileExists(atPath: output))
        }
    }

    /// `linea op --backend cuda --dtype f32` on files whose v, g, beta and initial_state have HV = 2H heads matches
    /// the Float64 reference (needs a GPU).
    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/dev/nvidiactl"), "needs an NVIDIA device"),
          arguments: [RecurrentMechanism.gatedDeltaRule, .simpleGLA])
    func groupedValueHeadsOnCUDAMatchReference(_ r: RecurrentMechanism) throws {
        let dir = try temporaryDirectory()
        let (input, x) = try GroupedHeadsOpTests.writeGrouped(r, dir, B: 2, T: 100, H: 2, HV: 4, K: 64, V: 64)
        let want = try Recurrence.forward(r, x, form: .reference)
        let output = dir.appendingPathComponent("out.safetensors").path
        let run = try runLinea(["op", r.rawValue, "--inputs", input, "--output", output, "--backend", "cuda", "--dtype", "f32"])
        #expect(run.code == 0, "\(r): \(run.err)")
        let got = try SafeTensors.read(path: output)
        let eo = ErrorStats(got["o"]!, want.o), es = ErrorStats(got["final_state"]!, want.finalState)
        #expect(eo.relativeRMS <= 1e-5 && es.relativeRMS <= 1e-5, "\(r) cuda: o \(eo); final_state \(es)")
    }

    @Test func opBackendAndDTypeAreValidated() throws {
        let r = try runLinea(["op", "attention", "--inputs", "x", "--output", "y", "--backend", "tpu"])
        #expect(r.code == 2 && r.err.contains("--backend"), "\(r.err)")
        let d = try runLinea(["op", "attention", "--inputs", "x", "--output", "y", "--backend", "cuda", "--dtype", "f8"])
        #expect(d.code == 2 && d.err.contains("--dtype"), "\(d.err)")
        let c = try runLinea(["op", "attention", "--inputs", "x", "--output", "y", "--dtype", "bf16"])
        #expect(c.code == 2 && c.err.contains("only with --backend cuda"), "\(c.err)")
    }
}
