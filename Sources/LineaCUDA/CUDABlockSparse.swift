import Foundation
import Linea

/// Block-sparse attention on the GPU: exact softmax attention restricted to the blocks a `BlockMask` keeps
/// (flash-style online softmax; key tiles of 32 that the mask drops for a whole 64-query tile are never loaded).
package enum CUDABlockSparse {
    /// Attention of q `[B,T,Hq,D]` over k, v `[B,S,Hkv,D]` (Hkv divides Hq, D <= 256) through `mask` (any block sizes
    /// bm x bn, `[B or 1, Hq or 1, ceil(T/bm), ceil(S/bn)]`), optionally causal (bottom-right aligned). Inputs are
    /// uploaded as `dtype` (f32, bf16, f16). Returns o `[B,T,Hq,D]` fp32 and lse `[B,T,Hq]` (o = 0, lse = -inf for a
    /// row with no visible key), as `BlockSparseAttention.reference`. O(B·Hq·T·S·D·density) work, plus transfers.
    public static func forward(
        q: Tensor, k: Tensor, v: Tensor, mask: BlockMask, scale: Float? = nil, causal: Bool = false,
        dtype: DType = .float32, context: CUDAContext? = nil
    ) throws -> (o: Tensor, lse: Tensor) {
        try CUDAAttention.onHost(q: q, k: k, v: v, dtype: dtype, context: context) { io in
            let mb = try CUDABuffer(context: io.q.context, copying: mask.values)
            try forward(q: io.q, k: io.k, v: io.v, mask: mb, maskShape: mask.shape, blockRows: mask.blockRows,
                        blockKeys: mask.blockKeys, o: io.o, lse: io.lse, shape: io.shape, scale: scale, causal: causal,
                        dtype: dtype, outputDType: .float32)
        }
    }

    /// Device-buffer variant (queues one kernel): q, k, v hold `dtype` elements; mask holds one byte per block,
    /// `maskShape` `[B or 1, Hq or 1, ceil(T/blockRows), ceil(S/blockKeys)]`; o holds `outputDType` (f32, bf16, f16);
    /// lse (optional) fp32 `[B,T,Hq]`. Throws for invalid shapes, sizes or buffers.
    public static func forward(
        q: CUDABuffer, k: CUDABuffer, v: CUDABuffer, mask: CUDABuffer, maskShape: [Int], blockRows: Int, blockKeys: Int,
        o: CUDABuffer, lse: CUDABuffer?, shape: CUDAAttentionShape, scale: Float? = nil, causal: Bool = false,
        dtype: DType = .bfloat16, outputDType: DType = .bfloat16
    ) throws {
        let s = shape
        let scaleValue = try s.checkLaunch(q: q, k: k, v: v, o: o, lse: lse, dtype: dtype, outputDType: outputDType, scale: scale)
        // Reuses BlockMask's checks of the layout against the call.
        let layout = try BlockMask(shape: maskShape, blockRows: blockRows, blockKeys: blockKeys,
                                   values: [UInt8](repeating: 0, count: maskShape.count == 4 ? maskShape.reduce(1, *) : 0))
        try layout.validate(B: s.batch, Hq: s.queryHeads, T: s.queryLength, S: s.keyLength)
        guard mask.byteCount >= maskShape.reduce(1, *) else {
            throw LineaError.shapeMismatch(argument: "mask", expected: ">= \(maskShape.reduce(1, *)) bytes", actual: "\(mask.byteCount) bytes")
        }
        let inKind = try CUDAUpload.typeCode(dtype)
        let outKind = try CUDAUpload.typeCode(outputDType, argument: "outputDType")
        let ctx = q.context
        let (qb, kb) = (maskShape[2], maskShape[3])
        let maskH = maskShape[1] == 1 ? 0 : qb * kb
        let maskB = maskShape[0] == 1 ? 0 : maskShape[1] * qb * kb
        let dmax = s.headDim <= 64 ? 64 : s.headDim <= 128 ? 128 : 256
        let f = try ctx.function(source: CUDAKernels.attentionBlockSparse, name: "linea_attn_bsparse_d\(dmax)",
                                 options: selecting("linea_attn_bsparse_d\(dmax)"))
        let smem = (64 * s.headDim + 32 * (s.headDim + 1) + 32 * s.headDim) * 4
        try ctx.launch(
            f, grid: ((s.queryLength + 63) / 64, s.queryHeads, s.batch), block: (256, 1, 1), sharedBytes: smem,
            arguments: [.pointer(q.address), .pointer(k.address), .pointer(v.address), .int32(inKind), .pointer(mask.address),
                        .pointer(o.address), .pointer(lse?.address ?? 0), .int32(Int32(s.queryLength)), .int32(Int32(s.keyLength)),
                        .int32(Int32(s.queryHeads)), .int32(Int32(s.kvHeads)), .int32(Int32(s.headDim)),
                        // A block longer than the sequence is one block either way: clamping cannot change the mask.
                        .int32(Int32(clamping: blockRows)), .int32(Int32(clamping: blockKeys)), .int32(Int32(maskB)), .int32(Int32(maskH)),
                        .int32(Int32(qb)), .int32(Int32(kb)), .float(scaleValue * 1.4426950408889634), .int32(causal ? 1 : 0),
                        .int32(outKind)])
    }
}
