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

    @Test func opBackendAndDTypeAreValidated() throws {
        let r = try runLinea(["op", "attention", "--inputs", "x", "--output", "y", "--backend", "tpu"])
        #expect(r.code == 2 && r.err.contains("--backend"), "\(r.err)")
        let d = try runLinea(["op", "attention", "--inputs", "x", "--output", "y", "--backend", "cuda", "--dtype", "f8"])
        #expect(d.code == 2 && d.err.contains("--dtype"), "\(d.err)")
        let c = try runLinea(["op", "attention", "--inputs", "x", "--output", "y", "--dtype", "bf16"])
        #expect(c.code == 2 && c.err.contains("only with --backend cuda"), "\(c.err)")
    }
}
