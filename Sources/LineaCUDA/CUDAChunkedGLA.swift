import Foundation
import Linea

/// Chunked forward of gla (gated linear attention with a log gate per key channel, fla's chunk_gla) on the GPU:
/// tensor cores, fp32 state. Design (Kernels/ChunkedGLAKernel.swift): one block per (V slice, head, batch[, sequence
/// segment]) walks its chunks in order with the state in registers; the per-channel decays enter as scaled bf16
/// hi + lo operands, the intra-chunk scores use one reference row per 16-row block (a direct sum on the diagonal block
/// for gates too steep for that). Long sequences with few heads run in parallel segments (two launches).
public enum CUDAChunkedGLA {
    /// Runs gla over `inputs` (fla layout, as `Recurrence.forward(.gla, ...)`: g `[B,T,H,K]` log gates <= 0) on the
    /// GPU. q, k, v are uploaded as bf16 (rounded to nearest even); g and the state stay fp32. Returns o `[B,T,H,V]`
    /// (fp32, not rounded) and the final state `[B,H,K,V]`. Takes K and V in {64, 128}, `chunkSize` 64, `dtype`
    /// `.bfloat16`; `useQKL2Norm` is applied on the host; `normalize` is not supported (throws).
    /// O(B·H·T·(K·V + 64·(K+V))) work on the device, plus the transfers.
    public static func forward(
        _ inputs: RecurrenceInputs, chunkSize: Int = 64, dtype: DType = .bfloat16, valueBlock: Int? = nil,
        context: CUDAContext? = nil
    ) throws -> RecurrenceOutput {
        try check(chunkSize: chunkSize, dtype: dtype, normalize: inputs.normalize)
        var x = inputs
        try x.q.expectRank(4, "q", layout: "[B,T,H,K]")
        try x.v.expectRank(4, "v", layout: "[B,T,H,V]")
        let (B, T, H, K) = (x.q.shape[0], x.q.shape[1], x.q.shape[2], x.q.shape[3])
        let V = x.v.shape[3]
        try x.k.expectShape([B, T, H, K], "k")
        try x.v.expectShape([B, T, H, V], "v")
        guard let g = x.g else { throw LineaError.invalidArgument(argument: "g", expected: "a log gate [B,T,H,K]", actual: "none") }
        try g.expectShape([B, T, H, K], "g")
        if let beta = x.beta {
            throw LineaError.invalidArgument(argument: "beta", expected: "none (gla is not a delta rule)", actual: "shape \(beta.shape)")
        }
        if let s = x.initialState { try s.expectShape([B, H, K, V], "initial_state") }
        if x.validate {
            // The ranges the CPU forms check (O(inputs)); `validate = false` skips them for trusted inputs.
            if let i = g.scalars.firstIndex(where: { !($0 <= 0) }) {
                throw LineaError.invalidArgument(argument: "g", expected: "log gates <= 0", actual: "\(g.scalars[i]) at flat index \(i)")
            }
            for (t, name) in [(x.q, "q"), (x.k, "k"), (x.v, "v"), (x.initialState, "initial_state")] {
                if let t, let i = t.scalars.firstIndex(where: { !$0.isFinite }) {
                    throw LineaError.invalidArgument(argument: name, expected: "finite values", actual: "\(t.scalars[i]) at flat index \(i)")
                }
            }
        }
        let shape = CUDAChunkedShape(batch: B, length: T, heads: H, keyDim: K, valueDim: V)
        try checkShape(shape)
        if T == 0 {
            let state = try x.initialState ?? Tensor(zeros: [B, H, K, V])
            return RecurrenceOutput(o: try Tensor(zeros: [B, 0, H, V]), finalState: state)
        }
        let ctx = try context ?? CUDABackend.shared
        if x.useQKL2Norm {
            x.q = try l2Normalized(x.q)
            x.k = try l2Normalized(x.k)
        }
        func bf16(_ t: Tensor) throws -> CUDABuffer { try CUDABuffer(context: ctx, copying: t.scalars.map(HalfPrecision.bfloat16Bits)) }
        let qb = try bf16(x.q), kb = try bf16(x.k), vb = try bf16(x.v)
        let gb = try CUDABuffer(context: ctx, copying: g.scalars)
        let h0 = try x.initialState.map { try CUDABuffer(context: ctx, copying: $0.scalars) }
        let ht = try CUDABuffer(context: ctx, byteCount: B * H * K * V * 4)
        let ob = try CUDABuffer(context: ctx, byteCount: B * T * H * V * 4)
        try forward(q: qb, k: kb, v: vb, g: gb, initialState: h0, finalState: ht, o: ob, shape: shape, scale: x.scale,
                    outputDType: .float32, valueBlock: valueBlock)
        let o = try Tensor(shape: [B, T, H, V], scalars: ob.download(Float.self, count: B * T * H * V))
        let s = try Tensor(shape: [B, H, K, V], scalars: ht.download(Float.self, count: B * H * K * V))
        return RecurrenceOutput(o: o, finalState: s)
    }

