import Foundation
import Linea
import LineaCUDA
import Testing

/// The prefill selectors' scoring on the GPU (block_select.cu) against the CPU's (the host selectors' own functions,
/// through the same `BlockSelector.scores`), and the masks chosen from each: the same selection code reads both, so
/// the masks must be equal (skipped when no GPU is present).
@Suite(.enabled(if: CUDABackend.isAvailable, "needs an NVIDIA GPU, its driver and NVRTC"))
struct CUDABlockSelectTests {
    static let gpu = Device.cuda(0)

    init() throws { try CUDADeviceBackend.register() }

    /// (B, T, S, Hq, Hkv, D, block size, causal): partial last blocks, T != S both ways, grouped heads, D = 128 and a
    /// D that is no multiple of 32, and 4,000 keys (rows still kept in shared memory; `longRowsAreRecomputed` covers
    /// rows that are not).
    static let grid: [(Int, Int, Int, Int, Int, Int, Int, Bool)] = [
        (1, 256, 256, 4, 2, 64, 64, true), (2, 200, 330, 2, 1, 40, 32, true), (1, 330, 200, 4, 4, 128, 64, true),
        (1, 192, 192, 2, 1, 64, 64, false), (1, 100, 170, 3, 3, 16, 16, false), (1, 4000, 4000, 2, 1, 64, 128, true),
    ]

    static func inputs(_ c: (Int, Int, Int, Int, Int, Int, Int, Bool), seed: UInt64) throws -> (Tensor, Tensor) {
        let (B, T, S, Hq, Hkv, D, _, _) = c
        return (try Tensor.randomNormal([B, T, Hq, D], seed: seed), try Tensor.randomNormal([B, S, Hkv, D], seed: seed &+ 1))
    }

    static func compare(_ got: DeviceTensor?, _ want: DeviceTensor?, _ label: String, tolerance: Double = 1e-4) throws {
        guard let got, let want else {
            #expect(got == nil && want == nil, "\(label): one side missing")
            return
        }
        #expect(got.shape == want.shape && got.device == gpu, "\(label)")
        let (g, w) = (try got.host().scalars, try want.host().scalars)
        let scale = max(1, w.map { abs(Double($0)) }.max() ?? 0)
        let worst = zip(g, w).map { abs(Double($0) - Double($1)) }.max() ?? 0
        #expect(worst <= tolerance * scale, "\(label): max |gpu - cpu| \(worst) (scale \(scale))")
    }

