import Foundation
import Linea

/// Sizes of one attention call: q `[batch, queryLength, queryHeads, headDim]`, k/v `[batch, keyLength, kvHeads, headDim]`.
package struct CUDAAttentionShape: Sendable, Equatable, CustomStringConvertible {
    /// B, T (queries), S (keys), Hq, Hkv, D.
    public var batch: Int, queryLength: Int, keyLength: Int, queryHeads: Int, kvHeads: Int, headDim: Int
    /// Rows per sequence in the k and v buffers (>= S): a preallocated KV cache is read in place as the first S of
    /// its capacity rows.
    public var keyRows: Int

    /// Creates a shape (`keyRows` nil: packed, S); `kvHeads` must divide `queryHeads` (GQA), checked at launch.
    public init(batch: Int, queryLength: Int, keyLength: Int, queryHeads: Int, kvHeads: Int, headDim: Int, keyRows: Int? = nil) {
        self.batch = batch; self.queryLength = queryLength; self.keyLength = keyLength
        self.queryHeads = queryHeads; self.kvHeads = kvHeads; self.headDim = headDim; self.keyRows = keyRows ?? keyLength
    }

    public var description: String {
        "B=\(batch) T=\(queryLength) S=\(keyLength) Hq=\(queryHeads) Hkv=\(kvHeads) D=\(headDim)"
    }

    /// Matmul FLOPs of the forward pass (4·B·Hq·D per visible (query, key) pair; causal counts ~half).
    public func flops(causal: Bool) -> Double {
        let pairs = causal && keyLength == queryLength
            ? Double(queryLength) * Double(queryLength + 1) / 2 : Double(queryLength) * Double(keyLength)
        return 4 * Double(batch * queryHeads * headDim) * pairs
    }
}

extension CUDAAttentionShape {
    /// Throws unless every size is >= 1, `kvHeads` divides `queryHeads` and `headDim <= 256` (the kernels' limits). O(1).
    func validate() throws {
        for (name, value) in [("batch", batch), ("queryLength", queryLength), ("keyLength", keyLength),
                              ("queryHeads", queryHeads), ("kvHeads", kvHeads), ("headDim", headDim)] where value < 1 {
            throw LineaError.invalidArgument(argument: "shape.\(name)", expected: ">= 1", actual: "\(value)")
        }
        guard queryHeads % kvHeads == 0 else {
            throw LineaError.invalidArgument(
                argument: "kvHeads", expected: "a divisor of queryHeads (\(queryHeads))", actual: "\(kvHeads)")
        }
        guard headDim <= 256 else {
            throw LineaError.invalidArgument(argument: "headDim", expected: "<= 256", actual: "\(headDim)")
        }
        guard keyRows >= keyLength, keyRows <= Int(Int32.max) else {
            throw LineaError.invalidArgument(argument: "keyRows", expected: "keyLength (\(keyLength)) ... \(Int32.max)", actual: "\(keyRows)")
        }
    }

    /// The checks every attention launch shares, returning the scale to use (default 1/sqrt(D)): the shape
    /// (`validate`), `dtype` and `outputDType` among f32, bf16 and f16, a finite scale, and buffers large enough for
    /// q, k, v (`dtype` elements), o (`outputDType`) and lse (fp32, optional). O(1).
    func checkLaunch(
        q: CUDABuffer, k: CUDABuffer, v: CUDABuffer, o: CUDABuffer, lse: CUDABuffer?, dtype: DType, outputDType: DType,
        scale: Float?
    ) throws -> Float {
        try validate()
        _ = try CUDAUpload.typeCode(dtype)
        _ = try CUDAUpload.typeCode(outputDType, argument: "outputDType")
        let scaleValue = scale ?? 1 / Float(headDim).squareRoot()
        guard scaleValue.isFinite else {
            throw LineaError.invalidArgument(argument: "scale", expected: "a finite value", actual: "\(scaleValue)")
        }
        let qCount = batch * queryLength * queryHeads * headDim, kCount = ((batch - 1) * keyRows + keyLength) * kvHeads * headDim
        for (name, buffer, bytes) in [("q", q, qCount * dtype.byteCount), ("k", k, kCount * dtype.byteCount),
                                      ("v", v, kCount * dtype.byteCount), ("o", o, qCount * outputDType.byteCount)]
            where buffer.byteCount < bytes {
            throw LineaError.shapeMismatch(argument: name, expected: ">= \(bytes) bytes for \(self)", actual: "\(buffer.byteCount) bytes")
        }
        let rows = batch * queryLength * queryHeads
        if let lse, lse.byteCount < rows * 4 {
            throw LineaError.shapeMismatch(argument: "lse", expected: ">= \(rows * 4) bytes", actual: "\(lse.byteCount) bytes")
        }
        return scaleValue
    }
}

