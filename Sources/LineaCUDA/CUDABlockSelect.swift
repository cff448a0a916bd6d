import Foundation
import Linea

extension CUDADeviceBackend {
    /// How XAttention's antidiagonal scores run: `simt`, one fp32 CUDA-core kernel (the checked default), or `gemm`,
    /// X = Q' K'ᵀ per head on cuBLAS (tensor cores for bf16 / f16) then a row-softmax kernel into the blocks.
    package enum AntidiagonalPath: String, Sendable, CaseIterable { case simt, gemm }

    /// `LINEA_XATTN_SCORING=gemm|simt` (read once; default simt until the gemm path has passed its GPU tests).
    static let antidiagonalPath = AntidiagonalPath(rawValue: ProcessInfo.processInfo.environment["LINEA_XATTN_SCORING"] ?? "") ?? .simt

    /// Rows of X = Q' K'ᵀ per GEMM of the gemm path: at most 64 Mi f32 scores (256 MiB of scratch) at a time.
    static let antidiagonalScratchScores = 64 << 20

    /// Largest dynamic shared memory a selector row kernel asks for: past it the row's scores are recomputed in the
    /// second pass instead of kept (a bigger request would only lower occupancy further). 96 KiB.
    static let blockSelectSharedLimit = 96 * 1024

    /// The scoring kernels: q, k of one dtype among f32, bf16, f16, f32 outputs; XAttention's query group (stride x D
    /// floats) in shared memory; sizes that fit the kernels' 32-bit indices. O(1).
    func blockScoresSupport(_ c: BlockScoresCall) -> Support {
        guard CUDAUpload.inputTypes.contains(c.q.dtype), c.k.dtype == c.q.dtype else {
            return .unsupported("q, k dtypes \(c.q.dtype.shortName), \(c.k.dtype.shortName); the scoring kernels take one of f32, bf16, f16 for both")
        }
        for x in [c.blocks, c.columns, c.diagonals].compactMap({ $0 }) where x.dtype != .float32 {
            return .unsupported("an output has dtype \(x.dtype.shortName); the scoring kernels write f32")
        }
        guard c.q.rank == 4, c.k.rank == 4 else { return .unsupported("q \(c.q.shape), k \(c.k.shape); the scoring kernels take [B, T, H, D]") }
        let (T, D, S) = (c.q.shape[1], c.q.shape[3], c.k.shape[1])
        guard c.k.shape[0] == c.q.shape[0], c.k.shape[3] == D, c.k.shape[2] >= 1, c.q.shape[2] % c.k.shape[2] == 0, c.blockSize >= 1 else {
            return .unsupported("q \(c.q.shape), k \(c.k.shape), block size \(c.blockSize): expected one B and D, Hkv dividing Hq, a block size >= 1")
        }
        if case let .antidiagonal(stride) = c.kind, stride < 1 { return .unsupported("stride \(stride); expected >= 1") }
        if case let .lastQueries(count) = c.kind, count < 1 { return .unsupported("last queries \(count); expected >= 1") }
        if case let .antidiagonal(stride) = c.kind, stride * D * 4 > Self.blockSelectSharedLimit {
            return .unsupported("stride \(stride) x D \(D): the XAttention kernel keeps a query group in \(Self.blockSelectSharedLimit / 1024) KiB of shared memory")
        }
        // Element offsets are 64-bit in the kernels; the grid (a block per query group or row) and the sizes are not.
        let rows = c.q.shape[0] * c.q.shape[2] * max(T, S)
        if rows > Int(Int32.max) {
            return .unsupported("B·Hq·max(T, S) = \(rows); the scoring kernels launch a block per query row or group (32-bit grid)")
        }
        return .supported
    }

