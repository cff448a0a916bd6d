import Foundation
import Linea

/// Block-sparse attention on the GPU: exact softmax attention restricted to the blocks a `BlockMask` keeps
/// (flash-style online softmax; key tiles that the mask drops for a whole query tile are never loaded).
package enum CUDABlockSparse {
    /// Which kernel runs: the Hopper one (`wgmma`, warp-specialized as dense flash: bf16/f16, D 128, sm_90, scale > 0,
    /// blockRows and blockKeys multiples of 128 or longer than the sequence, at most `wgmmaMaxKeyBlocks` key blocks),
    /// tensor cores (`mma.sync`, bf16/f16, D 64 or 128, sm_80+, scale > 0, blockRows a multiple of 16 x
    /// `tensorCoreRowTiles` and blockKeys of 64, or longer than the sequence), the portable fp32 one, or (`auto`) the
    /// first of these that fits. `wgmma` and `tensorCore` throw when they do not.
    public enum Kernel: String, Sendable, CaseIterable {
        case auto, wgmma, tensorCore = "tensor_core", portable
    }

    /// Key blocks the wgmma kernel's shared bitmask holds (one bit each, 1 KiB: the rest of the SM's shared memory
    /// holds the Q tile and three stages of K and V).
    static let wgmmaMaxKeyBlocks = 8192

    /// `LINEA_BSPARSE_KERNEL=portable|tensor_core|wgmma` replaces `.auto` (checks and timing without a rebuild).
    static let kernelOverride = Kernel(rawValue: ProcessInfo.processInfo.environment["LINEA_BSPARSE_KERNEL"] ?? "") ?? .auto
    /// Tensor-core launch shape from `LINEA_BSPARSE_MMA="warps rowTiles"` (warps 2/4/8, 16-row subtiles per warp 1/2;
    /// default "4 1": 64-query tiles, one per 64-row mask block, so no warp idles on a block its tile-mate keeps).
    static let tensorCoreShape: (warps: Int, rowTiles: Int) = {
        let w = (ProcessInfo.processInfo.environment["LINEA_BSPARSE_MMA"] ?? "").split(separator: " ").compactMap { Int($0) }
        return w.count == 2 && [2, 4, 8].contains(w[0]) && [1, 2].contains(w[1]) ? (w[0], w[1]) : (4, 1)
    }()
    /// Rows per warp of the tensor-core kernel: mask blocks must hold whole multiples of it.
    static var tensorCoreRowTiles: Int { tensorCoreShape.rowTiles }
    /// Key blocks the tensor-core kernel's shared bitmask holds (one bit each, 4 KiB).
    static let tensorCoreMaxKeyBlocks = 32768

    /// Attention of q `[B,T,Hq,D]` over k, v `[B,S,Hkv,D]` (Hkv divides Hq, D <= 256) through `mask` (any block sizes
    /// bm x bn, `[B or 1, Hq or 1, ceil(T/bm), ceil(S/bn)]`), optionally causal (bottom-right aligned). Inputs are
    /// uploaded as `dtype` (f32, bf16, f16). Returns o `[B,T,Hq,D]` fp32 and lse `[B,T,Hq]` (o = 0, lse = -inf for a
    /// row with no visible key), as `BlockSparseAttention.reference`; `kernel` as in the device-buffer variant.
    /// O(B·Hq·T·S·D·density) work, plus transfers.
    public static func forward(
        q: Tensor, k: Tensor, v: Tensor, mask: BlockMask, scale: Float? = nil, causal: Bool = false,
        dtype: DType = .float32, kernel: Kernel = .auto, context: CUDAContext? = nil
    ) throws -> (o: Tensor, lse: Tensor) {
        try CUDAAttention.onHost(q: q, k: k, v: v, dtype: dtype, context: context) { io in
            let mb = try CUDABuffer(context: io.q.context, copying: mask.values)
            try forward(q: io.q, k: io.k, v: io.v, mask: mb, maskShape: mask.shape, blockRows: mask.blockRows,
                        blockKeys: mask.blockKeys, o: io.o, lse: io.lse, shape: io.shape, scale: scale, causal: causal,
                        dtype: dtype, outputDType: .float32, kernel: kernel)
        }
    }

    /// Device-buffer variant (queues one kernel): q, k, v hold `dtype` elements; mask holds one byte per block,
    /// `maskShape` `[B or 1, Hq or 1, ceil(T/blockRows), ceil(S/blockKeys)]`; o holds `outputDType` (f32, bf16, f16);
    /// lse (optional) fp32 `[B,T,Hq]`. `kernel` picks the kernel (`.auto` follows `LINEA_BSPARSE_KERNEL`). Throws for
    /// invalid shapes, sizes or buffers, or a `.tensorCore` call it cannot take.
    public static func forward(
        q: CUDABuffer, k: CUDABuffer, v: CUDABuffer, mask: CUDABuffer, maskShape: [Int], blockRows: Int, blockKeys: Int,
        o: CUDABuffer, lse: CUDABuffer?, shape: CUDAAttentionShape, scale: Float? = nil, causal: Bool = false,
        dtype: DType = .bfloat16, outputDType: DType = .bfloat16, kernel: Kernel = .auto
    ) throws {
        let s = shape
        let scaleValue = try s.checkLaunch(q: q, k: k, v: v, o: o, lse: lse, dtype: dtype, outputDType: outputDType, scale: scale)
        // Reuses BlockMask's checks of the layout against the call.
        let layout = try BlockMask(shape: maskShape, blockRows: blockRows, blockKeys: blockKeys,
                                   values: [UInt8](repeating: 0, count: maskShape.count == 4 ? maskShape.reduce(1, *) : 0))
        try layout.validate(B: s.batch, Hq: s.queryHeads, T: s.queryLength, S: s.keyLength)
        // The kernels take the mask's strides as 32-bit ints (exact-key masks of 1-key blocks grow as T·S / 64).
        guard maskShape.reduce(1, *) <= Int(Int32.max) else {
            throw LineaError.invalidArgument(argument: "mask", expected: "<= \(Int32.max) blocks (32-bit strides)", actual: "\(maskShape)")
        }
        guard mask.byteCount >= maskShape.reduce(1, *) else {
            throw LineaError.shapeMismatch(argument: "mask", expected: ">= \(maskShape.reduce(1, *)) bytes", actual: "\(mask.byteCount) bytes")
        }
        let inKind = try CUDAUpload.typeCode(dtype)
        let outKind = try CUDAUpload.typeCode(outputDType, argument: "outputDType")
        let ctx = q.context
        let (qb, kb) = (maskShape[2], maskShape[3])
        let maskH = maskShape[1] == 1 ? 0 : qb * kb
        let maskB = maskShape[0] == 1 ? 0 : maskShape[1] * qb * kb
        let scaleLog2 = scaleValue * 1.4426950408889634
        // A block at least as long as the sequence is one block whatever its size: rounded to the tile multiples, so
        // that whole-sequence masks (e.g. `.max` sizes) also fit the tensor-core kernels.
        func tiled(_ block: Int, length: Int, multiple: Int) -> Int {
            block >= length ? (max(length, 1) + multiple - 1) / multiple * multiple : block
        }
        let (warps, rowTiles) = tensorCoreShape
        let warpRows = 16 * rowTiles
        let bmTC = tiled(blockRows, length: s.queryLength, multiple: warpRows)
        let bnTC = tiled(blockKeys, length: s.keyLength, multiple: 64)
        let half = dtype == .bfloat16 || dtype == .float16
        let fits = half && (s.headDim == 64 || s.headDim == 128) && ctx.computeCapability.major >= 8 && scaleValue > 0
            && bmTC % warpRows == 0 && bnTC % 64 == 0 && bmTC <= Int(Int32.max) && bnTC <= Int(Int32.max)
            && kb <= tensorCoreMaxKeyBlocks
        let bmWG = tiled(blockRows, length: s.queryLength, multiple: 128)
        let bnWG = tiled(blockKeys, length: s.keyLength, multiple: 128)
        let fitsWGMMA = half && s.headDim == 128 && ctx.computeCapability.major == 9 && scaleValue > 0
            && bmWG % 128 == 0 && bnWG % 128 == 0 && bmWG <= Int(Int32.max) && bnWG <= Int(Int32.max) && kb <= wgmmaMaxKeyBlocks
        let chosen = kernel == .auto ? kernelOverride : kernel
        if chosen == .wgmma && !fitsWGMMA {
            throw LineaError.invalidArgument(
                argument: "kernel",
                expected: "wgmma only for bfloat16/float16, headDim 128, sm_90, scale > 0, blockRows and blockKeys multiples of 128, <= \(wgmmaMaxKeyBlocks) key blocks",
                actual: "\(dtype), headDim \(s.headDim), \(ctx.architecture), scale \(scaleValue), blocks \(blockRows) x \(blockKeys), \(kb) key blocks")
        }
        if fitsWGMMA && (chosen == .auto || chosen == .wgmma) {
            let typeName = dtype == .bfloat16 ? "bf16" : "f16"
            let f = try ctx.function(source: CUDAKernels.attentionHopper, name: "linea_attn_wgmma_bsparse_\(typeName)_d128",
                                     options: CUDAKernels.attentionHopperOptions)
            // One block per (128-row query tile, head, batch) item, as the dense kernel's launch; its shared memory
            // (Q, three stages of K and V, 1 KiB of alignment) beside the kernel's static bitmask.
            let items = (s.queryLength + 127) / 128 * s.queryHeads * s.batch
            try ctx.launch(
                f, grid: (items, 1, 1), block: (384, 1, 1), sharedBytes: 1024 + 7 * 128 * 128 * 2,
                arguments: [.pointer(q.address), .pointer(k.address), .pointer(v.address), .pointer(o.address),
                            .pointer(lse?.address ?? 0), .int32(Int32(s.queryLength)), .int32(Int32(s.keyLength)),
                            .int32(Int32(s.queryHeads)), .int32(Int32(s.kvHeads)), .float(scaleLog2), .int32(causal ? 1 : 0),
                            .int32(outKind), .int32(Int32(s.batch)), .int32(8), .pointer(mask.address),
                            .int32(Int32(bmWG)), .int32(Int32(bnWG)), .int32(Int32(maskB)), .int32(Int32(maskH)), .int32(Int32(kb))])
            return
        }
        if chosen == .tensorCore && !fits {
            throw LineaError.invalidArgument(
                argument: "kernel",
                expected: "tensorCore only for bfloat16/float16, headDim 64 or 128, sm_80+, scale > 0, blockRows % \(warpRows) == 0, blockKeys % 64 == 0, <= \(tensorCoreMaxKeyBlocks) key blocks",
                actual: "\(dtype), headDim \(s.headDim), \(ctx.architecture), scale \(scaleValue), blocks \(blockRows) x \(blockKeys), \(kb) key blocks")
        }
        if fits && chosen != .portable {
            let typeName = dtype == .bfloat16 ? "bf16" : "f16"
            let name = "linea_attn_bsparse_mma_\(typeName)_d\(s.headDim)"
            let shapeOptions = (warps, rowTiles) == (4, 1) ? [] : ["-DLINEA_BSM_NW=\(warps)", "-DLINEA_BSM_WM=\(rowTiles)"]
            let f = try ctx.entry(name, of: CUDAKernels.attentionBlockSparseMMA, options: shapeOptions)
            let tileRows = warpRows * warps
            // Q, two K and two V tiles of 64 keys (rows padded to D + 8 halves), then the kept-key-block bitmask.
            let smem = (tileRows + 4 * 64) * (s.headDim + 8) * 2 + max(1, (kb + 31) / 32) * 4
            try ctx.launch(
                f, grid: ((s.queryLength + tileRows - 1) / tileRows, s.queryHeads, s.batch), block: (32 * warps, 1, 1),
                sharedBytes: smem,
                arguments: [.pointer(q.address), .pointer(k.address), .pointer(v.address), .pointer(mask.address),
                            .pointer(o.address), .pointer(lse?.address ?? 0), .int32(Int32(s.queryLength)), .int32(Int32(s.keyLength)),
                            .int32(Int32(s.queryHeads)), .int32(Int32(s.kvHeads)), .int32(Int32(bmTC)), .int32(Int32(bnTC)),
                            .int32(Int32(maskB)), .int32(Int32(maskH)), .int32(Int32(kb)), .float(scaleLog2),
                            .int32(causal ? 1 : 0), .int32(outKind)])
            return
        }
        let dmax = s.headDim <= 64 ? 64 : s.headDim <= 128 ? 128 : 256
        let f = try ctx.entry("linea_attn_bsparse_d\(dmax)", of: CUDAKernels.attentionBlockSparse)
        let smem = (64 * s.headDim + 32 * (s.headDim + 1) + 32 * s.headDim) * 4
        try ctx.launch(
            f, grid: ((s.queryLength + 63) / 64, s.queryHeads, s.batch), block: (256, 1, 1), sharedBytes: smem,
            arguments: [.pointer(q.address), .pointer(k.address), .pointer(v.address), .int32(inKind), .pointer(mask.address),
                        .pointer(o.address), .pointer(lse?.address ?? 0), .int32(Int32(s.queryLength)), .int32(Int32(s.keyLength)),
                        .int32(Int32(s.queryHeads)), .int32(Int32(s.kvHeads)), .int32(Int32(s.headDim)),
                        // A block longer than the sequence is one block either way: clamping cannot change the mask.
                        .int32(Int32(clamping: blockRows)), .int32(Int32(clamping: blockKeys)), .int32(Int32(maskB)), .int32(Int32(maskH)),
                        .int32(Int32(qb)), .int32(Int32(kb)), .float(scaleLog2), .int32(causal ? 1 : 0),
                        .int32(outKind)])
    }
}
