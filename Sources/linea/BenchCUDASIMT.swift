import Foundation
import Linea
import LineaCUDA

extension BenchCommand {
    /// `linea bench --backend cuda --dtype f32|f16`: the fp32 CUDA-core chunked kernel (`CUDAChunkedSIMT`) for every
    /// chunked mechanism, timed with CUDA events (median of 5 runs after 1 warm-up run). Default shapes:
    /// B*T = `tokens`, H = 16, K = V = 128, T in {2048, 8192}.
    func runCUDASIMT() throws {
        if let reason = CUDABackend.unavailableReason { throw Failure(description: reason) }
        let ctx = try CUDABackend.shared
        let type: DType = dtype == "f16" ? .float16 : .float32
        let names = mechanism?.split(separator: ",").map(String.init) ?? CUDAChunked.covered.map(\.rawValue)
        let targets = try names.compactMap { name -> RecurrentMechanism? in
            guard case .recurrence(let r) = try Mechanism.named(name).kind, CUDAChunked.covered.contains(r) else {
                printError("bench: \(name) has no CUDA chunked kernel; skipped")
                return nil
            }
            return r
        }
        let (H, D) = (heads ?? 16, dim ?? 128)
        printError("bench: \(ctx.deviceName) (\(ctx.architecture)), \(dtype) (fp32 CUDA-core kernel), H = \(H), K = V = \(D)")
        var results: [BenchResult] = []
        for T in try parsedLengths() ?? [2048, 8192] {
            let B = batch ?? max(1, tokens / T)
            let n = B * T * H * D
            var rng = FastRandom(seed: UInt64(T))
            func upload(_ amplitude: Float) throws -> CUDABuffer {
                let x = rng.floats(count: n, in: -amplitude...amplitude)
                return type == .float16 ? try CUDABuffer(context: ctx, copying: x.map(HalfPrecision.float16Bits))
                    : try CUDABuffer(context: ctx, copying: x)
            }
            let (q, k, kUnit, v) = (try upload(1.7), try upload(1.7), try upload((3 / Float(D)).squareRoot()), try upload(1.7))
            let g = try CUDABuffer(context: ctx, copying: rng.floats(count: B * T * H, in: -1...(-1e-4)))
            let gk = try CUDABuffer(context: ctx, copying: rng.floats(count: n, in: -1...(-1e-4)))
            let beta = try CUDABuffer(context: ctx, copying: rng.floats(count: B * T * H, in: 0...1))
            let decays = try CUDAChunked.retentionDecays(heads: H, context: ctx)
            let o = try CUDABuffer(context: ctx, byteCount: n * 4)
            let shape = CUDAChunkedShape(batch: B, length: T, heads: H, keyDim: D, valueDim: D)
            for r in targets {
                printError("bench: cuda \(r.rawValue) \(dtype) B = \(B) T = \(T) ...")
                let isDelta = r == .deltaRule || r == .gatedDeltaRule
                let gate: CUDABuffer? = switch r {
                case .retention: decays
                case .simpleGLA, .gatedDeltaRule: g
                case .gla: gk
                default: nil
                }
                let t = try CUDABench.time(context: ctx, warmup: 1, iterations: 5) {
                    try CUDAChunkedSIMT.forward(r, q: q, k: isDelta ? kUnit : k, v: v, g: gate, beta: isDelta ? beta : nil,
                                                initialState: nil, finalState: nil, o: o, shape: shape, inputDType: type,
                                                valueBlock: valueBlock)
                }
                results.append(BenchResult(mechanism: r.rawValue, form: "chunked \(dtype)", backend: "cuda",
                                           shape: BenchShape(B: B, T: T, H: H, K: D, V: D), ms: t.median,
                                           flops: CUDAChunked.flops(r, shape), peakBytes: 0))
            }
        }
        printTable(
            header: ["mechanism", "form", "B", "T", "H", "K", "ms", "tokens/s", "TFLOP/s"],
            rows: results.map { r in
                [r.mechanism, r.form, "\(r.shape.B)", "\(r.shape.T)", "\(r.shape.H)", "\(r.shape.K)",
                 String(format: "%.3f", r.ms), String(format: "%.3g", r.tokensPerSecond), String(format: "%.1f", r.gflops / 1000)]
            })
        print("\(ctx.deviceName), \(dtype) inputs (fp32 CUDA-core kernel), median of 5 runs (CUDA events); FLOPs of the bf16 chunked form")
        if let json { try writeJSON(results, to: json) }
    }
}