    static func expectSame(_ got: BlockSelection, _ want: BlockSelection, _ label: String) {
        let differ = zip(got.mask.values, want.mask.values).filter { $0 != $1 }.count
        #expect(got.mask == want.mask, "\(label): \(differ) of \(want.mask.values.count) blocks differ")
        #expect(got.kept == want.kept && got.visible == want.visible && got.density == want.density,
                "\(label): density \(got.density) vs \(want.density)")
        #expect(got.patterns == want.patterns, "\(label): \(got.patterns) vs \(want.patterns)")
    }

    @Test(arguments: grid.indices, [DType.float32, .bfloat16, .float16])
    func scoresMatchTheCPU(_ index: Int, dtype: DType) throws {
        let c = Self.grid[index]
        let (_, _, _, _, _, _, bs, causal) = c
        let (q, k) = try Self.inputs(c, seed: UInt64(300 + index))
        // Both sides read the same rounded values: the CPU side is handed the dtype's rounding too.
        let (cq, ck) = (try DeviceTensor(q, dtype: dtype), try DeviceTensor(k, dtype: dtype))
        let (gq, gk) = (try cq.to(Self.gpu), try ck.to(Self.gpu))
        let options = AttentionOptions(causal: causal)
        var kinds: [BlockScoresCall.Kind] = [.antidiagonal(stride: 8), .antidiagonal(stride: 2), .pooled]
        if causal { kinds += [.lastQueries(count: 64), .lastQueries(count: 5)] }
        for kind in kinds {
            let label = "\(kind) case \(index) \(dtype.shortName)"
            let got = try BlockSelector.scores(kind, q: gq, k: gk, blockSize: bs, options: options)
            let want = try BlockSelector.scores(kind, q: cq, k: ck, blockSize: bs, options: options)
            try Self.compare(got.blocks, want.blocks.to(Self.gpu), label + " blocks")
            try Self.compare(got.columns, want.columns?.to(Self.gpu), label + " columns")
            try Self.compare(got.diagonals, want.diagonals?.to(Self.gpu), label + " diagonals")
        }
    }

    /// XAttention's two GPU paths (the CUDA-core kernel, and X = Q' K'ᵀ on cuBLAS then the row softmax; also in row
    /// chunks of a small scratch) against the CPU's scores.
    @Test(arguments: grid.indices, [DType.float32, .bfloat16])
    func bothAntidiagonalPathsMatchTheCPU(_ index: Int, dtype: DType) throws {
        let backend = try CUDADeviceBackend.register()
        let c = Self.grid[index]
        let (_, _, _, _, _, D, bs, causal) = c
        let (q, k) = try Self.inputs(c, seed: UInt64(500 + index))
        let (cq, ck) = (try DeviceTensor(q, dtype: dtype), try DeviceTensor(k, dtype: dtype))
        let (gq, gk) = (try cq.to(Self.gpu), try ck.to(Self.gpu))
        let scale = 1 / Float(D).squareRoot()
        for stride in [8, 2] {
            let want = try BlockSelector.scores(.antidiagonal(stride: stride), q: cq, k: ck, blockSize: bs,
                                                options: AttentionOptions(scale: scale, causal: causal)).blocks
            for (path, scratch) in [(CUDADeviceBackend.AntidiagonalPath.simt, 1 << 26), (.gemm, 1 << 26), (.gemm, 3000)] {
                let blocks = try DeviceTensor.zeros(want.shape, on: Self.gpu)
                try backend.antidiagonalScores(q: gq, k: gk, blocks: blocks, blockSize: bs, stride: stride, scale: scale, causal: causal,
                                               path: path, scratchScores: scratch)
                try Self.compare(blocks, want.to(Self.gpu), "\(path) scratch \(scratch) stride \(stride) case \(index) \(dtype.shortName)")
            }
        }
    }

    /// Rows too long for shared memory: the kernels recompute the scores in their second pass.
    @Test func longRowsAreRecomputed() throws {
        let c = (1, 64, 30_000, 2, 1, 32, 64, true)
        let (q, k) = try Self.inputs(c, seed: 17)
        let (cq, ck) = (try DeviceTensor(q), try DeviceTensor(k))
        for kind in [BlockScoresCall.Kind.antidiagonal(stride: 1), .lastQueries(count: 64)] {
            let got = try BlockSelector.scores(kind, q: cq.to(Self.gpu), k: ck.to(Self.gpu), blockSize: 64)
            let want = try BlockSelector.scores(kind, q: cq, k: ck, blockSize: 64)
            try Self.compare(got.blocks, want.blocks.to(Self.gpu), "\(kind) blocks")
            try Self.compare(got.columns, want.columns?.to(Self.gpu), "\(kind) columns")
        }
    }

    @Test(arguments: grid.indices)
    func selectionsMatchTheCPU(_ index: Int) throws {
        let c = Self.grid[index]
        let (_, _, _, Hq, _, _, bs, causal) = c
        let (q, k) = try Self.inputs(c, seed: UInt64(400 + index))
        let (gq, gk) = (try DeviceTensor(q, on: Self.gpu), try DeviceTensor(k, on: Self.gpu))
        let options = AttentionOptions(causal: causal)
        for tau in [0.5, 0.9, 1.0] {
            Self.expectSame(try BlockSelector.xAttention(q: gq, k: gk, blockSize: bs, stride: 8, tau: tau, options: options),
                            try BlockSelector.xAttention(q: q, k: k, blockSize: bs, stride: 8, tau: tau, options: options),
                            "xattention case \(index) tau \(tau)")
        }
        for top in [1, 3] {
            Self.expectSame(try BlockSelector.topK(q: gq, k: gk, blockSize: bs, topK: top, options: options),
                            try BlockSelector.topK(q: q, k: k, blockSize: bs, topK: top, options: options), "topk case \(index) k \(top)")
        }
        guard causal else { return }
        // Vertical-slash takes T == S only.
        let candidates: [MInferencePattern] = [.aShape(sinks: 16, window: 64), .blockSparse(topK: 2)]
            + (c.1 == c.2 ? [.verticalSlash(vertical: 60, slash: 150)] : [])
        Self.expectSame(try BlockSelector.mInference(q: gq, k: gk, blockSize: bs, patterns: candidates, search: true),
                        try BlockSelector.mInference(q: q, k: k, blockSize: bs, patterns: candidates, search: true), "minference search case \(index)")
        let perHead = (0..<Hq).map { candidates[$0 % candidates.count] }
        Self.expectSame(try BlockSelector.mInference(q: gq, k: gk, blockSize: bs, patterns: perHead),
                        try BlockSelector.mInference(q: q, k: k, blockSize: bs, patterns: perHead), "minference per head case \(index)")
    }

    /// Select and attend on the GPU: the selection's mask feeds the CUDA block-sparse kernel directly.
    @Test func attentionThroughAGPUSelectionMatchesTheCPU() throws {
        let (q, k) = try Self.inputs((1, 512, 512, 4, 2, 64, 64, true), seed: 23)
        let v = try Tensor.randomNormal(k.shape, seed: 29)
        let (gq, gk, gv) = (try DeviceTensor(q, on: Self.gpu), try DeviceTensor(k, on: Self.gpu), try DeviceTensor(v, on: Self.gpu))
        let sel = try BlockSelector.xAttention(q: gq, k: gk, blockSize: 64, stride: 8, tau: 0.9)
        let got = try BlockSparseAttention.forward(q: gq, k: gk, v: gv, selection: sel)
        #expect(got.o.device == Self.gpu)
        let want = try BlockSparseAttention.reference(q: q, k: k, v: v, mask: sel.mask)
        // The block-sparse kernel's own tolerance (CUDABlockSparseTests) is what this checks, not the selection.
        #expect(ErrorStats(try got.o.host(), want.o).relativeRMS <= 1e-3)
    }

    /// Vertical-slash's exact keys on the GPU: its mask of 64 x 1-key blocks through the portable kernel.
    @Test func attentionThroughAGPUVerticalSlashSelectionAttendsItsExactKeys() throws {
        let (q, k) = try Self.inputs((1, 300, 300, 2, 1, 64, 64, true), seed: 31)
        let v = try Tensor.randomNormal(k.shape, seed: 37)
        let (gq, gk, gv) = (try DeviceTensor(q, on: Self.gpu), try DeviceTensor(k, on: Self.gpu), try DeviceTensor(v, on: Self.gpu))
        let sel = try BlockSelector.mInference(q: gq, k: gk, patterns: [.verticalSlash(vertical: 40, slash: 60)])
        let got = try BlockSparseAttention.forward(q: gq, k: gk, v: gv, selection: sel)
        let want = try BlockSparseAttention.reference(q: q, k: k, v: v, selection: sel)
        #expect(ErrorStats(try got.o.host(), want.o).relativeRMS <= 1e-3)
    }

    @Test func unsupportedCallsAreRefused() throws {
        let q = try DeviceTensor(Tensor.randomNormal([1, 64, 2, 64], seed: 1), on: Self.gpu)
        let k16 = try DeviceTensor(Tensor.randomNormal([1, 64, 2, 64], seed: 2), dtype: .float16, on: Self.gpu)
        #expect(throws: LineaError.self) { _ = try BlockSelector.scores(.pooled, q: q, k: k16, blockSize: 16) }
        // A query group of 512 x 64 floats (128 KiB) exceeds the kernel's shared-memory budget.
        let long = try DeviceTensor(Tensor.randomNormal([1, 1024, 1, 64], seed: 3), on: Self.gpu)
        #expect(throws: LineaError.self) { _ = try BlockSelector.scores(.antidiagonal(stride: 512), q: long, k: long, blockSize: 512) }
    }
}