/// Flash attention forward on the GPU (exact softmax attention, O(T) extra memory).
package enum CUDAAttention {
    /// Which kernel runs: the Hopper wgmma kernel (bf16/fp16, D = 128, sm_90), the mma.sync tensor-core kernel
    /// (bf16/fp16, D in {64, 128}, sm_80+), the portable one, or the best that fits.
    public enum Kernel: String, Sendable, CaseIterable {
        /// `auto`: wgmma, else mma.sync, else portable, whichever first takes the call; `wgmma` and `tensorCore`
        /// (mma.sync): throw if they cannot take it.
        case auto, wgmma, tensorCore, portable
    }

    /// Whether `.wgmma` runs the warp-specialized Hopper entry (`linea_attn_wgmma_ws_*`) rather than the v4 one.
    static let wgmmaWarpSpecialized = true
    /// The warp-specialized entry runs persistent (one block per SM) for at most this many 128-row query tiles
    /// (H100, causal T = 2048: 0.674 ms persistent vs 0.709 one block per item; T = 8192: 1.97-2.81 vs 2.02).
    static let wgmmaPersistentMaxQueryTiles = 16
    /// NVRTC defines for the wgmma kernel from `LINEA_ATTN_OPTIONS` (space-separated, e.g. `-DLINEA_WG_GROUP=8`): launch-plan
    /// experiments through `linea bench` without a rebuild.
    static let experimentOptions = (ProcessInfo.processInfo.environment["LINEA_ATTN_OPTIONS"] ?? "").split(separator: " ").map(String.init)

    /// Launch shape of the tensor-core kernel (compile-time switches of `CUDAKernels.attentionMMA`).
    public struct TensorCoreConfig: Sendable, Equatable, CustomStringConvertible {
        /// Warps per block.
        public var warps: Int
        /// 16-row query subtiles per warp (each K/V fragment then feeds this many MMAs).
        public var rowTilesPerWarp: Int
        /// Keys per tile (32, 64 or 128).
        public var blockKeys: Int
        /// Re-read Q fragments from shared memory (fewer registers) instead of keeping them in registers.
        public var qInSharedMemory: Bool
        /// Minimum resident blocks per SM (caps registers per thread).
        public var minBlocksPerSM: Int
        /// Further NVRTC defines (e.g. `-DLINEA_MMA_SPLIT=0`, see the kernel source), for experiments; also passed
        /// to the wgmma kernel (its `LINEA_WG_*` switches).
        public var extraOptions: [String] = []

        /// The measured default on H100 (see the kernel source).
        /// (H100, causal D=128 bf16, B*T=32768, H=16: 1.30 ms at T=2048 and 4.34 ms at T=8192, vs 1.39 / 4.91 for
        /// 16 rows/warp, and 1.42 / 4.82 for 32 keys/tile.)
        public static let `default` = TensorCoreConfig(
            warps: 8, rowTilesPerWarp: 2, blockKeys: 64, qInSharedMemory: true, minBlocksPerSM: 1)

        /// Creates a configuration; checked when launched.
        public init(warps: Int, rowTilesPerWarp: Int, blockKeys: Int = 64, qInSharedMemory: Bool, minBlocksPerSM: Int) {
            self.warps = warps; self.rowTilesPerWarp = rowTilesPerWarp; self.blockKeys = blockKeys
            self.qInSharedMemory = qInSharedMemory; self.minBlocksPerSM = minBlocksPerSM
        }

        /// Query rows per block.
        public var blockRows: Int { 16 * rowTilesPerWarp * warps }
        /// NVRTC defines selecting this configuration.
        public var options: [String] {
            ["-DLINEA_MMA_NW=\(warps)", "-DLINEA_MMA_WM=\(rowTilesPerWarp)", "-DLINEA_MMA_BN=\(blockKeys)",
             "-DLINEA_MMA_QSMEM=\(qInSharedMemory ? 1 : 0)", "-DLINEA_MMA_MINB=\(minBlocksPerSM)"] + extraOptions
        }
        public var description: String {
            "warps \(warps), rows/warp \(16 * rowTilesPerWarp), keys/tile \(blockKeys), Q in \(qInSharedMemory ? "smem" : "regs"), min blocks \(minBlocksPerSM)"
                + extraOptions.map { " \($0)" }.joined()
        }
    }

    /// Attention of q `[B,T,Hq,D]` over k, v `[B,S,Hkv,D]` (Hkv divides Hq). Inputs are uploaded as `dtype`
    /// (`.float32`, `.bfloat16` or `.float16`, rounded to nearest even); math in fp32. Causal masking is bottom-right aligned
    /// (query i at position i + S - T sees keys j <= that); `window` W keeps keys with pos - W < j <= pos (needs
    /// `causal`). Returns o `[B,T,Hq,D]` (kept in fp32 on the device, not rounded to `dtype`) and lse `[B,T,Hq]`
    /// (natural log; -inf and o = 0 where no key is visible). `.auto` picks tensor cores for bf16/fp16, D 64/128.
    /// O(B·Hq·T·S·D) work on the device, plus the transfers.
    public static func forward(
        q: Tensor, k: Tensor, v: Tensor, scale: Float? = nil, causal: Bool = false, window: Int? = nil,
        dtype: DType = .float32, kernel: Kernel = .auto, context: CUDAContext? = nil
    ) throws -> (o: Tensor, lse: Tensor) {
        try onHost(q: q, k: k, v: v, dtype: dtype, context: context) { io in
            try forward(
                q: io.q, k: io.k, v: io.v, o: io.o, lse: io.lse, shape: io.shape, scale: scale, causal: causal,
                window: window, dtype: dtype, outputDType: .float32, kernel: kernel)
        }
    }

    /// Device buffers of one host-tensor call: q, k, v uploaded as the call's dtype, fp32 o and lse, and the shape.
    public struct HostCallBuffers {
        /// Inputs on the device.
        public let q: CUDABuffer, k: CUDABuffer, v: CUDABuffer
        /// Outputs on the device: o `[B,T,Hq,D]` and lse `[B,T,Hq]`, fp32.
        public let o: CUDABuffer, lse: CUDABuffer
        /// Sizes read off q and k.
        public let shape: CUDAAttentionShape
    }

    /// The host-tensor plumbing the attention kernels share: checks q `[B,T,Hq,D]` and k, v `[B,S,Hkv,D]`,
    /// uploads them as `dtype`, runs `launch` on the buffers, and downloads o `[B,T,Hq,D]` and lse `[B,T,Hq]`. O(transfers).
    public static func onHost(
        q: Tensor, k: Tensor, v: Tensor, dtype: DType, context: CUDAContext?, _ launch: (HostCallBuffers) throws -> Void
    ) throws -> (o: Tensor, lse: Tensor) {
        try q.expectRank(4, "q", layout: "[B, T, Hq, D]")
        try k.expectRank(4, "k", layout: "[B, S, Hkv, D]")
        let shape = CUDAAttentionShape(
            batch: q.shape[0], queryLength: q.shape[1], keyLength: k.shape[1], queryHeads: q.shape[2],
            kvHeads: k.shape[2], headDim: q.shape[3])
        try k.expectShape([shape.batch, shape.keyLength, shape.kvHeads, shape.headDim], "k")
        try v.expectShape(k.shape, "v")
        let ctx = try context ?? CUDABackend.shared
        let rows = shape.batch * shape.queryLength * shape.queryHeads
        let io = HostCallBuffers(
            q: try CUDAUpload.buffer(q, dtype: dtype, context: ctx), k: try CUDAUpload.buffer(k, dtype: dtype, context: ctx),
            v: try CUDAUpload.buffer(v, dtype: dtype, context: ctx), o: try CUDABuffer(context: ctx, byteCount: q.count * 4),
            lse: try CUDABuffer(context: ctx, byteCount: rows * 4), shape: shape)
        try launch(io)
        return (try Tensor(shape: q.shape, scalars: io.o.download(Float.self, count: q.count)),
                try Tensor(shape: [shape.batch, shape.queryLength, shape.queryHeads], scalars: io.lse.download(Float.self, count: rows)))
    }

    /// Device-buffer variant (no transfers; queues the kernel on the buffers' context stream and returns).
    /// q, k, v hold `dtype` elements (`.float32`, `.bfloat16` or `.float16` bits); o holds `outputDType` (`.float32`,
    /// `.bfloat16` or `.float16`); lse (optional) holds fp32 `[B,T,Hq]`. Throws if a buffer is too small or an option is invalid.
    /// `tensorCoreConfig` picks the tensor-core kernel's launch shape (for tuning experiments).
    public static func forward(
        q: CUDABuffer, k: CUDABuffer, v: CUDABuffer, o: CUDABuffer, lse: CUDABuffer?, shape: CUDAAttentionShape,
        scale: Float? = nil, causal: Bool = false, window: Int? = nil, dtype: DType = .bfloat16,
        outputDType: DType = .bfloat16, kernel: Kernel = .auto, tensorCoreConfig: TensorCoreConfig = .default
    ) throws {
        let s = shape
        let scaleValue = try s.checkLaunch(q: q, k: k, v: v, o: o, lse: lse, dtype: dtype, outputDType: outputDType, scale: scale)
        if let w = window {
            guard w >= 1 else { throw LineaError.invalidArgument(argument: "window", expected: ">= 1 or nil", actual: "\(w)") }
            guard causal else {
                throw LineaError.invalidArgument(argument: "window", expected: "nil when causal is false", actual: "\(w)")
            }
        }
        let ctx = q.context
        // Both tensor-core kernels take the row max on unscaled scores, so they need scale > 0. The wgmma kernel
        // exists for D = 128 only (its tiles, swizzle and register budget are laid out for that width) and needs
        // an sm_90 device (wgmma is sm_90a-only); masks (causal, window), GQA and any T, S go through it. Other
        // head dims fall back to mma.sync (D 64) or the portable kernel; fp32 inputs always take the portable one.
        let half = dtype == .bfloat16 || dtype == .float16
        let canUseTensorCores = half && (s.headDim == 64 || s.headDim == 128) && ctx.computeCapability.major >= 8
            && scaleValue > 0
        let canUseWGMMA = half && s.headDim == 128 && ctx.computeCapability.major == 9 && scaleValue > 0
        let chosen: Kernel
        switch kernel {
        case .auto: chosen = canUseWGMMA ? .wgmma : canUseTensorCores ? .tensorCore : .portable
        case .portable: chosen = .portable
        case .tensorCore:
            guard canUseTensorCores else {
                throw LineaError.invalidArgument(
                    argument: "kernel", expected: "tensorCore only for bfloat16/float16, headDim 64 or 128, sm_80+, scale > 0",
                    actual: "\(dtype), headDim \(s.headDim), \(ctx.architecture), scale \(scaleValue)")
            }
            chosen = .tensorCore
        case .wgmma:
            guard canUseWGMMA else {
                throw LineaError.invalidArgument(
                    argument: "kernel", expected: "wgmma only for bfloat16/float16, headDim 128, sm_90, scale > 0",
                    actual: "\(dtype), headDim \(s.headDim), \(ctx.architecture), scale \(scaleValue)")
            }
            chosen = .wgmma
        }
        let scaleLog2 = scaleValue * 1.4426950408889634
        let common: [CUDAKernelArgument] = [
            .pointer(q.address), .pointer(k.address), .pointer(v.address), .pointer(o.address), .pointer(lse?.address ?? 0),
            .int32(Int32(s.queryLength)), .int32(Int32(s.keyLength)), .int32(Int32(s.queryHeads)), .int32(Int32(s.kvHeads)),
        ]
        let tail: [CUDAKernelArgument] = [
            // W >= S sees every key: clamped, so the kernel's int32 `pos - W + 1` cannot wrap for W near Int.max.
            .float(scaleLog2), .int32(causal ? 1 : 0), .int32(Int32(clamping: min(window ?? 0, max(s.keyLength, 1)))),
            .int32(try CUDAUpload.typeCode(outputDType, argument: "outputDType")),
        ]
        let typeName = dtype == .float32 ? "f32" : dtype == .bfloat16 ? "bf16" : "f16"
        let keyRows = CUDAKernelArgument.int32(Int32(s.keyRows))
        switch chosen {
        case .wgmma:
            // `-DLINEA_WG_WS=1` / `=0` in extraOptions picks the warp-specialized entry (384 threads: a producer
            // warpgroup and two ping-ponging consumers) or the v4 one (256 threads); otherwise `wgmmaWarpSpecialized`.
            let extra = tensorCoreConfig.extraOptions + experimentOptions
            let ws = extra.contains("-DLINEA_WG_WS=1") || (wgmmaWarpSpecialized && !extra.contains("-DLINEA_WG_WS=0"))
            let f = try ctx.function(
                source: CUDAKernels.attentionHopper, name: "linea_attn_wgmma_\(ws ? "ws_" : "")\(typeName)_d128",
                options: CUDAKernels.attentionHopperOptions + extra)
            // Q tile + 3 stages of K and V tiles (128 x 128 16-bit each), plus 1 KiB to align the swizzled tiles.
            let smem = 1024 + 7 * 128 * 128 * 2
            let queryTiles = (s.queryLength + 127) / 128
            if ws {
                // One block per (query tile, head, batch) item, or (by default up to `wgmmaPersistentMaxQueryTiles`
                // query tiles; `-DLINEA_WG_PERSIST=1` / `=0` forces it either way) one block per SM walking the items,
                // in groups of 4 (persistent) or 8 (batch, head) pairs (`-DLINEA_WG_GROUP=n` sets it).
                let items = queryTiles * s.queryHeads * s.batch
                let persistent = extra.contains("-DLINEA_WG_PERSIST=1")
                    || (queryTiles <= wgmmaPersistentMaxQueryTiles && !extra.contains("-DLINEA_WG_PERSIST=0"))
                let group = extra.lazy.compactMap { $0.hasPrefix("-DLINEA_WG_GROUP=") ? Int($0.dropFirst(17)) : nil }
                    .first.map { max(1, $0) } ?? (persistent ? 4 : 8)
                try ctx.launch(
                    f, grid: (persistent ? min(items, ctx.multiprocessorCount) : items, 1, 1), block: (384, 1, 1),
                    sharedBytes: smem, arguments: common + tail + [.int32(Int32(s.batch)), .int32(Int32(group)), keyRows])
            } else {
                try ctx.launch(
                    f, grid: (queryTiles, s.queryHeads, s.batch), block: (256, 1, 1), sharedBytes: smem,
                    arguments: common + tail + [keyRows])
            }
        case .tensorCore, .auto:
            let c = tensorCoreConfig
            guard [1, 2, 4, 8, 16].contains(c.warps), [1, 2].contains(c.rowTilesPerWarp), (1...4).contains(c.minBlocksPerSM),
                  [32, 64, 128].contains(c.blockKeys) else {
                throw LineaError.invalidArgument(
                    argument: "tensorCoreConfig", expected: "warps 1-16 (power of 2), rowTilesPerWarp 1-2, blockKeys 32/64/128, minBlocksPerSM 1-4",
                    actual: "\(c)")
            }
            let f = try ctx.function(
                source: CUDAKernels.attentionMMA, name: "linea_attn_mma_\(typeName)_d\(s.headDim)",
                options: c == .default ? [] : c.options)  // the source's #define defaults are `.default`
            let rows = c.blockRows
            let smem = (rows + 4 * c.blockKeys) * (s.headDim + 8) * 2
            try ctx.launch(
                f, grid: ((s.queryLength + rows - 1) / rows, s.queryHeads, s.batch), block: (32 * c.warps, 1, 1),
                sharedBytes: smem, arguments: common + tail + [keyRows])
        case .portable:
            let dmax = s.headDim <= 64 ? 64 : s.headDim <= 128 ? 128 : 256
            let f = try ctx.entry("linea_attn_simple_\(typeName)_d\(dmax)", of: CUDAKernels.attentionSimple)
            let smem = (64 * s.headDim + 32 * (s.headDim + 1) + 32 * s.headDim) * 4
            try ctx.launch(
                f, grid: ((s.queryLength + 63) / 64, s.queryHeads, s.batch), block: (256, 1, 1), sharedBytes: smem,
                arguments: common + [.int32(Int32(s.headDim))] + tail + [keyRows])
        }
    }
}
