// linea-cuda-check, decode section: the decode steps of all six recurrences, split-KV decode attention and
// block-sparse attention against the CPU reference, and with --bench their timings beside the references that
// bound them (a device-to-device copy, the existing flash kernel).
import Foundation
import Linea
import LineaCUDA

/// Runs the checks (unless `--bench-only`) and the benchmarks (with `--bench`/`--bench-only`); returns the failures.
func decodeSection(_ ctx: CUDAContext, _ arguments: ArraySlice<String>) -> Int {
    var failures = 0
    if arguments.contains("--split-kv") {  // only split-KV: its checks in three dtypes and its bench
        for dtype in CUDAUpload.inputTypes {
            for c in CUDAKernelChecks.splitKVCases {
                do {
                    let outcome = try CUDAKernelChecks.splitKV(b: c.b, t: c.t, s: c.s, hq: c.hq, hkv: c.hkv, d: c.d, causal: c.causal,
                                                               partitions: c.partitions, dtype: dtype, context: ctx)
                    print(outcome)
                    if !outcome.passed { failures += 1 }
                } catch {
                    print("FAIL split_kv: \(error)")
                    failures += 1
                }
            }
        }
        do { failures += try benchSplitKV(ctx) } catch { print("FAIL split_kv bench: \(error)"); failures += 1 }
        return failures
    }
    if !arguments.contains("--bench-only") {
        let start = Date()
        do {
            for outcome in try CUDAKernelChecks.runAll(context: ctx) {
                print(outcome)
                if !outcome.passed { failures += 1 }
            }
        } catch {
            print("FAIL decode checks: \(error)")
            failures += 1
        }
        print(String(format: "decode checks: %d failure(s), %.1f s", failures, Date().timeIntervalSince(start)))
    }
    if arguments.contains("--bench") || arguments.contains("--bench-only") {
        do {
            try benchSteps(ctx)
            failures += try benchSplitKV(ctx)
            try benchBlockSparse(ctx)
        } catch {
            print("FAIL decode bench: \(error)")
            failures += 1
        }
    }
    return failures
}

/// Device-to-device copy of `bytes` (read + write), GB/s: the bandwidth a streaming kernel can hope for.
private func copyRate(_ ctx: CUDAContext, bytes: Int) throws -> (ms: Double, gbps: Double) {
    let a = try CUDABuffer(context: ctx, byteCount: bytes), b = try CUDABuffer(context: ctx, byteCount: bytes)
    try a.fill(byte: 1)
    let t = try CUDABench.time(context: ctx, warmup: 3, iterations: 20) { try b.copy(from: a) }
    return (t.median, Double(2 * bytes) / (t.median * 1e-3) / 1e9)
}

/// Uniform random values in `range` uploaded as `dtype`.
private func deviceInput(_ ctx: CUDAContext, _ count: Int, _ seed: UInt64, _ range: ClosedRange<Float>, _ dtype: DType) throws -> CUDABuffer {
    try CUDAUpload.buffer(try Tensor.randomUniform([count], seed: seed, in: range), dtype: dtype, context: ctx)
}

