// linea-cuda-check: runs the CUDA-vs-CPU comparisons of the test suite on the GPU (prints a table, exits 1 on a
// failure or when no GPU is present), then with `--bench` times the kernels at the issue's shapes.
import Foundation
import Linea
import LineaCUDA

let arguments = CommandLine.arguments.dropFirst()
guard let ctx = try? CUDABackend.shared else {
    print("linea-cuda-check: \(CUDABackend.unavailableReason ?? "unavailable")")
    exit(1)
}
print("device: \(ctx.deviceName), \(ctx.architecture), \(ctx.multiprocessorCount) SMs, NVRTC \(ctx.nvrtcVersion), cache \(KernelCache.directory.path)")

if arguments.contains("--decode-only") { exit(decodeSection(ctx, arguments) == 0 ? 0 : 1) }  // Decode.swift only
var failures = 0
// Compile (or load from the disk cache) every kernel entry once; a second run shows the cache at work.
if !arguments.contains("--skip-compile-all") {  // quick timing runs skip this: kernels then compile on first use
    do {
        let start = Date()
        var count = 0
        for kernel in CUDAKernels.all {
            // The Hopper attention source is sm_90a-only: compiled with its option, and only on an sm_90 device.
            let hopper = kernel.name == "attention_hopper"
            if hopper && ctx.computeCapability.major != 9 { continue }
            for entry in kernel.entries {
                _ = try ctx.function(source: kernel.source, name: entry, options: hopper ? CUDAKernels.attentionHopperOptions : [])
                count += 1
            }
        }
        print(String(format: "kernels: %d entries ready in %.2f s (NVRTC compile, or disk cache %@)", count,
                     Date().timeIntervalSince(start), KernelCache.directory.path))
    } catch {
        print("FAIL kernels: \(error)")
        failures += 1
    }
}
if !arguments.contains("--bench-only") {
    let start = Date()
    var jobs: [(String, () throws -> [CUDASelfCheck.Outcome])] = CUDASelfCheck.attentionCases.map { c in
        ("attention \(c.shape)", { try CUDASelfCheck.attention(c, context: ctx) })
    }
    jobs += CUDASelfCheck.recurrentCases.map { r in
        ("gated_delta_rule \(r)", { try CUDASelfCheck.gatedDeltaRule(b: r.b, h: r.h, k: r.k, v: r.v, context: ctx) })
    }
    for (name, job) in jobs {
        do {
            for outcome in try job() {
                print(outcome)
                if !outcome.passed { failures += 1 }
            }
        } catch {
            print("FAIL \(name): \(error)")
            failures += 1
        }
    }
    print(String(format: "checks: %d failure(s), %.1f s", failures, Date().timeIntervalSince(start)))
}

func bf16Buffer(_ count: Int, seed: UInt64) throws -> CUDABuffer {
    let t = try Tensor.randomNormal([count], seed: seed)
    return try CUDABuffer(context: ctx, copying: t.scalars.map(HalfPrecision.bfloat16Bits))
}