    /// Device-buffer variant (queues the kernels on the buffers' context stream, no transfers). q, k `[B,T,H,K]` and
    /// v `[B,T,H,V]` hold bf16 bits; g fp32 log gates `[B,T,H,K]`; initialState / finalState fp32 `[B,H,K,V]`
    /// (optional); o `[B,T,H,V]` in `outputDType` (`.bfloat16`, `.float32`). `scratch` needs `scratchBytes(shape,
    /// context:)` bytes (split long sequences; allocated per call, with a synchronize, when nil). `valueBlock` (64 or
    /// 128, dividing V; nil: V) is the V slice one block owns. Throws for bad sizes or options.
    public static func forward(
        q: CUDABuffer, k: CUDABuffer, v: CUDABuffer, g: CUDABuffer, initialState: CUDABuffer?, finalState: CUDABuffer?,
        o: CUDABuffer, shape: CUDAChunkedShape, scale: Float? = nil, outputDType: DType = .bfloat16,
        scratch: CUDABuffer? = nil, valueBlock: Int? = nil
    ) throws {
        try checkShape(shape)
        let s = shape
        let (B, T, H, K, V) = (s.batch, s.length, s.heads, s.keyDim, s.valueDim)
        guard T >= 1 else { throw LineaError.invalidArgument(argument: "shape.length", expected: ">= 1", actual: "\(T)") }
        guard outputDType == .float32 || outputDType == .bfloat16 else {
            throw LineaError.invalidArgument(argument: "outputDType", expected: "float32 or bfloat16", actual: "\(outputDType)")
        }
        let scaleValue = scale ?? 1 / Float(K).squareRoot()
        guard scaleValue.isFinite else {
            throw LineaError.invalidArgument(argument: "scale", expected: "a finite value", actual: "\(scaleValue)")
        }
        if let valueBlock, ![64, 128].contains(valueBlock) || V % valueBlock != 0 {
            throw LineaError.invalidArgument(argument: "valueBlock", expected: "64 or 128, dividing V = \(V)", actual: "\(valueBlock)")
        }
        var needs: [(String, CUDABuffer, Int)] = [
            ("q", q, B * T * H * K * 2), ("k", k, B * T * H * K * 2), ("v", v, B * T * H * V * 2),
            ("g", g, B * T * H * K * 4), ("o", o, B * T * H * V * outputDType.byteCount),
        ]
        if let initialState { needs.append(("initialState", initialState, B * H * K * V * 4)) }
        if let finalState { needs.append(("finalState", finalState, B * H * K * V * 4)) }
        for (name, buffer, bytes) in needs where buffer.byteCount < bytes {
            throw LineaError.shapeMismatch(argument: name, expected: ">= \(bytes) bytes for \(s)", actual: "\(buffer.byteCount) bytes")
        }
        let ctx = q.context
        guard ctx.computeCapability.major >= 8 else {
            throw LineaError.invalidArgument(argument: "device", expected: "sm_80 or newer (bf16 mma.sync)", actual: ctx.architecture)
        }
        let plan = Plan(s, multiprocessors: ctx.multiprocessorCount, valueBlock: valueBlock)
        var scratchOwned: CUDABuffer? = nil
        var work: CUDABuffer? = nil
        if plan.scratchBytes > 0 {
            if let scratch {
                guard scratch.byteCount >= plan.scratchBytes else {
                    throw LineaError.shapeMismatch(
                        argument: "scratch", expected: ">= \(plan.scratchBytes) bytes (scratchBytes)", actual: "\(scratch.byteCount) bytes")
                }
                work = scratch
            } else {
                scratchOwned = try CUDABuffer(context: ctx, byteCount: plan.scratchBytes)
                work = scratchOwned
            }
        }
        let bv = plan.valueBlock
        let f = try ctx.function(source: CUDAKernels.chunkedGLA, name: "linea_gla_fwd_k\(K)_v\(bv)")
        // Mirrors the kernel's layout: q, k, v tiles x2, state hi + lo (bf16); gates and row-group sums (fp32).
        let smem = (4 * 64 * (K + 8) + 2 * 64 * (bv + 8) + 2 * K * (bv + 8)) * 2 + (64 * (K + 4) + 1024) * 4
        let segments: (UInt64, UInt64) = plan.segments > 1
            ? (work!.address, work!.address + UInt64(plan.segmentStateBytes)) : (0, 0)
        func launch(stateOnly: Bool) throws {
            try ctx.launch(
                f, grid: (V / bv, H, B * plan.segments), block: (256, 1, 1), sharedBytes: smem,
                arguments: [.pointer(q.address), .pointer(k.address), .pointer(v.address), .pointer(g.address),
                            .pointer(stateOnly ? 0 : initialState?.address ?? 0), .pointer(stateOnly ? 0 : finalState?.address ?? 0),
                            .pointer(o.address), .int32(outputDType == .bfloat16 ? 1 : 0), .int32(Int32(T)), .int32(Int32(H)),
                            .int32(Int32(V)), .float(scaleValue), .int32(Int32(plan.segmentChunks)), .int32(stateOnly ? 1 : 0),
                            .pointer(segments.0), .pointer(segments.1)])
        }
        // Pass 1 (split sequences): the end state of every segment but the last from a zero state; pass 2 carries h0.
        if plan.segments > 1 { try launch(stateOnly: true) }
        try launch(stateOnly: false)
        if scratchOwned != nil { try ctx.synchronize() }  // keep the owned scratch alive until the kernels finish
    }