/// The decode step of every mechanism at B = 64, H = 32, K = V = 128: state bytes read + written vs a copy.
private func benchSteps(_ ctx: CUDAContext) throws {
    let (b, h, kd, vd) = (64, 32, 128, 128)
    let stateBytes = b * h * kd * vd * 4
    let copy = try copyRate(ctx, bytes: stateBytes)
    print(String(format: "bench d2d copy of the state (%d MB): median %.4f ms, %.0f GB/s (read + write)", stateBytes >> 20, copy.ms, copy.gbps))
    let state = try deviceInput(ctx, b * h * kd * vd, 9, -0.1...0.1, .float32)
    let o = try CUDABuffer(context: ctx, byteCount: b * h * vd * 4)
    for dtype in [DType.bfloat16, .float16, .float32] {
        let e = dtype.byteCount
        let q = try deviceInput(ctx, b * h * kd, 1, -0.1...0.1, dtype), k = try deviceInput(ctx, b * h * kd, 2, -0.1...0.1, dtype)
        let v = try deviceInput(ctx, b * h * vd, 3, -1...1, dtype), beta = try deviceInput(ctx, b * h, 5, 0...1, dtype)
        let g = try deviceInput(ctx, b * h * kd, 4, -0.1 ... -0.01, dtype)
        var cells: [String] = []
        for m in RecurrentMechanism.allCases {
            let gate = (m == .simpleGLA || m == .gatedDeltaRule) ? 1 : m == .gla ? kd : 0
            let delta = m.isDelta
            let t = try CUDABench.time(context: ctx, warmup: 5, iterations: 50) {
                try CUDARecurrentStep.step(m, q: q, k: k, v: v, g: gate > 0 ? g : nil, beta: delta ? beta : nil, state: state, o: o,
                                           batch: b, heads: h, keyDim: kd, valueDim: vd, dtype: dtype)
            }
            let bytes = 2 * stateBytes + b * h * (2 * kd + vd + gate + (delta ? 1 : 0)) * e + b * h * vd * 4
            let rate = Double(bytes) / (t.median * 1e-3) / 1e9
            cells.append(String(format: "%@ %.4f ms %.0f GB/s (%.0f%%)", m.rawValue, t.median, rate, 100 * rate / copy.gbps))
        }
        print("bench step \(dtype.rawValue) B=\(b) H=\(h) K=\(kd) V=\(vd): " + cells.joined(separator: "; "))
        if dtype == .bfloat16 {
            // Variant: 16 warps per block (half the rows per warp), checked against the default on the same state.
            let s8 = try CUDABuffer(context: ctx, byteCount: stateBytes), s16 = try CUDABuffer(context: ctx, byteCount: stateBytes)
            let o16 = try CUDABuffer(context: ctx, byteCount: b * h * vd * 4)
            try s8.copy(from: state)
            try s16.copy(from: state)
            try CUDARecurrentStep.step(.gatedDeltaRule, q: q, k: k, v: v, g: g, beta: beta, state: s8, o: o, batch: b, heads: h,
                                       keyDim: kd, valueDim: vd, dtype: dtype)
            try CUDARecurrentStep.step(.gatedDeltaRule, q: q, k: k, v: v, g: g, beta: beta, state: s16, o: o16, batch: b, heads: h,
                                       keyDim: kd, valueDim: vd, dtype: dtype, warpsPerBlock: 16)
            let es = ErrorStats(try s16.download(Float.self, count: stateBytes / 4), try s8.download(Float.self, count: stateBytes / 4))
            let eo = ErrorStats(try o16.download(Float.self, count: b * h * vd), try o.download(Float.self, count: b * h * vd))
            var row: [String] = []
            for m in [RecurrentMechanism.linearAttention, .gla, .gatedDeltaRule] {
                let gate = m == .gatedDeltaRule ? 1 : m == .gla ? kd : 0
                let delta = m == .gatedDeltaRule
                let t = try CUDABench.time(context: ctx, warmup: 5, iterations: 50) {
                    try CUDARecurrentStep.step(m, q: q, k: k, v: v, g: gate > 0 ? g : nil, beta: delta ? beta : nil, state: s16,
                                               o: o16, batch: b, heads: h, keyDim: kd, valueDim: vd, dtype: dtype, warpsPerBlock: 16)
                }
                let bytes = 2 * stateBytes + b * h * (2 * kd + vd + gate + (delta ? 1 : 0)) * e + b * h * vd * 4
                let rate = Double(bytes) / (t.median * 1e-3) / 1e9
                row.append(String(format: "%@ %.4f ms %.0f GB/s (%.0f%%)", m.rawValue, t.median, rate, 100 * rate / copy.gbps))
            }
            print("bench step variant 16 warps/block \(dtype.rawValue): " + row.joined(separator: "; ") + "; vs 8 warps: state \(es), o \(eo)")
        }
    }
}