    /// Queues the scores `c.kind` asks for into `c`'s zeroed outputs (one kernel; pooled: two pooling kernels into
    /// f32 scratch, then the products). O(the scoring; see `BlockSelector.scores`).
    func blockScores(_ c: BlockScoresCall) throws {
        let (B, T, Hq, D) = (c.q.shape[0], c.q.shape[1], c.q.shape[2], c.q.shape[3])
        let (S, Hkv) = (c.k.shape[1], c.k.shape[2])
        guard B * T * Hq * D > 0, S > 0 else { return }
        let kind = try CUDAUpload.typeCode(c.q.dtype)
        let bs = c.blockSize
        let (QB, KB) = ((T + bs - 1) / bs, (S + bs - 1) / bs)
        let limit = min(context.maxSharedMemoryPerBlock, Self.blockSelectSharedLimit)
        // The kernels write where the shapes say: outputs of other sizes (a call not made by BlockSelector.scores) are refused.
        var (rows, sums): (Int, [Int]?) = (QB, nil)
        if case let .lastQueries(count) = c.kind { (rows, sums) = ((T - 1) / bs - (T - min(count, T)) / bs + 1, [B, Hq, S]) }
        guard c.blocks.shape == [B, Hq, rows, KB], c.columns?.shape == sums, c.diagonals?.shape == sums else {
            throw LineaError.shapeMismatch(argument: "block scores", expected: "blocks [\(B), \(Hq), \(rows), \(KB)]\(sums.map { ", columns and diagonals \($0)" } ?? "")",
                                           actual: "blocks \(c.blocks.shape), columns \(c.columns?.shape ?? []), diagonals \(c.diagonals?.shape ?? [])")
        }
        func i32(_ x: Int) -> CUDAKernelArgument { .int32(Int32(x)) }
        func pointer(_ x: DeviceTensor?) -> CUDAKernelArgument { .pointer(x.map { UInt64($0.address) } ?? 0) }
        switch c.kind {
        case let .antidiagonal(stride):
            try antidiagonalScores(q: c.q, k: c.k, blocks: c.blocks, blockSize: bs, stride: stride, scale: c.scale, causal: c.causal,
                                   path: Self.antidiagonalPath)
        case .pooled:
            let qm = try DeviceTensor.uninitialized([B, Hq, QB, D], on: device)
            let km = try DeviceTensor.uninitialized([B, Hkv, KB, D], on: device)
            let pool = try context.function(source: CUDAKernels.blockSelect, name: "linea_bsel_pool")
            for (x, out, L, H) in [(c.q, qm, T, Hq), (c.k, km, S, Hkv)] {
                try context.launch(pool, grid: (Self.gridStride(out.count), 1, 1), block: (256, 1, 1), arguments: [
                    pointer(x), .int32(kind), pointer(out), i32(B), i32(L), i32(H), i32(D), i32(bs),
                ])
            }
            let f = try context.function(source: CUDAKernels.blockSelect, name: "linea_bsel_pooled")
            try context.launch(f, grid: (Self.gridStride(c.blocks.count), 1, 1), block: (256, 1, 1), arguments: [
                pointer(qm), pointer(km), pointer(c.blocks), i32(B), i32(Hq), i32(Hkv), i32(QB), i32(KB), i32(D), .float(c.scale),
            ])
        case let .lastQueries(count):
            let n = min(count, T)
            let (queryBytes, rowBytes) = (D * 4, S * 4)
            let cached = queryBytes + rowBytes <= limit
            let f = try context.function(source: CUDAKernels.blockSelect, name: "linea_bsel_lastq")
            try context.launch(f, grid: (B * Hq * n, 1, 1), block: (256, 1, 1), sharedBytes: queryBytes + (cached ? rowBytes : 0), arguments: [
                pointer(c.q), pointer(c.k), .int32(kind), pointer(c.columns), pointer(c.diagonals), pointer(c.blocks), i32(B), i32(T),
                i32(S), i32(Hq), i32(Hkv), i32(D), i32(n), i32(bs), .float(c.scale), i32(cached ? 1 : 0),
            ])
        }
    }