var benchStage = "setup"  // the step a bench error came from
if arguments.contains("--bench") || arguments.contains("--bench-only") {
    do {
        // Flash attention forward, bf16, causal, B*T = 32768, H = 16, D = 128 (bf16 output, like SDPA). The wgmma
        // (sm_90) and mma.sync kernels are timed side by side; every result is checked before it is timed: at
        // T = 2048 against the portable kernel, at longer T (the portable kernel is slow there) against mma.sync.
        // `--attention-t 2048,8192` picks the lengths; `--variants` adds mma.sync tuning variants, `--wgmma-variants`
        // wgmma ones (`LINEA_WG_*` defines); `--attention-only` stops after the attention timings.
        typealias Config = CUDAAttention.TensorCoreConfig
        let variants: [Config] = arguments.contains("--variants")
            ? [.default,
               { var c = Config.default; c.extraOptions = ["-DLINEA_MMA_SPLIT=0"]; return c }(),
               Config(warps: 8, rowTilesPerWarp: 1, blockKeys: 64, qInSharedMemory: true, minBlocksPerSM: 2),
               Config(warps: 4, rowTilesPerWarp: 2, blockKeys: 32, qInSharedMemory: true, minBlocksPerSM: 2)]
            : [.default]
        let lengths: [Int] = {
            if let i = arguments.firstIndex(of: "--attention-t"), arguments.index(after: i) < arguments.endIndex {
                return arguments[arguments.index(after: i)].split(separator: ",").compactMap { Int($0) }
            }
            return [2048, 8192, 32768]
        }()
        let hopper = ctx.computeCapability.major == 9
        for t in lengths {
            let shape = CUDAAttentionShape(batch: 32768 / t, queryLength: t, keyLength: t, queryHeads: 16, kvHeads: 16, headDim: 128)
            let n = 32768 * 16 * 128
            let q = try bf16Buffer(n, seed: 1), k = try bf16Buffer(n, seed: 2), v = try bf16Buffer(n, seed: 3)
            let o = try CUDABuffer(context: ctx, byteCount: n * 2)
            let lse = try CUDABuffer(context: ctx, byteCount: 32768 * 16 * 4)
            func output() throws -> [Float] { try o.download(UInt16.self, count: n).map { HalfPrecision.float(bfloat16Bits: $0) } }
            func poison() throws { try o.upload([UInt16](repeating: 0x7fc0, count: n)) }  // NaN: unwritten outputs fail
            var reference: [Float]
            var referenceName: String
            benchStage = "reference T=\(t)"
            if t == 2048 {
                try poison()
                let time = try CUDABench.time(context: ctx, warmup: 1, iterations: 3) {
                    try CUDAAttention.forward(q: q, k: k, v: v, o: o, lse: lse, shape: shape, causal: true,
                                              dtype: .bfloat16, outputDType: .bfloat16, kernel: .portable)
                }
                print(String(format: "bench flash_fwd portable causal bf16 %@: median %.3f ms, %.1f TFLOP/s",
                             shape.description, time.median, shape.flops(causal: true) / (time.median * 1e-3) / 1e12))
                reference = try output(); referenceName = "portable"
            } else {
                try poison()
                try CUDAAttention.forward(q: q, k: k, v: v, o: o, lse: lse, shape: shape, causal: true,
                                          dtype: .bfloat16, outputDType: .bfloat16, kernel: .tensorCore)
                reference = try output(); referenceName = "mma.sync"
            }
            var runs: [(String, CUDAAttention.Kernel, Config)] = variants.map { ("mma.sync [\($0)]", .tensorCore, $0) }
            if hopper {
                var wgmmaVariants: [[String]] = arguments.contains("--wgmma-variants")
                    ? [[], ["-DLINEA_WG_SKEW=0"]]
                    : [[]]
                // `--wgmma-defines "-DA=1 -DB=2;-DC=0"`: one timed variant per `;`-separated list (empty: the default).
                if let i = arguments.firstIndex(of: "--wgmma-defines"), arguments.index(after: i) < arguments.endIndex {
                    wgmmaVariants = arguments[arguments.index(after: i)].split(separator: ";", omittingEmptySubsequences: false)
                        .map { $0.split(separator: " ").map(String.init) }
                }
                if t == lengths.first { failures += wgmmaVariantChecks(ctx, wgmmaVariants) }  // WGMMAChecks.swift
                runs.insert(contentsOf: wgmmaVariants.map { options in
                    var c = Config.default
                    c.extraOptions = options
                    return ("wgmma" + options.map { " \($0)" }.joined(), .wgmma, c)
                }, at: 0)
            }
            for (name, kernel, config) in runs {
                benchStage = "\(name) T=\(t)"
                try poison()
                let run = {
                    try CUDAAttention.forward(q: q, k: k, v: v, o: o, lse: lse, shape: shape, causal: true,
                                              dtype: .bfloat16, outputDType: .bfloat16, kernel: kernel, tensorCoreConfig: config)
                }
                try run()
                let stats = ErrorStats(try output(), reference)
                var check = ", vs \(referenceName): \(stats)"
                if !(stats.relativeRMS <= 4e-3) { failures += 1; check += " FAIL (not timed)"; print("bench flash_fwd \(name) \(shape)\(check)"); continue }
                let time = try CUDABench.time(context: ctx, warmup: 3, iterations: 10) { try run() }
                let tflops = shape.flops(causal: true) / (time.median * 1e-3) / 1e12
                print(String(format: "bench flash_fwd %@ causal bf16 %@: median %.3f ms, min %.3f ms, %.1f TFLOP/s%@",
                             name, shape.description, time.median, time.min, tflops, check))
            }
        }
        if arguments.contains("--attention-only") { exit(failures == 0 ? 0 : 1) }
        // Gated delta rule decode step, B = 64, H = 32, K = V = 128, vs a device-to-device copy of the state.
        let (b, h, kd, vd) = (64, 32, 128, 128)
        let stateBytes = b * h * kd * vd * 4
        let state = try CUDABuffer(context: ctx, copying: try Tensor.randomNormal([b * h * kd * vd], seed: 5).scalars)
        let other = try CUDABuffer(context: ctx, byteCount: stateBytes)
        let copy = try CUDABench.time(context: ctx, warmup: 5, iterations: 50) { try other.copy(from: state) }
        let copyRate = Double(2 * stateBytes) / (copy.median * 1e-3) / 1e9
        print(String(format: "bench d2d copy %@: median %.4f ms (min %.4f), %.0f GB/s (read + write)", formatBytes(stateBytes),
                     copy.median, copy.min, copyRate))
        for dtype in [DType.float32, .bfloat16] {
            let e = dtype.byteCount
            func input(_ count: Int, _ seed: UInt64, _ range: ClosedRange<Float>) throws -> CUDABuffer {
                let t = try Tensor.randomUniform([count], seed: seed, in: range)
                return dtype == .float32 ? try CUDABuffer(context: ctx, copying: t.scalars)
                    : try CUDABuffer(context: ctx, copying: t.scalars.map(HalfPrecision.bfloat16Bits))
            }
            let q = try input(b * h * kd, 1, -0.1...0.1), k = try input(b * h * kd, 2, -0.1...0.1), v = try input(b * h * vd, 3, -1...1)
            let g = try input(b * h, 4, -0.1 ... -0.01), beta = try input(b * h, 5, 0...1)
            let o = try CUDABuffer(context: ctx, byteCount: b * h * vd * 4)
            for vec in [4, 1] {
                let time = try CUDABench.time(context: ctx, warmup: 5, iterations: 50) {
                    try CUDARecurrentStep.gatedDeltaRule(q: q, k: k, v: v, g: g, beta: beta, state: state, o: o,
                                                         batchHeads: b * h, keyDim: kd, valueDim: vd, dtype: dtype,
                                                         columnsPerThread: vec)
                }
                let bytes = 2 * stateBytes + b * h * (2 * kd + vd + 2) * e + b * h * vd * 4
                let rate = Double(bytes) / (time.median * 1e-3) / 1e9
                print(String(format: "bench gdr_step %@ columns/thread %d B=%d H=%d K=%d V=%d: median %.4f ms (min %.4f), %.0f GB/s = %.0f%% of d2d copy",
                             dtype.rawValue, vec, b, h, kd, vd, time.median, time.min, rate, 100 * rate / copyRate))
            }
        }
    } catch {
        print("FAIL bench error (\(benchStage)): \(error)")
        failures += 1
    }
}
failures += decodeSection(ctx, arguments)  // Decode.swift: decode steps, split-KV, block-sparse
exit(failures == 0 ? 0 : 1)