/// Split-KV decode vs the flash kernel (`CUDAAttention.forward`, tensor cores) at T = 1, H = 32, Hkv = 8, D = 128, bf16,
/// B 1...8, S 32k...128k; K/V bytes read once per call vs a device copy's rate. Returns failures of the agreement check.
private func benchSplitKV(_ ctx: CUDAContext) throws -> Int {
    let (hq, hkv, d) = (32, 8, 128)
    let (maxB, maxS) = (8, 131072)
    let kvCount = maxB * maxS * hkv * d
    let copy = try copyRate(ctx, bytes: 1 << 30)
    print(String(format: "bench d2d copy 1 GiB: median %.3f ms, %.0f GB/s (read + write)", copy.ms, copy.gbps))
    var failures = 0
    // Agreement at a long KV with random data (B 2, S 32768): split-KV vs the flash kernel, both bf16 in, fp32 out.
    do {
        let shape = CUDAAttentionShape(batch: 2, queryLength: 1, keyLength: 32768, queryHeads: hq, kvHeads: hkv, headDim: d)
        let q = try deviceInput(ctx, 2 * hq * d, 1, -2...2, .bfloat16)
        let k = try deviceInput(ctx, 2 * 32768 * hkv * d, 2, -2...2, .bfloat16), v = try deviceInput(ctx, 2 * 32768 * hkv * d, 3, -2...2, .bfloat16)
        let o1 = try CUDABuffer(context: ctx, byteCount: 2 * hq * d * 4), o2 = try CUDABuffer(context: ctx, byteCount: 2 * hq * d * 4)
        let l1 = try CUDABuffer(context: ctx, byteCount: 2 * hq * 4), l2 = try CUDABuffer(context: ctx, byteCount: 2 * hq * 4)
        try CUDASplitKV.forward(q: q, k: k, v: v, o: o1, lse: l1, shape: shape, causal: true, outputDType: .float32)
        try CUDAAttention.forward(q: q, k: k, v: v, o: o2, lse: l2, shape: shape, causal: true, dtype: .bfloat16,
                                  outputDType: .float32, kernel: .portable)
        let eo = ErrorStats(try o1.download(Float.self, count: 2 * hq * d), try o2.download(Float.self, count: 2 * hq * d))
        let el = ErrorStats(try l1.download(Float.self, count: 2 * hq), try l2.download(Float.self, count: 2 * hq))
        let ok = eo.relativeRMS <= 2e-3 && el.relativeRMS <= 2e-3
        if !ok { failures += 1 }
        print("\(ok ? "ok  " : "FAIL") split_kv vs portable flash kernel, \(shape) bf16 random: o \(eo); lse \(el)")
    }
    let q = try deviceInput(ctx, maxB * hq * d, 1, -1...1, .bfloat16)
    let k = try CUDABuffer(context: ctx, byteCount: kvCount * 2), v = try CUDABuffer(context: ctx, byteCount: kvCount * 2)
    try k.fill(byte: 0x3c)  // bf16 0x3c3c ~ 0.0115: the timing does not depend on the values
    try v.fill(byte: 0x3d)
    let o = try CUDABuffer(context: ctx, byteCount: maxB * hq * d * 2), lse = try CUDABuffer(context: ctx, byteCount: maxB * hq * 4)
    for s in [32768, 65536, 131072] {
        for b in [1, 2, 4, 8] {
            let shape = CUDAAttentionShape(batch: b, queryLength: 1, keyLength: s, queryHeads: hq, kvHeads: hkv, headDim: d)
            // The KV of a smaller (B, S) must be contiguous [B, S, Hkv, D]: the prefix of the big buffer is.
            let parts = CUDASplitKV.defaultPartitions(shape, context: ctx)
            let work = try CUDABuffer(context: ctx, byteCount: CUDASplitKV.workspaceBytes(shape, partitions: parts))
            let split = try CUDABench.time(context: ctx, warmup: 3, iterations: 20) {
                try CUDASplitKV.forward(q: q, k: k, v: v, o: o, lse: lse, shape: shape, causal: true, partitions: parts,
                                        dtype: .bfloat16, outputDType: .bfloat16, workspace: work)
            }
            let flash = try CUDABench.time(context: ctx, warmup: 2, iterations: 5) {
                try CUDAAttention.forward(q: q, k: k, v: v, o: o, lse: lse, shape: shape, causal: true, dtype: .bfloat16,
                                          outputDType: .bfloat16, kernel: .auto)
            }
            let bytes = Double(2 * b * s * hkv * d * 2)
            let rate = bytes / (split.median * 1e-3) / 1e9
            if s == 131072 && (b == 1 || b == 8) {
                // Tuning variant: 2 key groups per warp step instead of 4 (fewer registers, less in flight).
                let t2 = try CUDABench.time(context: ctx, warmup: 3, iterations: 20) {
                    try CUDASplitKV.forward(q: q, k: k, v: v, o: o, lse: lse, shape: shape, causal: true, partitions: parts,
                                            dtype: .bfloat16, outputDType: .bfloat16, workspace: work, options: ["-DLINEA_SK_U16=2"])
                }
                print(String(format: "bench split_kv variant -DLINEA_SK_U16=2 %@: %.4f ms, %.0f GB/s", shape.description, t2.median,
                             bytes / (t2.median * 1e-3) / 1e9))
            }
            print(String(format: "bench split_kv decode %@ bf16: split-KV %.4f ms (%d partitions) %.0f GB/s = %.0f%% of d2d copy; flash kernel %.4f ms (%.0f GB/s); split-KV %.1fx faster",
                         shape.description, split.median, parts, rate, 100 * rate / copy.gbps, flash.median,
                         bytes / (flash.median * 1e-3) / 1e9, flash.median / split.median))
        }
    }
    return failures
}

