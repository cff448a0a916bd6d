import Foundation
import Linea

/// Split-KV decode attention on the GPU (flash-decoding): a few queries against a long KV cache. The keys are cut
/// into partitions processed by separate blocks (so a small batch still fills the GPU), each writing a partial
/// output and log-sum-exp; a second kernel merges them. K and V are read once (per 4 or 8 query rows of a KV head).
package enum CUDASplitKV {
    /// Largest query length accepted (the kernel keeps all query rows of a KV head in registers, 8 at a time).
    public static let maxQueryLength = 64

    /// Partitions used for `shape` on `context` when the caller does not choose: about 4 blocks per SM, at least
    /// 256 keys per partition. O(1).
    public static func defaultPartitions(_ shape: CUDAAttentionShape, context: CUDAContext) -> Int {
        let rows = shape.queryLength * (shape.queryHeads / max(1, shape.kvHeads))
        let groups = (rows + rowsPerBlock(rows) - 1) / rowsPerBlock(rows)
        let others = shape.batch * shape.kvHeads * groups
        let wanted = (4 * context.multiprocessorCount + others - 1) / max(1, others)
        return max(1, min(wanted, (shape.keyLength + 255) / 256))
    }

    /// Query rows per block: 4 when a KV head serves at most 4 rows, else 8.
    static func rowsPerBlock(_ rows: Int) -> Int { rows <= 4 ? 4 : 8 }

    /// Keys per partition (a multiple of the 16-64 keys a block consumes per step) and the partitions that leaves, all
    /// non-empty, for `partitions` (>= 1) asked. O(1).
    public static func keysPerPartition(_ shape: CUDAAttentionShape, partitions: Int) -> (keys: Int, partitions: Int) {
        let len = ((shape.keyLength + partitions - 1) / partitions + 63) / 64 * 64
        return (len, (shape.keyLength + len - 1) / max(len, 1))
    }

    /// Bytes of device workspace `forward` needs for `shape` and `partitions` (partial outputs and lse, fp32).
    public static func workspaceBytes(_ shape: CUDAAttentionShape, partitions: Int) -> Int {
        partitions * shape.batch * shape.queryLength * shape.queryHeads * (shape.headDim + 1) * 4
    }

    /// Attention of q `[B,T,Hq,D]` over k, v `[B,S,Hkv,D]` (Hkv divides Hq, T <= 64, D <= 256), uploaded as `dtype`
    /// (f32, bf16 or f16); causal masking bottom-right aligned (query i sees keys j <= i + S - T). Returns o
    /// `[B,T,Hq,D]` fp32 and lse `[B,T,Hq]` (natural log; o = 0, lse = -inf for a row with no visible key).
    /// `partitions` nil: `defaultPartitions`. O(B·Hq·T·S·D) work, K/V read once; plus the transfers.
    public static func forward(
        q: Tensor, k: Tensor, v: Tensor, scale: Float? = nil, causal: Bool = true, partitions: Int? = nil,
        dtype: DType = .bfloat16, context: CUDAContext? = nil
    ) throws -> (o: Tensor, lse: Tensor) {
        try CUDAAttention.onHost(q: q, k: k, v: v, dtype: dtype, context: context) { io in
            try forward(q: io.q, k: io.k, v: io.v, o: io.o, lse: io.lse, shape: io.shape, scale: scale, causal: causal,
                        partitions: partitions, dtype: dtype, outputDType: .float32)
        }
    }

    /// Device-buffer variant (queues two kernels, no transfers): q, k, v hold `dtype` elements (f32, bf16, f16);
    /// o holds `outputDType` (f32, bf16, f16); lse (optional) fp32 `[B,T,Hq]`. `workspace` (optional, at least
    /// `workspaceBytes(shape, partitions:)`) avoids an allocation per call. `options`: NVRTC defines for tuning
    /// experiments (e.g. `-DLINEA_SK_U16=2`, see the kernel source). Throws for invalid shapes or buffers.
    public static func forward(
        q: CUDABuffer, k: CUDABuffer, v: CUDABuffer, o: CUDABuffer, lse: CUDABuffer?, shape: CUDAAttentionShape,
        scale: Float? = nil, causal: Bool = true, partitions: Int? = nil, dtype: DType = .bfloat16,
        outputDType: DType = .bfloat16, workspace: CUDABuffer? = nil, options: [String] = []
    ) throws {
        let s = shape
        let scaleValue = try s.checkLaunch(q: q, k: k, v: v, o: o, lse: lse, dtype: dtype, outputDType: outputDType, scale: scale)
        guard s.queryLength <= maxQueryLength else {
            throw LineaError.invalidArgument(argument: "queryLength", expected: "<= \(maxQueryLength) (split-KV is for decode)",
                                             actual: "\(s.queryLength)")
        }
        let suffix = try CUDAUpload.suffix(dtype)
        let outKind = try CUDAUpload.typeCode(outputDType, argument: "outputDType")
        let ctx = q.context
        let p = partitions ?? defaultPartitions(s, context: ctx)
        guard p >= 1 else { throw LineaError.invalidArgument(argument: "partitions", expected: ">= 1", actual: "\(p)") }
        let rowsTotal = s.batch * s.queryLength * s.queryHeads
        let (len, parts) = keysPerPartition(s, partitions: p)
        let need = workspaceBytes(s, partitions: parts)
        let work = try workspace ?? CUDABuffer(context: ctx, byteCount: need)
        guard work.byteCount >= need else {
            throw LineaError.shapeMismatch(argument: "workspace", expected: ">= \(need) bytes", actual: "\(work.byteCount) bytes")
        }
        let po = work.address, plse = work.address + UInt64(parts * rowsTotal * s.headDim * 4)
        let rows = s.queryLength * (s.queryHeads / s.kvHeads)
        let rb = rowsPerBlock(rows)
        let dmax = s.headDim <= 64 ? 64 : s.headDim <= 128 ? 128 : 256
        let partialName = "linea_splitkv_\(suffix)_d\(dmax)_r\(rb)"
        let partial = try ctx.entry(partialName, of: CUDAKernels.attentionSplitKV, options: options)
        try ctx.launch(
            partial, grid: (parts, s.batch * s.kvHeads, (rows + rb - 1) / rb), block: (128, 1, 1),
            sharedBytes: 4 * rb * (dmax + 2) * 4,
            arguments: [.pointer(q.address), .pointer(k.address), .pointer(v.address), .pointer(po), .pointer(plse),
                        .int32(Int32(s.batch)), .int32(Int32(s.queryLength)), .int32(Int32(s.keyLength)),
                        .int32(Int32(s.queryHeads)), .int32(Int32(s.kvHeads)), .int32(Int32(s.headDim)), .int32(Int32(len)),
                        .float(scaleValue * 1.4426950408889634), .int32(causal ? 1 : 0), .int32(Int32(s.keyRows))])
        let merge = try ctx.entry("linea_splitkv_merge", of: CUDAKernels.attentionSplitKV, options: options)
        try ctx.launch(
            merge, grid: (rowsTotal, 1, 1), block: (128, 1, 1),
            arguments: [.pointer(po), .pointer(plse), .pointer(o.address), .pointer(lse?.address ?? 0), .int32(Int32(parts)),
                        .int32(Int32(rowsTotal)), .int32(Int32(s.headDim)), .int32(outKind)])
        if workspace == nil { try ctx.synchronize() }  // the temporary workspace is freed on return
    }
}
