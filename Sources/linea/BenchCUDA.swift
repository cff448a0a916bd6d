import Foundation
import Linea
import LineaCUDA

extension BenchCommand {
    /// `linea bench --backend cuda [--dtype bf16|f16|f32]`: causal flash attention and the chunked kernels (bf16: the
    /// tensor-core kernels; f16, f32: the fp32 CUDA-core chunked kernel, `CUDAChunkedSIMT`), timed with CUDA events
    /// (median of 10 runs after 3 warm-up runs, each behind an L2-evicting fill, as triton's do_bench). Default
    /// shapes: B*T = `tokens`, H = 16, K = V = 128, T in {2048, 8192, 32768}.
    func runCUDA() throws {
        if let reason = CUDABackend.unavailableReason { throw Failure(description: reason) }
        let ctx = try CUDABackend.shared
        let type: DType = dtype == "f16" ? .float16 : dtype == "f32" ? .float32 : .bfloat16
        let names = mechanism?.split(separator: ",").map(String.init)
            ?? [Mechanism.attention.name] + CUDAChunked.covered.map(\.rawValue)
        var targets: [Mechanism] = []
        for name in names {
            let m = try Mechanism.named(name)
            if case .recurrence(let r) = m.kind, !CUDAChunked.covered.contains(r) {
                printError("bench: \(name) has no CUDA chunked kernel; skipped")
                continue
            }
            targets.append(m)
        }
        let (H, D) = (heads ?? 16, dim ?? 128)
        let kernels = type == .bfloat16 ? "tensor-core chunked kernels" : "fp32 CUDA-core chunked kernel"
        printError("bench: \(ctx.deviceName) (\(ctx.architecture)), \(dtype) (\(kernels)), H = \(H), K = V = \(D)")
        var results: [BenchResult] = []
        for T in try parsedLengths() ?? [2048, 8192, 32768] {
            let B = batch ?? max(1, tokens / T)
            let n = B * T * H * D
            var rng = FastRandom(seed: UInt64(T))
            func upload(_ amplitude: Float) throws -> CUDABuffer {  // uniform in [-amplitude, amplitude), as `type`
                switch type {
                case .bfloat16: try CUDABuffer(context: ctx, copying: rng.bf16(count: n, amplitude: amplitude))
                case .float16: try CUDABuffer(context: ctx, copying: rng.floats(count: n, in: -amplitude...amplitude).map(HalfPrecision.float16Bits))
                default: try CUDABuffer(context: ctx, copying: rng.floats(count: n, in: -amplitude...amplitude))
                }
            }
            let (q, k, kUnit, v) = (try upload(1.7), try upload(1.7), try upload((3 / Float(D)).squareRoot()), try upload(1.7))
            let g = try CUDABuffer(context: ctx, copying: rng.floats(count: B * T * H, in: -1...(-1e-4)))
            let beta = try CUDABuffer(context: ctx, copying: rng.floats(count: B * T * H, in: 0...1))
            let o = try CUDABuffer(context: ctx, byteCount: n * type.byteCount)
            let shape = CUDAChunkedShape(batch: B, length: T, heads: H, keyDim: D, valueDim: D)
            let scratchBytes = type != .bfloat16 ? 0
                : max(CUDAChunked.supported.map { CUDAChunked.scratchBytes($0, shape, context: ctx, valueBlock: valueBlock) }.max() ?? 0,
                      CUDAChunkedGLA.scratchBytes(shape, context: ctx, valueBlock: valueBlock == 32 ? nil : valueBlock))
            let gk = targets.contains { $0.name == RecurrentMechanism.gla.rawValue }  // gla's per-channel gates
                ? try CUDABuffer(context: ctx, copying: rng.floats(count: n, in: -1...(-1e-4))) : nil
            let scratch = try CUDABuffer(context: ctx, byteCount: max(1, scratchBytes))
            let decays = try CUDAChunked.retentionDecays(heads: H, context: ctx)
            for m in targets {
                printError("bench: cuda \(m.name) \(dtype) B = \(B) T = \(T) ...")
                let run: () throws -> Void
                let flops: Double
                let form: String
                switch m.kind {
                case .attention:
                    let s = CUDAAttentionShape(batch: B, queryLength: T, keyLength: T, queryHeads: H, kvHeads: H, headDim: D)
                    run = { try CUDAAttention.forward(q: q, k: k, v: v, o: o, lse: nil, shape: s, causal: true, dtype: type, outputDType: type) }
                    flops = s.flops(causal: true)
                    form = "flash"
                case .recurrence(let r):
                    let isDelta = r.isDelta
                    let gate: CUDABuffer? = switch r {
                    case .retention: decays
                    case .simpleGLA, .gatedDeltaRule: g
                    case .gla: gk
                    default: nil
                    }
                    let keys = isDelta ? kUnit : k
                    run = type != .bfloat16 ? {
                        try CUDAChunkedSIMT.forward(r, q: q, k: keys, v: v, g: gate, beta: isDelta ? beta : nil, initialState: nil,
                                                    finalState: nil, o: o, shape: shape, inputDType: type, outputDType: type == .float32 ? .float32 : .bfloat16,
                                                    valueBlock: valueBlock)
                    } : r == .gla ? {
                        try CUDAChunkedGLA.forward(q: q, k: k, v: v, g: gk!, initialState: nil, finalState: nil, o: o, shape: shape,
                                                   scratch: scratch, valueBlock: valueBlock == 32 ? nil : valueBlock)
                    } : {
                        try CUDAChunked.forward(r, q: q, k: keys, v: v, g: gate, beta: isDelta ? beta : nil,
                                                initialState: nil, finalState: nil, o: o, shape: shape, scratch: scratch,
                                                valueBlock: isDelta ? nil : valueBlock)  // the delta kernels: 64 columns
                    }
                    flops = CUDAChunked.flops(r, shape)
                    form = "chunked"
                }
                do {
                    let t = try CUDABench.time(context: ctx, warmup: 3, iterations: 10, run)
                    results.append(BenchResult(mechanism: m.name, form: type == .bfloat16 ? form : "\(form) \(dtype)", backend: "cuda",
                                               shape: BenchShape(B: B, T: T, H: H, K: D, V: D), ms: t.median, flops: flops, peakBytes: 0))
                } catch let error as LineaError {
                    printError("bench: skipped cuda \(m.name) T = \(T): \(error)")
                }
            }
        }
        printTable(
            header: ["mechanism", "form", "B", "T", "H", "K", "ms", "tokens/s", "TFLOP/s"],
            rows: results.map { r in
                [r.mechanism, r.form, "\(r.shape.B)", "\(r.shape.T)", "\(r.shape.H)", "\(r.shape.K)",
                 String(format: "%.3f", r.ms), String(format: "%.3g", r.tokensPerSecond), String(format: "%.1f", r.gflops / 1000)]
            })
        print("\(ctx.deviceName), \(dtype) inputs (\(kernels)), median of 10 runs (CUDA events, L2 evicted before each, as triton's do_bench); FLOPs as computed by each bf16 kernel")
        if let json { try writeJSON(results, to: json) }
        if let svg { try writeSVG(results, to: svg) }
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

/// A fast xorshift generator for large benchmark inputs (not for statistics).
struct FastRandom {
    var state: UInt64

    init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }

    /// A uniform Float in [0, 1).
    mutating func next() -> Float {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17
        return Float(state >> 40) * (1 / Float(1 << 24))
    }

    /// `count` bf16 bits uniform in [-amplitude, amplitude].
    mutating func bf16(count: Int, amplitude: Float) -> [UInt16] {
        (0..<count).map { _ in HalfPrecision.bfloat16Bits((2 * next() - 1) * amplitude) }
    }

    /// `count` Floats uniform in `range`.
    mutating func floats(count: Int, in range: ClosedRange<Float>) -> [Float] {
        (0..<count).map { _ in range.lowerBound + next() * (range.upperBound - range.lowerBound) }
    }
}
