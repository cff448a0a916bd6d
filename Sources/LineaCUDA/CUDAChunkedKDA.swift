import Foundation
import Linea

/// Chunked forward of kda (Kimi Delta Attention: the delta rule with a log decay per key channel, fla's chunk_kda) on
/// the GPU: tensor cores, fp32 state, bf16 q, k, v. Design (Kernels/cu/chunked_kda.cu): a prepass per (chunk, value
/// head) builds what does not depend on the state (the WY form w, u, the decayed q and k, the intra-chunk scores, with
/// one reference row per 16-row block and a direct sum for steep gates); a walk per (V slice, value head) then carries
/// the state in registers through the chunks. Long sequences with few heads are cut into segments walked in parallel:
/// an end-state pass gives each segment's end state from zero and its K x K transition, a scan joins them (as the
/// delta rules' `CUDAChunked` does).
package enum CUDAChunkedKDA {
    /// Runs kda over `inputs` (fla layout, as `Recurrence.forward(.kda, ...)`: g `[B,T,HV,K]` activated log gates <= 0,
    /// beta `[B,T,HV]`, HV a multiple of q/k's H) on the GPU with q, k, v uploaded as bf16 (the only input type of this
    /// kernel: throws for others); g, beta and the state stay fp32. Returns o `[B,T,HV,V]` (fp32, not rounded) and the
    /// final state `[B,HV,K,V]`. Takes K and V in {64, 128}, `chunkSize` 64; `useQKL2Norm` is applied on the host;
    /// in-kernel activations are not (throws). O(B·HV·T·(K·V + 64·(K+V))) work on the device, plus the transfers.
    public static func forward(
        _ inputs: RecurrenceInputs, chunkSize: Int = 64, dtype: DType = .bfloat16, valueBlock: Int? = nil,
        context: CUDAContext? = nil
    ) throws -> RecurrenceOutput {
        try CUDAChunked.checkOptions(chunkSize: chunkSize, dtype: dtype, normalize: inputs.normalize)
        guard dtype == .bfloat16 else {
            throw LineaError.invalidArgument(argument: "dtype", expected: "bfloat16 (kda's chunked CUDA kernel)", actual: "\(dtype)")
        }
        guard inputs.activations.isEmpty else {
            throw LineaError.invalidArgument(argument: "activations", expected: "none (activate g and beta first)", actual: "in-kernel activations")
        }
        let shape = try CUDAChunked.checkedShape(.kda, inputs)
        return try CUDAChunked.run(.kda, inputs, shape, dtype: .bfloat16, context: context) { q, k, v, g, beta, h0, ht, o in
            try forward(q: q, k: k, v: v, g: g!, beta: beta!, initialState: h0, finalState: ht, o: o, shape: shape,  // checkInputs
                        scale: inputs.scale, outputDType: .float32, valueBlock: valueBlock)
        }
    }

    /// Device-buffer variant (queues the kernels on the buffers' context stream, no transfers). q, k `[B,T,H,K]` and
    /// v `[B,T,HV,V]` hold bf16 bits; g fp32 log gates `[B,T,HV,K]`; beta fp32 `[B,T,HV]`; initialState / finalState
    /// fp32 `[B,HV,K,V]` (optional); o `[B,T,HV,V]` in `outputDType` (`.bfloat16`, `.float32`). `scratch` needs
    /// `scratchBytes(shape, context:)` bytes (allocated per call, with a synchronize, when nil). `valueBlock` (64 or
    /// 128, dividing V; nil: chosen per shape) is the V slice one walk block owns. Throws for bad sizes or options.
    public static func forward(
        q: CUDABuffer, k: CUDABuffer, v: CUDABuffer, g: CUDABuffer, beta: CUDABuffer, initialState: CUDABuffer?,
        finalState: CUDABuffer?, o: CUDABuffer, shape: CUDAChunkedShape, scale: Float? = nil,
        outputDType: DType = .bfloat16, scratch: CUDABuffer? = nil, valueBlock: Int? = nil
    ) throws {
        let s = shape
        let (B, T, H, HV, K, V) = (s.batch, s.length, s.heads, s.valueHeads, s.keyDim, s.valueDim)
        let scaleValue = try CUDAChunked.launchScale(s, outputDType: outputDType, scale: scale)
        if let valueBlock, ![64, 128].contains(valueBlock) || V % valueBlock != 0 {
            throw LineaError.invalidArgument(argument: "valueBlock", expected: "64 or 128, dividing V = \(V)", actual: "\(valueBlock)")
        }
        var needs: [(String, CUDABuffer?, Int)] = [
            ("q", q, B * T * H * K * 2), ("k", k, B * T * H * K * 2), ("v", v, B * T * HV * V * 2),
            ("g", g, B * T * HV * K * 4), ("beta", beta, B * T * HV * 4), ("o", o, B * T * HV * V * outputDType.byteCount),
        ]
        if let initialState { needs.append(("initialState", initialState, B * HV * K * V * 4)) }
        if let finalState { needs.append(("finalState", finalState, B * HV * K * V * 4)) }
        try CUDAChunked.checkBuffers(needs, s, for: "kda")
        let ctx = q.context
        let plan = Plan(s, multiprocessors: ctx.multiprocessorCount, valueBlock: valueBlock)
        let (work, owned) = try CUDAChunked.workspace(plan.scratchBytes, scratch: scratch, context: ctx)
        let at = plan.offsets.map { work!.address + UInt64($0) }  // w, q 2^G hi/lo, k 2^{G_last-G} hi/lo, u, A_qk hi/lo, 2^{G_last}
        let options = CUDAKernels.options(group: s.group)
        let prep = try ctx.entry("linea_kda_prep_k\(K)_v\(V)", of: CUDAKernels.chunkedKDA, options: options)
        // Mirrors lk_kda_prep's layout: q, k, v tiles (bf16); gates, L / T, beta, row-group sums (fp32).
        let prepShared = (2 * 64 * (K + 8) + 64 * (V + 8)) * 2 + (64 * (K + 4) + 64 * 68 + 64 + 512) * 4
        try ctx.launch(
            prep, grid: (plan.chunks, HV, B), block: (128, 1, 1), sharedBytes: prepShared,
            arguments: [.pointer(q.address), .pointer(k.address), .pointer(v.address), .pointer(g.address),
                        .pointer(beta.address), .int32(Int32(T)), .int32(Int32(HV)), .int32(Int32(s.group)), .float(scaleValue),
                        .pointer(at[0]), .pointer(at[5]), .pointer(at[1]), .pointer(at[2]), .pointer(at[3]), .pointer(at[4]),
                        .pointer(at[6]), .pointer(at[7]), .pointer(at[8])])
        var segments: (UInt64, UInt64) = (0, 0)
        if plan.segments > 1 {
            // Every segment's end state from zero and its transition M (lk_kda_end: 4 warps per 64 columns of the
            // state, then of the identity); the scan applies S_{p+1} = M_p S_p + E_p from h0 into the E slots.
            segments = (at[9], at[10])
            let end = try ctx.entry("linea_kda_end_k\(K)", of: CUDAKernels.chunkedKDA, options: options)
            try ctx.launch(
                end, grid: ((V + K) / 64, HV, B * plan.segments), block: (128, 1, 1),
                sharedBytes: 6 * 64 * (K + 8) * 2 + 2 * 64 * 68 * 4 + 2 * K * 4,  // decayed k hi/lo, w; u; 2^{G_last} (x2)
                arguments: [.pointer(at[3]), .pointer(at[4]), .pointer(at[0]), .pointer(at[5]), .pointer(at[8]),
                            .pointer(initialState?.address ?? 0), .int32(Int32(T)), .int32(Int32(HV)), .int32(Int32(V)),
                            .int32(Int32(plan.segmentChunks)), .pointer(segments.0), .pointer(segments.1)])
            let scan = try ctx.function(source: CUDAKernels.chunkedScan, name: "linea_chunk_seg_scan_delta")
            try ctx.launch(
                scan, grid: (V / 32, HV, B), block: (256, 1, 1), sharedBytes: 0,
                arguments: [.pointer(segments.0), .pointer(segments.1), .pointer(initialState?.address ?? 0),
                            .int32(Int32(plan.segments)), .int32(Int32(HV)), .int32(Int32(K)), .int32(Int32(V))])
        }
        let bv = plan.valueBlock
        let walk = try ctx.entry("linea_kda_walk_k\(K)_v\(bv)", of: CUDAKernels.chunkedKDA, options: options)
        let walkShared = Self.walkSharedBytes(keyDim: K, valueBlock: bv)
        try ctx.launch(
            walk, grid: (V / bv, HV, B * plan.segments), block: (2 * bv, 1, 1), sharedBytes: walkShared,
            arguments: [.pointer(at[1]), .pointer(at[2]), .pointer(at[3]), .pointer(at[4]), .pointer(at[0]), .pointer(at[5]),
                        .pointer(at[6]), .pointer(at[7]), .pointer(at[8]), .pointer(initialState?.address ?? 0),
                        .pointer(finalState?.address ?? 0), .pointer(o.address), .int32(outputDType == .bfloat16 ? 1 : 0),
                        .int32(Int32(T)), .int32(Int32(HV)), .int32(Int32(V)), .float(scaleValue),
                        .int32(Int32(plan.segmentChunks)), .pointer(segments.0)])
        try withExtendedLifetime(work) { if owned { try ctx.synchronize() } }  // an owned scratch outlives the kernels
    }

    /// The walk's shared memory, mirroring lk_kda_walk's layout: decayed k hi/lo and A_qk hi/lo x2, q 2^G hi/lo, w
    /// (bf16); u, 2^{G_last} x2 (fp32). O(1).
    static func walkSharedBytes(keyDim K: Int, valueBlock bv: Int) -> Int {
        (7 * 64 * (K + 8) + 4 * 64 * 72) * 2 + (64 * (bv + 4) + 2 * K) * 4
    }

    /// Whether the kernels run on `context`'s device with keys `keyDim` (64 or 128) wide: sm_80 or newer and the
    /// narrowest walk's shared memory within the per-block limit (A100's 163 KB holds K = 64 only). O(1).
    public static func fits(keyDim: Int, context: CUDAContext) -> Bool {
        context.computeCapability.major >= 8 && walkSharedBytes(keyDim: keyDim, valueBlock: 64) <= context.maxSharedMemoryPerBlock
    }

    /// Launch plan: the walk's V slice (BV = 128 with 8 warps when V = 128 and B·HV blocks fill the SMs, else 64 with 4
    /// warps, for more blocks; one walk block per SM either way, by its shared memory), the sequence segments (below
    /// 3/4 of the SMs in walk blocks and from 8 chunks on, about one block per SM, each segment at least 4 chunks)
    /// and the scratch layout. Untuned: for measurements `LINEA_KDA_BV` (64, 128) forces the V slice where `valueBlock`
    /// is nil, and `LINEA_KDA_SEGMENTS` the number of segments (1: no cut).
    struct Plan {
        let valueBlock: Int, chunks: Int, segmentChunks: Int, segments: Int, offsets: [Int], scratchBytes: Int

        init(_ s: CUDAChunkedShape, multiprocessors: Int, valueBlock: Int?) {
            let (B, T, H, K, V) = (s.batch, s.length, s.valueHeads, s.keyDim, s.valueDim)  // H: the state heads here
            chunks = max(1, (T + 63) / 64)
            let environment = ProcessInfo.processInfo.environment
            let forcedBlock = Int(environment["LINEA_KDA_BV"] ?? "").flatMap { [64, 128].contains($0) && V % $0 == 0 ? $0 : nil }
            let bv = valueBlock ?? forcedBlock ?? (V == 128 && B * H >= multiprocessors ? 128 : 64)
            self.valueBlock = bv
            let blocks = B * H * (V / bv)
            var wanted = blocks < multiprocessors * 3 / 4 && chunks >= 8 ? min(max(2, multiprocessors / blocks), chunks / 4) : 1
            if let forced = Int(environment["LINEA_KDA_SEGMENTS"] ?? ""), forced >= 1 {
                wanted = min(forced, chunks, max(1, 65_535 / max(B, 1)))  // grid.z = B · segments
            }
            segmentChunks = (chunks + wanted - 1) / wanted
            segments = (chunks + segmentChunks - 1) / segmentChunks
            // w, q 2^G hi, lo, k 2^{G_last - G} hi, lo [B,T,HV,K] bf16; u [B,T,HV,V] fp32; A_qk hi, lo [B,T,HV,64]
            // bf16; 2^{G_last} [B,chunks,HV,K] fp32; split runs: the segment end states [B·P,HV,K,V] and transitions
            // [B·P,HV,K,K] fp32 (every size a multiple of 16 bytes).
            let rows = B * T * H
            let split = segments > 1 ? [B * segments * H * K * V * 4, B * segments * H * K * K * 4] : []
            let sizes = [Int](repeating: rows * K * 2, count: 5) + [rows * V * 4, rows * 64 * 2, rows * 64 * 2, B * chunks * H * K * 4]
                + split
            var offsets: [Int] = []
            var total = 0
            for size in sizes {
                offsets.append(total)
                total += size
            }
            self.offsets = offsets
            scratchBytes = total
        }
    }

    /// Bytes of scratch the device variant needs for this shape (the prepass's outputs, about
    /// B·T·HV·(10 K + 4 V + 256) bytes, and for split sequences the segments' end states and transitions). O(1).
    public static func scratchBytes(_ s: CUDAChunkedShape, context: CUDAContext, valueBlock: Int? = nil) -> Int {
        Plan(s, multiprocessors: context.multiprocessorCount, valueBlock: valueBlock).scratchBytes
    }

    /// Matmul FLOPs of the chunked forward (`Recurrence.chunkedFLOPs` for kda). O(1).
    public static func flops(_ s: CUDAChunkedShape) -> Double {
        CUDAChunked.flops(.kda, s)
    }
}