    /// Launch plan: the V slice per block (V unless chosen), and the number of sequence segments run in parallel when
    /// B·H·V/BV blocks alone would leave SMs idle (each segment's end state from a zero state first).
    struct Plan {
        let valueBlock: Int, segmentChunks: Int, segments: Int, segmentStateBytes: Int, scratchBytes: Int

        init(_ s: CUDAChunkedShape, multiprocessors: Int, valueBlock: Int?) {
            let (B, T, H, K, V) = (s.batch, s.length, s.heads, s.keyDim, s.valueDim)
            let bv = valueBlock ?? V
            let chunks = max(1, (T + 63) / 64)
            let blocks = B * H * (V / bv)
            var perSegment = chunks
            if blocks < multiprocessors && chunks >= 8 {
                let p = min(max(2, multiprocessors / blocks), chunks / 4)
                perSegment = (chunks + p - 1) / p
            }
            self.valueBlock = bv
            segmentChunks = perSegment
            segments = (chunks + perSegment - 1) / perSegment
            segmentStateBytes = segments > 1 ? B * segments * H * K * V * 4 : 0
            scratchBytes = segments > 1 ? segmentStateBytes + B * segments * H * K * 4 : 0
        }
    }

    /// Bytes of scratch the device variant needs for this shape: the segment end states and gate totals when the
    /// sequence is split (else 0). O(1).
    public static func scratchBytes(_ s: CUDAChunkedShape, context: CUDAContext, valueBlock: Int? = nil) -> Int {
        Plan(s, multiprocessors: context.multiprocessorCount, valueBlock: valueBlock).scratchBytes
    }

    /// Matmul FLOPs of the chunked forward as computed (full 64 x 64 blocks). O(1).
    public static func flops(_ s: CUDAChunkedShape) -> Double {
        Recurrence.chunkedFLOPs(.gla, B: s.batch, T: s.length, H: s.heads, K: s.keyDim, V: s.valueDim, chunkSize: 64)
    }

    private static func check(chunkSize: Int, dtype: DType, normalize: Bool) throws {
        guard chunkSize == 64 else {
            throw LineaError.invalidArgument(argument: "chunkSize", expected: "64 (CUDA chunked kernels)", actual: "\(chunkSize)")
        }
        guard dtype == .bfloat16 else {
            throw LineaError.invalidArgument(argument: "dtype", expected: "bfloat16 (CUDA chunked kernels)", actual: "\(dtype)")
        }
        guard !normalize else {
            throw LineaError.invalidArgument(argument: "normalize", expected: "false (linear_attn only)", actual: "true")
        }
    }

    private static func checkShape(_ s: CUDAChunkedShape) throws {
        for (name, value) in [("batch", s.batch), ("heads", s.heads)] where value < 1 {
            throw LineaError.invalidArgument(argument: "shape.\(name)", expected: ">= 1", actual: "\(value)")
        }
        guard s.length >= 0 else { throw LineaError.invalidArgument(argument: "shape.length", expected: ">= 0", actual: "\(s.length)") }
        guard s.keyDim == 64 || s.keyDim == 128 else {
            throw LineaError.invalidArgument(argument: "K", expected: "64 or 128 (CUDA gla kernel)", actual: "\(s.keyDim)")
        }
        guard s.valueDim == 64 || s.valueDim == 128 else {
            throw LineaError.invalidArgument(argument: "V", expected: "64 or 128 (CUDA gla kernel)", actual: "\(s.valueDim)")
        }
    }

    /// `x / sqrt(sum x^2 + 1e-6)` over the last axis (fla's use_qk_l2norm_in_kernel). O(count).
    private static func l2Normalized(_ x: Tensor) throws -> Tensor {
        let n = x.shape.last ?? 1
        var out = x.scalars
        for start in stride(from: 0, to: out.count, by: max(1, n)) {
            var sum: Float = 0
            for i in start..<(start + n) { sum += out[i] * out[i] }
            let inv = 1 / (sum + 1e-6).squareRoot()
            for i in start..<(start + n) { out[i] *= inv }
        }
        return try Tensor(shape: x.shape, scalars: out)
    }
}
