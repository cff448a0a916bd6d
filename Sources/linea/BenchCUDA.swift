import Foundation
import Linea
import LineaCUDA

extension BenchCommand {
    /// GPU time of `work` (ops queued on GPU 0): median of 10 runs after 3 warm-up runs, each behind an L2-evicting
    /// fill, between CUDA events, as triton's do_bench. Milliseconds.
    func timeOnGPU(_ work: () throws -> Void) throws -> Double {
        try CUDABench.time(context: CUDADeviceBackend.register().context, warmup: 3, iterations: 10, work).median
    }

    /// The GPU table: per point ms, tokens/s and TFLOP/s.
    func reportGPU(_ results: [BenchResult]) {
        printTable(
            header: ["op", "form", "B", "T", "H", "K", "ms", "tokens/s", "TFLOP/s"],
            rows: results.map { r in
                [r.mechanism, r.form, "\(r.shape.B)", "\(r.shape.T)", "\(r.shape.H)", "\(r.shape.K)",
                 String(format: "%.3f", r.ms), String(format: "%.3g", r.tokensPerSecond), String(format: "%.1f", r.gflops / 1000)]
            })
        let name = (try? CUDABackend.shared.deviceName) ?? "GPU 0"
        print("\(name), \(dtype) inputs, through the dispatch (Linea's public API); median of 10 runs (CUDA events, L2 evicted before each, as triton's do_bench)")
    }
}

extension BenchCommand {
    /// `linea bench --backend cuda --matmul`: `Ops.matmul` on device tensors (nn.Linear layout, `--dtype` x and
    /// weights, output preallocated) at a 1B-parameter model's projection shapes, CUDA-event timed as the kernels.
    func runMatmul() throws {
        if let reason = CUDABackend.unavailableReason { throw Failure(description: reason) }
        let cuda = try CUDADeviceBackend.register()
        let type: DType = dtype == "f16" ? .float16 : dtype == "f32" ? .float32 : .bfloat16
        var rows: [[String]] = []
        for (m, k, n) in [(4096, 2048, 6144), (1, 2048, 6144), (4096, 6144, 2048), (1, 6144, 2048)] {
            let x = try DeviceTensor(Tensor.randomNormal([m, k], seed: 1), dtype: type, on: cuda.device)
            let w = try DeviceTensor(Tensor.randomNormal([n, k], seed: 2, scale: 0.02), dtype: type, on: cuda.device)
            let out = try DeviceTensor.zeros([m, n], dtype: type, on: cuda.device)
            let t = try CUDABench.time(context: cuda.context, warmup: 5, iterations: 20) { _ = try Ops.matmul(x, weight: w, out: out) }
            rows.append(["\(m)", "\(k)", "\(n)", String(format: "%.4f", t.median), String(format: "%.1f", 2 * Double(m * n * k) / (t.median / 1e3) / 1e12)])
        }
        printTable(header: ["M", "K", "N", "ms", "TFLOP/s"], rows: rows)
        print("\(cuda.context.deviceName), \(dtype) x and weights, out = x · W^T (\((try? CUBLAS.library.get()) ?? "cuBLAS")), median of 20 runs (CUDA events, L2 evicted before each)")
    }
}