    /// XAttention's block scores of q `[B,T,Hq,D]`, k `[B,S,Hkv,D]` into the zeroed `blocks [B,Hq,QB,KB]` (f32) by
    /// `path` (the dispatch passes `antidiagonalPath`; tests run both). Shapes as `blockScoresSupport` checked them;
    /// `scratchScores` bounds the gemm path's X (tests make it small to run several row chunks).
    /// O(B·Hq·T·S·D / stride) either way; gemm adds O(T·D + S·D) of regrouping per head and 256 MiB of scratch.
    package func antidiagonalScores(q: DeviceTensor, k: DeviceTensor, blocks: DeviceTensor, blockSize bs: Int, stride: Int, scale: Float,
                                    causal: Bool, path: AntidiagonalPath, scratchScores: Int = antidiagonalScratchScores) throws {
        let (B, T, Hq, D) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let (S, Hkv) = (k.shape[1], k.shape[2])
        guard B * T * Hq * D > 0, S > 0 else { return }
        let kind = try CUDAUpload.typeCode(q.dtype)
        let (QB, KB) = ((T + bs - 1) / bs, (S + bs - 1) / bs)
        let (R, C) = ((T + stride - 1) / stride, (S + stride - 1) / stride)
        func i32(_ x: Int) -> CUDAKernelArgument { .int32(Int32(x)) }
        func pointer(_ x: DeviceTensor, offset: Int = 0) -> CUDAKernelArgument { .pointer(UInt64(x.address) + UInt64(offset * x.dtype.byteCount)) }
        if path == .gemm {
            let width = stride * D
            let (qg, kg) = (try DeviceTensor.uninitialized([R, width], dtype: q.dtype, on: device),
                            try DeviceTensor.uninitialized([C, width], dtype: q.dtype, on: device))
            let chunk = max(1, min(R, scratchScores / C))
            let x = try DeviceTensor.uninitialized([chunk * C], on: device)
            let groups = try context.function(source: CUDAKernels.blockSelect, name: "linea_bsel_groups")
            let rowSoftmax = try context.function(source: CUDAKernels.blockSelect, name: "linea_bsel_rowsoftmax")
            func view(_ t: DeviceTensor, from: Int, count: Int) -> CUDABuffer {
                CUDABuffer(context: context, viewing: UInt64(t.address) + UInt64(from * t.dtype.byteCount), byteCount: count * t.dtype.byteCount)
            }
            for b in 0..<B {
                for hk in 0..<Hkv {
                    try context.launch(groups, grid: (Self.gridStride(C * width), 1, 1), block: (256, 1, 1), arguments: [
                        pointer(k), pointer(kg), .int32(kind), i32(b), i32(S), i32(Hkv), i32(hk), i32(D), i32(stride), i32(0),
                    ])
                    for h in hk * (Hq / Hkv)..<(hk + 1) * (Hq / Hkv) {
                        try context.launch(groups, grid: (Self.gridStride(R * width), 1, 1), block: (256, 1, 1), arguments: [
                            pointer(q), pointer(qg), .int32(kind), i32(b), i32(T), i32(Hq), i32(h), i32(D), i32(stride), i32(1),
                        ])
                        for r0 in Swift.stride(from: 0, to: R, by: chunk) {
                            let rows = min(chunk, R - r0)
                            // Rows see more groups as r grows (causal): the chunk's last row bounds the columns needed.
                            let last = min(T - 1, (r0 + rows - 1) * stride + stride - 1) + (causal ? S - T : 0)
                            guard last >= 0 else { continue }
                            let n = causal ? min(C, last / stride + 1) : C
                            try CUBLAS.linear(x: view(qg, from: r0 * width, count: rows * width), weight: view(kg, from: 0, count: n * width),
                                              out: view(x, from: 0, count: rows * n), m: rows, n: n, k: width, dtype: q.dtype)
                            try context.launch(rowSoftmax, grid: (rows, 1, 1), block: (256, 1, 1), arguments: [
                                pointer(x), i32(n), pointer(blocks, offset: (b * Hq + h) * QB * KB), i32(r0), i32(T), i32(S), i32(stride),
                                i32(bs), i32(causal ? 1 : 0), .float(scale / Float(stride)),
                            ])
                        }
                    }
                }
            }
            return
        }
        // simt: a thread block per query group, its row of scores kept in shared memory when it fits.
        let limit = min(context.maxSharedMemoryPerBlock, Self.blockSelectSharedLimit)
        let (groupBytes, rowBytes) = (stride * D * 4, C * 4)
        let cached = groupBytes + rowBytes <= limit
        let f = try context.function(source: CUDAKernels.blockSelect, name: "linea_bsel_antidiag")
        try context.launch(f, grid: (B * Hq * R, 1, 1), block: (256, 1, 1), sharedBytes: groupBytes + (cached ? rowBytes : 0), arguments: [
            pointer(q), pointer(k), .int32(kind), pointer(blocks), i32(B), i32(T), i32(S), i32(Hq), i32(Hkv), i32(D), i32(stride),
            i32(bs), i32(causal ? 1 : 0), .float(scale / Float(stride)), i32(cached ? 1 : 0),
        ])
    }

    /// Thread blocks of 256 for a grid-stride loop over `elements`, at most 65,536. O(1).
    static func gridStride(_ elements: Int) -> Int { max(1, min((elements + 255) / 256, 1 << 16)) }
}
