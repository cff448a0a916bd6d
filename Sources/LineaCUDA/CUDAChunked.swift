import Foundation
import Linea

/// Sizes of one chunked recurrence call: q, k `[B,T,H,K]`, v and o `[B,T,HV,V]`, state `[B,HV,K,V]`, with HV a
/// multiple of H (grouped value heads, fla's GVA: value head hv reads q/k head hv / (HV/H)).
package struct CUDAChunkedShape: Sendable, Equatable, CustomStringConvertible {
    /// B, T, H (query/key heads), K, V.
    public var batch: Int, length: Int, heads: Int, keyDim: Int, valueDim: Int
    /// HV: value (and state) heads, a multiple of `heads`.
    public var valueHeads: Int

    /// Creates a shape (`valueHeads` H when nil); checked at launch.
    public init(batch: Int, length: Int, heads: Int, valueHeads: Int? = nil, keyDim: Int, valueDim: Int) {
        self.batch = batch; self.length = length; self.heads = heads; self.keyDim = keyDim; self.valueDim = valueDim
        self.valueHeads = valueHeads ?? heads
    }

    /// Value heads per query/key head, HV / H (the kernels' `group`).
    var group: Int { valueHeads / heads }

    /// `B=.. T=.. H=.. [HV=..] K=.. V=..`.
    public var description: String {
        "B=\(batch) T=\(length) H=\(heads)\(valueHeads == heads ? "" : " HV=\(valueHeads)") K=\(keyDim) V=\(valueDim)"
    }
}