/// Block-sparse attention at T = S = 8192, B 1, H 16, D 128, bf16, 64 x 64 blocks: density 1 vs 0.1 (time should
/// scale with density), beside the portable dense flash kernel (same CUDA-core design) and the tensor-core one.
private func benchBlockSparse(_ ctx: CUDAContext) throws {
    let (t, h, d) = (8192, 16, 128)
    let shape = CUDAAttentionShape(batch: 1, queryLength: t, keyLength: t, queryHeads: h, kvHeads: h, headDim: d)
    let n = t * h * d
    let q = try deviceInput(ctx, n, 1, -1...1, .bfloat16), k = try deviceInput(ctx, n, 2, -1...1, .bfloat16)
    let v = try deviceInput(ctx, n, 3, -1...1, .bfloat16)
    let o = try CUDABuffer(context: ctx, byteCount: n * 2)
    var cells: [String] = []
    for density: Float in [1, 0.1] {
        let mask = try BlockMask.random(B: 1, H: h, T: t, S: t, blockRows: 64, blockKeys: 64, density: density, seed: 4)
        let mb = try CUDABuffer(context: ctx, copying: mask.values)
        let time = try CUDABench.time(context: ctx, warmup: 1, iterations: 3) {
            try CUDABlockSparse.forward(q: q, k: k, v: v, mask: mb, maskShape: mask.shape, blockRows: 64, blockKeys: 64,
                                        o: o, lse: nil, shape: shape, causal: false, dtype: .bfloat16, outputDType: .bfloat16)
        }
        cells.append(String(format: "density %.1f %.3f ms", density, time.median))
    }
    for kernel in [CUDAAttention.Kernel.portable, .tensorCore] {
        let time = try CUDABench.time(context: ctx, warmup: 1, iterations: 3) {
            try CUDAAttention.forward(q: q, k: k, v: v, o: o, lse: nil, shape: shape, causal: false, dtype: .bfloat16,
                                      outputDType: .bfloat16, kernel: kernel)
        }
        cells.append(String(format: "dense flash %@ %.3f ms", kernel.rawValue, time.median))
    }
    print("bench block_sparse \(shape) non-causal bf16 64x64 blocks: " + cells.joined(separator: "; "))
}
