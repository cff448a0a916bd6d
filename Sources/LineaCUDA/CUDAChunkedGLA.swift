import Foundation
import Linea

/// Chunked forward of gla (gated linear attention with a log gate per key channel, fla's chunk_gla) on the GPU:
/// tensor cores, fp32 state. Design (Kernels/ChunkedGLAKernel.swift): one block per (V slice, head, batch[, sequence
/// segment]) walks its chunks in order with the state in registers; the per-channel decays enter as scaled bf16
/// hi + lo operands, the intra-chunk scores use one reference row per 16-row block (a direct sum on the diagonal block
/// for gates too steep for that). Long sequences with few heads run in parallel segments (two launches).
package enum CUDAChunkedGLA {
    /// Runs gla over `inputs` (fla layout, as `Recurrence.forward(.gla, ...)`: g `[B,T,HV,K]` log gates <= 0, HV a
    /// multiple of q/k's H) on the GPU. q, k, v are uploaded in `dtype` (`.bfloat16`: this tensor-core kernel;
    /// `.float16` / `.float32`: the fp32 CUDA-core kernel of `CUDAChunkedSIMT`); g and the state stay fp32. Returns o
    /// `[B,T,HV,V]` (fp32, not rounded) and the final state `[B,HV,K,V]`. Takes K and V in {64, 128}, `chunkSize` 64;
    /// `useQKL2Norm` is applied on the host; `normalize` is not supported (throws).
    /// O(B·HV·T·(K·V + 64·(K+V))) work on the device, plus the transfers.
    public static func forward(
        _ inputs: RecurrenceInputs, chunkSize: Int = 64, dtype: DType = .bfloat16, valueBlock: Int? = nil,
        context: CUDAContext? = nil
    ) throws -> RecurrenceOutput {
        try CUDAChunked.checkOptions(chunkSize: chunkSize, dtype: dtype, normalize: inputs.normalize)
        if dtype != .bfloat16 {  // f32, f16: the fp32 CUDA-core kernel
            return try CUDAChunkedSIMT.forward(.gla, inputs, dtype: dtype, valueBlock: valueBlock, context: context)
        }
        let shape = try CUDAChunked.checkedShape(.gla, inputs)
        return try CUDAChunked.run(.gla, inputs, shape, dtype: .bfloat16, context: context) { q, k, v, g, _, h0, ht, o in
            try forward(q: q, k: k, v: v, g: g!, initialState: h0, finalState: ht, o: o, shape: shape, scale: inputs.scale,  // g: checkInputs
                        outputDType: .float32, valueBlock: valueBlock)
        }
    }

    /// Device-buffer variant (queues the kernels on the buffers' context stream, no transfers). q, k `[B,T,H,K]` and
    /// v `[B,T,HV,V]` hold bf16 bits; g fp32 log gates `[B,T,HV,K]`; initialState / finalState fp32 `[B,HV,K,V]`
    /// (optional); o `[B,T,HV,V]` in `outputDType` (`.bfloat16`, `.float32`). `scratch` needs `scratchBytes(shape,
    /// context:)` bytes (split long sequences; allocated per call, with a synchronize, when nil). `valueBlock` (64 or
    /// 128, dividing V; nil: V) is the V slice one block owns. Throws for bad sizes or options.
    public static func forward(
        q: CUDABuffer, k: CUDABuffer, v: CUDABuffer, g: CUDABuffer, initialState: CUDABuffer?, finalState: CUDABuffer?,
        o: CUDABuffer, shape: CUDAChunkedShape, scale: Float? = nil, outputDType: DType = .bfloat16,
        scratch: CUDABuffer? = nil, valueBlock: Int? = nil
    ) throws {
        let s = shape
        let (B, T, H, HV, K, V) = (s.batch, s.length, s.heads, s.valueHeads, s.keyDim, s.valueDim)
        let scaleValue = try CUDAChunked.launchScale(s, outputDType: outputDType, scale: scale)
        if let valueBlock, ![64, 128].contains(valueBlock) || V % valueBlock != 0 {
            throw LineaError.invalidArgument(argument: "valueBlock", expected: "64 or 128, dividing V = \(V)", actual: "\(valueBlock)")
        }
        var needs: [(String, CUDABuffer?, Int)] = [
            ("q", q, B * T * H * K * 2), ("k", k, B * T * H * K * 2), ("v", v, B * T * HV * V * 2),
            ("g", g, B * T * HV * K * 4), ("o", o, B * T * HV * V * outputDType.byteCount),
        ]
        if let initialState { needs.append(("initialState", initialState, B * HV * K * V * 4)) }
        if let finalState { needs.append(("finalState", finalState, B * HV * K * V * 4)) }
        try CUDAChunked.checkBuffers(needs, s, for: "gla")
        let ctx = q.context
        let plan = Plan(s, multiprocessors: ctx.multiprocessorCount, valueBlock: valueBlock)
        let (work, owned) = try CUDAChunked.workspace(plan.scratchBytes, scratch: scratch, context: ctx)
        let bv = plan.valueBlock
        let f = try ctx.function(source: CUDAKernels.chunkedGLA, name: "linea_gla_fwd_k\(K)_v\(bv)",
                                 options: CUDAKernels.options(group: s.group))
        // Mirrors the kernel's layout: q, k, v tiles x2, state hi + lo (bf16); gates and row-group sums (fp32).
        let smem = (4 * 64 * (K + 8) + 2 * 64 * (bv + 8) + 2 * K * (bv + 8)) * 2 + (64 * (K + 4) + 1024) * 4
        let segments: (UInt64, UInt64) = plan.segments > 1
            ? (work!.address, work!.address + UInt64(plan.segmentStateBytes)) : (0, 0)
        func launch(stateOnly: Bool) throws {
            try ctx.launch(
                f, grid: (V / bv, HV, B * plan.segments), block: (256, 1, 1), sharedBytes: smem,
                arguments: [.pointer(q.address), .pointer(k.address), .pointer(v.address), .pointer(g.address),
                            .pointer(stateOnly ? 0 : initialState?.address ?? 0), .pointer(stateOnly ? 0 : finalState?.address ?? 0),
                            .pointer(o.address), .int32(outputDType == .bfloat16 ? 1 : 0), .int32(Int32(T)), .int32(Int32(HV)),
                            .int32(Int32(s.group)), .int32(Int32(V)), .float(scaleValue), .int32(Int32(plan.segmentChunks)),
                            .int32(stateOnly ? 1 : 0),
                            .pointer(segments.0), .pointer(segments.1)])
        }
        // Pass 1 (split sequences): the end state of every segment but the last from a zero state; pass 2 carries h0.
        if plan.segments > 1 { try launch(stateOnly: true) }
        try launch(stateOnly: false)
        try withExtendedLifetime(work) { if owned { try ctx.synchronize() } }  // an owned scratch outlives the kernels
    }

    /// Launch plan: the V slice per block (V unless chosen), and the number of sequence segments run in parallel when
    /// B·HV·V/BV blocks alone would leave SMs idle (each segment's end state from a zero state first).
    struct Plan {
        let valueBlock: Int, segmentChunks: Int, segments: Int, segmentStateBytes: Int, scratchBytes: Int

        init(_ s: CUDAChunkedShape, multiprocessors: Int, valueBlock: Int?) {
            let (B, T, H, K, V) = (s.batch, s.length, s.valueHeads, s.keyDim, s.valueDim)  // H: the state heads here
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
        CUDAChunked.flops(.gla, s)
    }
}