/// Chunked forward of the scalar-gated linear recurrences on the GPU (tensor cores, fp32 state): linear_attn,
/// retention, simple_gla, delta_rule, gated_delta_rule (gla, with its vector gate, is `CUDAChunkedGLA`).
/// Design (Kernels/ChunkedKernel.swift): one block per (V slice, head, batch[, sequence segment]) walks its chunks in
/// order with the state in registers (no per-chunk states in memory); long sequences are cut into segments whose
/// start states come from an end-state pass and a scan (for the delta rules, each segment's K x K transition too);
/// the delta rules first run a parallel WY/UT prepass per chunk. README.md has the figures against fla 0.6
/// (lab/compare_gpu.py).
package enum CUDAChunked {
    /// Mechanisms with a CUDA chunked kernel here.
    public static let supported: [RecurrentMechanism] = [.linearAttention, .retention, .simpleGLA, .deltaRule, .gatedDeltaRule]
    /// Every mechanism with a CUDA chunked kernel: `supported` plus gla (`CUDAChunkedGLA`).
    public static let covered: [RecurrentMechanism] = supported + [.gla]

    /// Runs `mechanism` over `inputs` (fla layout, as `Recurrence.forward`) on the GPU. q, k, v are uploaded in
    /// `dtype` (rounded to nearest even): `.bfloat16` runs the tensor-core kernel (fp32 math, bf16 operands),
    /// `.float16` / `.float32` the fp32 CUDA-core kernel (`CUDAChunkedSIMT`); g, beta and the state stay fp32.
    /// Returns o `[B,T,HV,V]` (fp32, not rounded) and the final state `[B,HV,K,V]`. Takes K and V in {64, 128},
    /// `chunkSize` 64; `useQKL2Norm` is applied on the host; the linear_attn normalizer is not supported (throws).
    /// O(B·HV·T·(K·V + 64·(K+V))) work on the device, plus the transfers.
    public static func forward(
        _ mechanism: RecurrentMechanism, _ inputs: RecurrenceInputs, chunkSize: Int = 64, dtype: DType = .bfloat16,
        valueBlock: Int? = nil, context: CUDAContext? = nil
    ) throws -> RecurrenceOutput {
        try check(mechanism: mechanism, chunkSize: chunkSize, dtype: dtype, normalize: inputs.normalize)
        if dtype != .bfloat16 {  // f32, f16: the fp32 CUDA-core kernel
            return try CUDAChunkedSIMT.forward(mechanism, inputs, dtype: dtype, valueBlock: valueBlock, context: context)
        }
        let shape = try checkedShape(mechanism, inputs)
        return try run(mechanism, inputs, shape, dtype: .bfloat16, context: try context ?? CUDABackend.shared) { q, k, v, g, beta, h0, ht, o in
            try forward(mechanism, q: q, k: k, v: v, g: g, beta: beta, initialState: h0, finalState: ht, o: o,
                        shape: shape, scale: inputs.scale, outputDType: .float32, valueBlock: valueBlock)
        }
    }

    /// The host side of every chunked launcher (`CUDAChunkedGLA`'s and `CUDAChunkedSIMT`'s too), after its checks:
    /// for T = 0 the initial (or zero) state and an empty o, without touching the GPU; else q, k, v uploaded as
    /// `dtype` (L2-normalized first with `useQKL2Norm`), g (retention: the per-head decays), beta and the initial
    /// state as fp32, `launch` run on those buffers and fp32 final-state and o buffers, and both downloaded.
    /// O(B·T·(H·K + HV·V) + B·HV·K·V) transfers.
    static func run(
        _ mechanism: RecurrentMechanism, _ inputs: RecurrenceInputs, _ s: CUDAChunkedShape, dtype: DType, context: CUDAContext?,
        _ launch: (_ q: CUDABuffer, _ k: CUDABuffer, _ v: CUDABuffer, _ g: CUDABuffer?, _ beta: CUDABuffer?,
                   _ h0: CUDABuffer?, _ ht: CUDABuffer, _ o: CUDABuffer) throws -> Void
    ) throws -> RecurrenceOutput {
        let (B, T, H, K, V) = (s.batch, s.length, s.valueHeads, s.keyDim, s.valueDim)  // H: the state heads here
        if T == 0 {
            let state = try inputs.initialState ?? Tensor(zeros: [B, H, K, V])
            return RecurrenceOutput(o: try Tensor(zeros: [B, 0, H, V]), finalState: state)
        }
        let ctx = try context ?? CUDABackend.shared
        let x = inputs.useQKL2Norm ? try inputs.qkL2Normalized() : inputs
        let q = try CUDAUpload.buffer(x.q, dtype: dtype, context: ctx)
        let k = try CUDAUpload.buffer(x.k, dtype: dtype, context: ctx)
        let v = try CUDAUpload.buffer(x.v, dtype: dtype, context: ctx)
        let g = mechanism == .retention ? try retentionDecays(heads: H, context: ctx)
            : try x.g.map { try CUDABuffer(context: ctx, copying: $0.scalars) }
        let beta = try x.beta.map { try CUDABuffer(context: ctx, copying: $0.scalars) }
        let h0 = try x.initialState.map { try CUDABuffer(context: ctx, copying: $0.scalars) }
        let ht = try CUDABuffer(context: ctx, byteCount: B * H * K * V * 4)
        let o = try CUDABuffer(context: ctx, byteCount: B * T * H * V * 4)
        try launch(q, k, v, g, beta, h0, ht, o)
        return RecurrenceOutput(o: try Tensor(shape: [B, T, H, V], scalars: o.download(Float.self, count: B * T * H * V)),
                                finalState: try Tensor(shape: [B, H, K, V], scalars: ht.download(Float.self, count: B * H * K * V)))
    }

    /// Device-buffer variant (queues the kernels on the buffers' context stream, no transfers). q, k `[B,T,H,K]` and
    /// v `[B,T,HV,V]` hold bf16 bits; g holds fp32 log gates `[B,T,HV]` (simple_gla, gated_delta_rule) or the per-head
    /// log decays `[HV]` of `retentionDecays` (retention), nil otherwise; beta fp32 `[B,T,HV]` (delta rules);
    /// initialState / finalState fp32 `[B,HV,K,V]` (optional); o `[B,T,HV,V]` in `outputDType` (`.bfloat16`, `.float32`).
    /// `scratch` needs `scratchBytes(mechanism, shape, context:)` bytes (delta rules, split long sequences; allocated
    /// per call, with a synchronize, when nil). `valueBlock` (32, 64 or 128 for the scalar decays, 64 for the delta
    /// rules; nil: chosen per shape) is the V slice one block owns. Throws for bad sizes or options.
    public static func forward(
        _ mechanism: RecurrentMechanism, q: CUDABuffer, k: CUDABuffer, v: CUDABuffer, g: CUDABuffer?, beta: CUDABuffer?,
        initialState: CUDABuffer?, finalState: CUDABuffer?, o: CUDABuffer, shape: CUDAChunkedShape, scale: Float? = nil,
        outputDType: DType = .bfloat16, scratch: CUDABuffer? = nil, valueBlock: Int? = nil
    ) throws {
        try check(mechanism: mechanism, chunkSize: 64, dtype: .bfloat16, normalize: false)
        let s = shape
        let (B, T, H, HV, K, V) = (s.batch, s.length, s.heads, s.valueHeads, s.keyDim, s.valueDim)
        let (heads, group) = (Int32(HV), Int32(s.group))  // the kernels' H (state heads) and HV / H
        let grouped = CUDAKernels.options(group: s.group)  // the grouped-heads modules when HV > H
        let scaleValue = try launchScale(s, outputDType: outputDType, scale: scale)
        let isDelta = mechanism.isDelta
        let gateMode = mechanism.gateKind.kernelCode  // gla (3) has its own kernels
        // Entry suffix: the kernels are compiled per kind, so that linear_attn and delta_rule carry no gate code.
        let kind = isDelta ? (gateMode == 0 ? "delta" : "gdelta") : (gateMode == 0 ? "plain" : "gated")
        var needs: [(String, CUDABuffer?, Int)] = [
            ("q", q, B * T * H * K * 2), ("k", k, B * T * H * K * 2), ("v", v, B * T * HV * V * 2),
            ("o", o, B * T * HV * V * outputDType.byteCount),
        ]
        if gateMode == 1 { needs.append(("g", g, HV * 4)) }
        if gateMode == 2 { needs.append(("g", g, B * T * HV * 4)) }
        if isDelta { needs.append(("beta", beta, B * T * HV * 4)) }
        if let initialState { needs.append(("initialState", initialState, B * HV * K * V * 4)) }
        if let finalState { needs.append(("finalState", finalState, B * HV * K * V * 4)) }
        try checkBuffers(needs, s, for: mechanism.rawValue)
        let ctx = q.context
        if let valueBlock, isDelta ? valueBlock != 64 : ![32, 64, 128].contains(valueBlock) || V % valueBlock != 0 {
            throw LineaError.invalidArgument(
                argument: "valueBlock", expected: isDelta ? "64 (the delta rules)" : "32, 64 or 128, dividing V = \(V)",
                actual: "\(valueBlock)")
        }
        let plan = Plan(mechanism, s, multiprocessors: ctx.multiprocessorCount, valueBlock: valueBlock)
        let bv = plan.valueBlock
        let (work, owned) = try workspace(plan.scratchBytes, scratch: scratch, context: ctx)
        let common = (h0: initialState?.address ?? 0, ht: finalState?.address ?? 0, g: g?.address ?? 0)
        if isDelta {
            // Scratch holds w [B,T,HV,K] bf16, then u [B,T,HV,V] fp32.
            let wAddress = work!.address, uAddress = work!.address + UInt64(B * T * HV * K * 2)
            let prep = try ctx.function(source: CUDAKernels.chunkedWY, name: "linea_chunk_wy_k\(K)_v\(V)", options: grouped)
            let smem = (64 * (K + 8) + 64 * (V + 8)) * 2 + (64 * 68 + 3 * 64) * 4  // tiles; L (then A); gates, beta, beta e^G
            try ctx.launch(
                prep, grid: ((T + 63) / 64, HV, B), block: (128, 1, 1), sharedBytes: smem,
                arguments: [.pointer(k.address), .pointer(v.address), .pointer(beta!.address), .pointer(common.g),
                            .int32(gateMode), .pointer(wAddress), .pointer(uAddress), .int32(Int32(T)), .int32(heads),
                            .int32(group)])
            var segments: (UInt64, UInt64) = (0, 0)
            if plan.segments > 1 {
                // Pass 1 (lc_chunk_end_delta: 4 warps per 64 columns of the state, then of the identity): every
                // segment's end state from zero and its transition M; the scan applies S_{p+1} = M_p S_p + E_p from
                // h0; pass 2 runs every segment.
                let states = uAddress + UInt64(B * T * HV * V * 4)
                segments = (states, states + UInt64(plan.segmentStateBytes))
                let end = try ctx.function(source: CUDAKernels.chunkedDeltaEnd, name: "linea_chunk_end_k\(K)_\(kind)",
                                           options: grouped)
                try ctx.launch(
                    end, grid: ((V + K) / 64, HV, B * plan.segments), block: (128, 1, 1),
                    sharedBytes: 2 * 2 * 64 * (K + 8) * 2 + 2 * 64 * 68 * 4 + 4 * 64 * 4,  // k, w, u tiles x2; decays
                    arguments: [.pointer(k.address), .pointer(uAddress), .pointer(wAddress), .pointer(common.g),
                                .int32(gateMode), .pointer(common.h0), .int32(Int32(T)), .int32(heads), .int32(group), .int32(Int32(V)),
                                .int32(Int32(plan.segmentChunks)), .pointer(segments.0), .pointer(segments.1)])
                let scan = try ctx.function(source: CUDAKernels.chunkedScan, name: "linea_chunk_seg_scan_delta")
                try ctx.launch(
                    scan, grid: (V / 32, HV, B), block: (256, 1, 1), sharedBytes: 0,
                    arguments: [.pointer(segments.0), .pointer(segments.1), .pointer(common.h0), .int32(Int32(plan.segments)),
                                .int32(heads), .int32(Int32(K)), .int32(Int32(V))])
            }
            // The full walk (lc_chunk_fwd_delta: 4 warps per 64 columns, two blocks per SM).
            let f = try ctx.function(source: CUDAKernels.chunkedDeltaFwd, name: "linea_chunk_fwd_k\(K)_\(kind)", options: grouped)
            try ctx.launch(
                f, grid: (V / 64, HV, B * plan.segments), block: (128, 1, 1),
                sharedBytes: 4 * 64 * (K + 8) * 2 + 2 * 64 * 72 * 2 + 64 * 68 * 4 + 4 * 64 * 4,  // k x2, q, w; scores hi, lo; u; gates
                arguments: [.pointer(q.address), .pointer(k.address), .pointer(uAddress), .pointer(wAddress),
                            .pointer(common.g), .int32(gateMode), .pointer(common.h0), .pointer(common.ht),
                            .pointer(o.address), .int32(outputDType == .bfloat16 ? 1 : 0), .int32(Int32(T)), .int32(heads),
                            .int32(group), .int32(Int32(V)), .float(scaleValue), .int32(Int32(plan.segmentChunks)),
                            .pointer(segments.0)])
        } else {
            let f = try ctx.function(source: CUDAKernels.chunkedFwd, name: "linea_chunk_fwd_k\(K)_v\(bv)_\(kind)", options: grouped)
            var segments: (UInt64, UInt64) = (0, 0)
            if plan.segments > 1 {
                // Pass 1: the end state of every segment but the last from a zero state (the end-state entry: no q, no
                // outputs, two blocks per SM); the scan turns them into the start states of segments 1..P-1 (h0 folded
                // in); pass 2 runs every segment from its start state.
                segments = (work!.address, work!.address + UInt64(plan.segmentStateBytes))
                let end = try ctx.function(source: CUDAKernels.chunkedEnd, name: "linea_chunk_end_k\(K)_v\(bv)_\(kind)",
                                           options: grouped)
                try launchForward(end, ctx: ctx, q: q.address, k: k.address, v: v.address, g: common.g,
                                  gateMode: gateMode, h0: 0, ht: 0, o: o.address, outBF16: outputDType == .bfloat16,
                                  shape: s, plan: plan, stateOnly: true, segments: segments, scale: scaleValue)
                let scan = try ctx.function(source: CUDAKernels.chunkedScan, name: "linea_chunk_seg_scan")
                try ctx.launch(
                    scan, grid: ((K * V + 255) / 256, HV, B), block: (256, 1, 1), sharedBytes: 0,
                    arguments: [.pointer(segments.0), .pointer(segments.1), .pointer(common.h0), .int32(Int32(plan.segments)),
                                .int32(heads), .int32(Int32(K * V))])
            }
            try launchForward(f, ctx: ctx, q: q.address, k: k.address, v: v.address, g: common.g,
                              gateMode: gateMode, h0: common.h0, ht: common.ht, o: o.address,
                              outBF16: outputDType == .bfloat16, shape: s, plan: plan, stateOnly: false, segments: segments, scale: scaleValue)
        }
        try withExtendedLifetime(work) { if owned { try ctx.synchronize() } }  // an owned scratch outlives the kernels
    }

    /// Launch plan: the V slice per block, and the number of sequence segments run in parallel (each segment's end
    /// state from a zero state, and for the delta rules its transition; a scan to start states; then the outputs)
    /// when B·HV·V/BV blocks alone would leave SMs idle.
    public struct Plan: Sendable, Equatable {
        /// Columns of V per block (BV).
        public let valueBlock: Int
        /// Chunks of 64 tokens in each segment but the last, and the number of segments (1: the sequence is not cut).
        public let segmentChunks: Int, segments: Int
        /// Chunks of the last segment (the rest of the sequence; longer than `segmentChunks` in an uneven cut).
        public var lastSegmentChunks: Int { chunks - (segments - 1) * segmentChunks }
        /// Chunks of 64 tokens in the sequence.
        public let chunks: Int
        /// Bytes of the segment end states `[B·segments, HV, K, V]` fp32 (0 when not cut).
        public let segmentStateBytes: Int
        /// Bytes of device scratch the call needs (`scratchBytes(_:_:context:valueBlock:)`).
        public let scratchBytes: Int

        /// The plan `forward` uses on a device with `multiprocessors` SMs; `valueBlock` forces BV of the scalar decays
        /// (the delta rules always take 64). O(1).
        public init(_ mechanism: RecurrentMechanism, _ s: CUDAChunkedShape, multiprocessors: Int, valueBlock: Int?) {
            let (B, T, H, K, V) = (s.batch, s.length, s.valueHeads, s.keyDim, s.valueDim)  // H: the state heads here
            let isDelta = mechanism.isDelta
            let chunks = max(1, (T + 63) / 64)
            // Scalar decays: one block per head (BV = V, the scores computed once per head), the sequence cut into
            // segments until about two waves of blocks run (H100, linear_attn, B*T = 32768: 0.71 ms at T = 32768 with
            // 16 segments against 1.04 ms with BV = 64 and 4), or unevenly where `scalarSegments` finds that cheaper. Delta rules: BV = 64 (the transposed walk, 16 columns
            // per warp, two blocks per SM); below 3/4 of a wave of blocks the sequence is cut into segments until about
            // two blocks per SM run (H100, B = 1, T = 32768: gated_delta_rule 1.486 ms with 8 segments, 1.592 with 4;
            // at B = 4, T = 8192, 128 blocks ran faster uncut than in 2 segments).
            let deltaFull = B * H * (V / 64) >= multiprocessors * 3 / 4
            let bv = isDelta ? 64 : valueBlock ?? min(V, 128)
            let blocks = B * H * (V / bv)
            var (perSegment, count) = (chunks, 1)
            if !isDelta && blocks < multiprocessors && chunks >= 8 {
                (perSegment, count) = Plan.scalarSegments(chunks: chunks, blocks: blocks, multiprocessors: multiprocessors)
            } else if isDelta && !deltaFull && chunks >= 8 {
                let p = min(max(2, 2 * multiprocessors / blocks), chunks / 4)  // the full walk fits twice per SM
                perSegment = (chunks + p - 1) / p
                count = (chunks + perSegment - 1) / perSegment
            }
            self.valueBlock = bv
            self.chunks = chunks
            segmentChunks = perSegment
            segments = count
            segmentStateBytes = segments > 1 ? B * segments * H * K * V * 4 : 0
            // Segmented runs add the segment end states and then the total gates [B·P,H] (scalar decays) or the
            // transitions [B·P,H,K,K] (delta rules, after w and u).
            let segmentExtra = segments > 1 ? segmentStateBytes + B * segments * H * (isDelta ? K * K : 1) * 4 : 0
            scratchBytes = (isDelta ? B * T * H * (K * 2 + V * 4) : 0) + segmentExtra
        }

        /// The scalar decays' cut of `chunks` for `blocks` blocks per segment (fewer than the SMs): (chunks per segment
        /// but the last, segments). An even cut into about two waves, unless an uneven one is at least 5% cheaper in
        /// `cutCost`: the last segments, dispatched first, then hold one SM each for longer while the other SMs run the
        /// shorter segments in rounds, and the end-state pass, which runs only the shorter ones, gets shorter (H100,
        /// B = 4, T = 8192: 5 segments, 16 chunks each and 64 for the last, rather than 4 of 32). O(P² · blocks / sms).
        public static func scalarSegments(chunks: Int, blocks: Int, multiprocessors sms: Int) -> (Int, Int) {
            let even = min(max(2, 2 * sms / blocks), chunks / 4)
            let evenPer = (chunks + even - 1) / even
            var best = (evenPer, (chunks + evenPer - 1) / evenPer)
            let evenCost = cutCost(per: best.0, segments: best.1, chunks: chunks, blocks: blocks, sms: sms)
            var bestCost = 0.95 * evenCost
            for p in 2...max(2, min(chunks / 4, 4 * sms / blocks)) {
                for rounds in 1...4 {
                    let per = chunks / (p - 1 + rounds)  // the last segment about `rounds` times as long
                    guard per >= 4, chunks - (p - 1) * per >= per else { continue }
                    let cost = cutCost(per: per, segments: p, chunks: chunks, blocks: blocks, sms: sms)
                    if cost < bestCost { (best, bestCost) = ((per, p), cost) }
                }
            }
            return best
        }

        /// Modelled time of a cut, in chunk steps of the full walk. The walk runs one block per SM: the last segments
        /// (dispatched first) hold `blocks` SMs until `last`; the shorter ones, `per` chunks each, go to whichever SM
        /// frees first, the others from 0 and those from `last` on. The end-state pass runs the shorter ones two per SM,
        /// a step there costing about 0.6 of a walk step (H100 lab, T = 8192). O(segments · blocks / (sms - blocks)).
        public static func cutCost(per: Int, segments p: Int, chunks: Int, blocks: Int, sms: Int) -> Double {
            let last = chunks - (p - 1) * per, short = blocks * (p - 1), others = sms - blocks
            func done(by t: Int) -> Int { others * (t / per) + blocks * (max(0, t - last) / per) }
            var walk = last
            if short > 0 {
                // The first round end (a multiple of `per`, from 0 or from `last`) by which every short segment is done.
                var t = Int.max
                for r in 1...(short / others + 1) {
                    if r * per < t && done(by: r * per) >= short { t = r * per }
                    if last + r * per < t && done(by: last + r * per) >= short { t = last + r * per }
                }
                walk = max(last, t)
            }
            let end = (short + 2 * sms - 1) / (2 * sms) * per
            return Double(walk) + 0.6 * Double(end)
        }
    }

    /// Bytes of scratch the device variant needs for this call: w `[B,T,HV,K]` bf16 and u `[B,T,HV,V]` fp32 for the
    /// delta rules, then, when the sequence is split, the segment end states and gates or transitions (else 0). O(1).
    public static func scratchBytes(_ mechanism: RecurrentMechanism, _ s: CUDAChunkedShape, context: CUDAContext,
                                    valueBlock: Int? = nil) -> Int {
        Plan(mechanism, s, multiprocessors: context.multiprocessorCount, valueBlock: valueBlock).scratchBytes
    }

    /// Retention's per-head log decays `log(1 - 2^(-5-h))` for `heads` state heads (HV), `[HV]` fp32 on the device (the
    /// `g` of the device variant).
    public static func retentionDecays(heads: Int, context: CUDAContext) throws -> CUDABuffer {
        try CUDABuffer(context: context, copying: (0..<max(1, heads)).map { Float(log1p(-pow(2, Double(-5 - $0)))) })
    }

    /// Matmul FLOPs of the chunked forward as computed (full 64 x 64 blocks; the delta prepass included). O(1).
    public static func flops(_ mechanism: RecurrentMechanism, _ s: CUDAChunkedShape) -> Double {
        Recurrence.chunkedFLOPs(mechanism, B: s.batch, T: s.length, H: s.heads, HV: s.valueHeads, K: s.keyDim, V: s.valueDim,
                                chunkSize: 64)
    }

    /// Launches a scalar-decay entry of lc_chunk_fwd (full walk or, `stateOnly`, end-state pass), 8 warps per block.
    private static func launchForward(
        _ f: CUDAFunction, ctx: CUDAContext, q: UInt64, k: UInt64, v: UInt64, g: UInt64, gateMode: Int32,
        h0: UInt64, ht: UInt64, o: UInt64, outBF16: Bool, shape s: CUDAChunkedShape, plan: Plan, stateOnly: Bool,
        segments: (UInt64, UInt64), scale: Float
    ) throws {
        let (K, C, bv) = (s.keyDim, 64, plan.valueBlock)
        let lk = K + 8, lv = bv + 8
        // Mirrors lc_chunk_fwd's layout: q, k tiles x2; state hi, lo; gates; v x2; the score fragments the warp pairs
        // trade (16 KB). The end-state entries (stateOnly) have no q tiles, keep no state copy and trade no scores.
        let elements = (stateOnly ? 1 : 2) * 2 * C * lk + (stateOnly ? 0 : 2 * K * lv) + 2 * C * lv
        let smem = elements * 2 + 8 * C * 4 + (stateOnly ? 0 : 16384)
        try ctx.launch(
            f, grid: (s.valueDim / bv, s.valueHeads, s.batch * plan.segments),
            block: (256, 1, 1), sharedBytes: smem,
            arguments: [.pointer(q), .pointer(k), .pointer(v), .pointer(g), .int32(gateMode), .pointer(h0),
                        .pointer(ht), .pointer(o), .int32(outBF16 ? 1 : 0), .int32(Int32(s.length)), .int32(Int32(s.valueHeads)),
                        .int32(Int32(s.group)), .int32(Int32(s.valueDim)), .float(scale), .int32(Int32(plan.segmentChunks)),
                        .int32(Int32(plan.segments)), .pointer(segments.0), .pointer(segments.1)])
    }

    private static func check(mechanism: RecurrentMechanism, chunkSize: Int, dtype: DType, normalize: Bool) throws {
        guard supported.contains(mechanism) else {
            throw LineaError.invalidArgument(
                argument: "mechanism", expected: supported.map(\.rawValue).joined(separator: ", ") + " (CUDA chunked)",
                actual: mechanism.rawValue)
        }
        try checkOptions(chunkSize: chunkSize, dtype: dtype, normalize: normalize)
    }

    /// The options every chunked kernel takes (also `CUDAChunkedGLA`'s): chunk 64, bf16 / f32 / f16 inputs, no normalizer. O(1).
    static func checkOptions(chunkSize: Int, dtype: DType, normalize: Bool) throws {
        guard chunkSize == 64 else {
            throw LineaError.invalidArgument(argument: "chunkSize", expected: "64 (CUDA chunked kernels)", actual: "\(chunkSize)")
        }
        guard dtype == .bfloat16 || CUDAChunkedSIMT.inputTypes.contains(dtype) else {
            throw LineaError.invalidArgument(argument: "dtype", expected: "bfloat16, float32 or float16 (CUDA chunked kernels)", actual: "\(dtype)")
        }
        guard !normalize else {
            throw LineaError.invalidArgument(
                argument: "normalize", expected: "false (the linear_attn normalizer has no CUDA kernel)", actual: "true")
        }
    }

    /// The checks of a device-variant launch (`CUDAChunkedGLA`'s too) before its buffers: the sizes, T >= 1, a bf16 or
    /// fp32 output, a finite scale. Returns the scale (default 1/sqrt(K)). O(1).
    static func launchScale(_ s: CUDAChunkedShape, outputDType: DType, scale: Float?) throws -> Float {
        try checkShape(s)
        guard s.length >= 1 else { throw LineaError.invalidArgument(argument: "shape.length", expected: ">= 1", actual: "\(s.length)") }
        guard outputDType == .float32 || outputDType == .bfloat16 else {
            throw LineaError.invalidArgument(argument: "outputDType", expected: "float32 or bfloat16", actual: "\(outputDType)")
        }
        let value = scale ?? 1 / Float(s.keyDim).squareRoot()
        guard value.isFinite else {
            throw LineaError.invalidArgument(argument: "scale", expected: "a finite value", actual: "\(value)")
        }
        return value
    }

    /// Throws unless every buffer (name, buffer, bytes needed) is there and large enough for `s`, and the device of the
    /// first one runs bf16 `mma.sync` (sm_80+); `owner` names what needs a missing buffer. O(buffers).
    static func checkBuffers(_ needs: [(String, CUDABuffer?, Int)], _ s: CUDAChunkedShape, for owner: String) throws {
        for (name, buffer, bytes) in needs {
            guard let buffer else {
                throw LineaError.invalidArgument(argument: name, expected: "a buffer for \(owner)", actual: "nil")
            }
            guard buffer.byteCount >= bytes else {
                throw LineaError.shapeMismatch(argument: name, expected: ">= \(bytes) bytes for \(s)", actual: "\(buffer.byteCount) bytes")
            }
        }
        if let ctx = needs.first?.1?.context, ctx.computeCapability.major < 8 {
            throw LineaError.invalidArgument(argument: "device", expected: "sm_80 or newer (bf16 mma.sync)", actual: ctx.architecture)
        }
    }

    /// The scratch of a launch: none when `bytes` is 0, else `scratch` if it holds `bytes` (throws if smaller), else a
    /// new buffer (`owned`: synchronize before it is dropped). O(1) plus the allocation.
    static func workspace(_ bytes: Int, scratch: CUDABuffer?, context: CUDAContext) throws -> (buffer: CUDABuffer?, owned: Bool) {
        guard bytes > 0 else { return (nil, false) }
        guard let scratch else { return (try CUDABuffer(context: context, byteCount: bytes), true) }
        guard scratch.byteCount >= bytes else {
            throw LineaError.shapeMismatch(argument: "scratch", expected: ">= \(bytes) bytes (scratchBytes)", actual: "\(scratch.byteCount) bytes")
        }
        return (scratch, false)
    }

    /// The shape of `inputs` after `Recurrence.checkInputs` and `checkShape` (every chunked launcher's host side). O(inputs).
    static func checkedShape(_ mechanism: RecurrentMechanism, _ inputs: RecurrenceInputs) throws -> CUDAChunkedShape {
        let (B, T, H, HV, K, V) = try Recurrence.checkInputs(mechanism, inputs)
        let shape = CUDAChunkedShape(batch: B, length: T, heads: H, valueHeads: HV, keyDim: K, valueDim: V)
        try checkShape(shape)
        return shape
    }

    /// B, H >= 1, HV a multiple of H, T >= 0, K and V in {64, 128} (every chunked kernel, gla's too). O(1).
    static func checkShape(_ s: CUDAChunkedShape) throws {
        for (name, value) in [("batch", s.batch), ("heads", s.heads)] where value < 1 {
            throw LineaError.invalidArgument(argument: "shape.\(name)", expected: ">= 1", actual: "\(value)")
        }
        guard s.valueHeads >= s.heads && s.valueHeads % s.heads == 0 else {
            throw LineaError.invalidArgument(argument: "shape.valueHeads", expected: "a multiple of heads = \(s.heads)",
                                             actual: "\(s.valueHeads)")
        }
        guard s.length >= 0 else { throw LineaError.invalidArgument(argument: "shape.length", expected: ">= 0", actual: "\(s.length)") }
        guard s.keyDim == 64 || s.keyDim == 128 else {
            throw LineaError.invalidArgument(argument: "K", expected: "64 or 128 (CUDA chunked kernels)", actual: "\(s.keyDim)")
        }
        guard s.valueDim == 64 || s.valueDim == 128 else {
            throw LineaError.invalidArgument(argument: "V", expected: "64 or 128 (CUDA chunked kernels)", actual: "\(s.valueDim)")
        }
    }
}
