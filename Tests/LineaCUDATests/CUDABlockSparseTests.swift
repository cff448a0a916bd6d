import Foundation
import Linea
import LineaCUDA
import Testing

/// Block-sparse attention on the GPU, the Hopper (wgmma), tensor-core and portable kernels, against the CPU's Float64 reference
/// on the same rounded inputs: random densities, causal (S = T, S < T, S > T), GQA, masks broadcast over batch or
/// heads, query blocks that keep nothing, T and S not multiples of 64, block sizes shorter and longer than the tiles,
/// bf16 and f16 (skipped when no GPU is present).
@Suite(.enabled(if: CUDABackend.isAvailable, "needs an NVIDIA GPU, its driver and NVRTC"))
struct CUDABlockSparseTests {
    /// One case: sizes, mask blocks, causal, the mask's batch and head extents (1 broadcasts), density, and whether
    /// query block 1 (or 0) keeps nothing.
    struct Case: CustomStringConvertible {
        let B: Int, T: Int, S: Int, Hq: Int, Hkv: Int, D: Int, blockRows: Int, blockKeys: Int
        let causal: Bool, maskB: Int, maskH: Int, density: Float, emptyBlock: Bool
        var description: String {
            "B\(B) T\(T) S\(S) H\(Hq)/\(Hkv) D\(D) blocks \(blockRows)x\(blockKeys) causal \(causal) mask [\(maskB),\(maskH)] density \(density)"
        }
    }

    static let cases: [Case] = [
        Case(B: 1, T: 256, S: 256, Hq: 2, Hkv: 2, D: 64, blockRows: 64, blockKeys: 64, causal: false, maskB: 1, maskH: 2, density: 0.3, emptyBlock: false),
        Case(B: 2, T: 200, S: 200, Hq: 4, Hkv: 2, D: 128, blockRows: 64, blockKeys: 64, causal: true, maskB: 1, maskH: 1, density: 0.5, emptyBlock: true),
        Case(B: 1, T: 100, S: 300, Hq: 2, Hkv: 1, D: 64, blockRows: 32, blockKeys: 128, causal: true, maskB: 1, maskH: 2, density: 0.4, emptyBlock: false),
        Case(B: 2, T: 130, S: 70, Hq: 2, Hkv: 2, D: 128, blockRows: 16, blockKeys: 64, causal: true, maskB: 2, maskH: 1, density: 0.6, emptyBlock: true),
        Case(B: 1, T: 150, S: 150, Hq: 2, Hkv: 2, D: 64, blockRows: .max, blockKeys: .max, causal: true, maskB: 1, maskH: 1, density: 1, emptyBlock: false),
        Case(B: 1, T: 197, S: 2500, Hq: 2, Hkv: 1, D: 64, blockRows: 64, blockKeys: 64, causal: false, maskB: 1, maskH: 2, density: 0.1, emptyBlock: true),
        Case(B: 1, T: 300, S: 400, Hq: 2, Hkv: 2, D: 128, blockRows: 96, blockKeys: 192, causal: true, maskB: 1, maskH: 2, density: 0.5, emptyBlock: false),
        Case(B: 1, T: 64, S: 64, Hq: 1, Hkv: 1, D: 128, blockRows: 64, blockKeys: 64, causal: false, maskB: 1, maskH: 1, density: 0, emptyBlock: false),
        // Blocks of 128 multiples with D = 128: the Hopper kernel's cases (several tiles per block, partial last blocks).
        Case(B: 2, T: 700, S: 700, Hq: 4, Hkv: 2, D: 128, blockRows: 128, blockKeys: 128, causal: true, maskB: 1, maskH: 4, density: 0.4, emptyBlock: true),
        Case(B: 1, T: 300, S: 900, Hq: 2, Hkv: 1, D: 128, blockRows: 256, blockKeys: 128, causal: true, maskB: 1, maskH: 2, density: 0.5, emptyBlock: false),
        Case(B: 1, T: 520, S: 260, Hq: 2, Hkv: 2, D: 128, blockRows: 128, blockKeys: 256, causal: true, maskB: 1, maskH: 1, density: 0.6, emptyBlock: true),
        Case(B: 2, T: 333, S: 1000, Hq: 2, Hkv: 2, D: 128, blockRows: .max, blockKeys: 384, causal: false, maskB: 2, maskH: 1, density: 0.3, emptyBlock: false),
        Case(B: 1, T: 150, S: 150, Hq: 2, Hkv: 2, D: 128, blockRows: .max, blockKeys: .max, causal: true, maskB: 1, maskH: 1, density: 1, emptyBlock: false),
    ]

    /// Whether the Hopper kernel takes the case: D = 128 and blocks of 128 multiples (or longer than the sequence).
    static func wgmmaFits(_ c: Case) -> Bool {
        c.D == 128 && (c.blockRows >= c.T || c.blockRows % 128 == 0) && (c.blockKeys >= c.S || c.blockKeys % 128 == 0)
    }

    /// The case's mask: seeded random blocks, query block 1 (0 when there is one) cleared when `emptyBlock`.
    static func mask(_ c: Case, seed: UInt64) throws -> BlockMask {
        let m = try BlockMask.random(B: c.maskB, H: c.maskH, T: c.T, S: c.S, blockRows: c.blockRows, blockKeys: c.blockKeys,
                                     density: c.density, seed: seed)
        guard c.emptyBlock else { return m }
        let (qb, kb) = (m.shape[2], m.shape[3])
        let rb = min(1, qb - 1)
        var values = m.values
        for bh in 0..<(m.shape[0] * m.shape[1]) {
            for cb in 0..<kb { values[(bh * qb + rb) * kb + cb] = 0 }
        }
        return try BlockMask(shape: m.shape, blockRows: c.blockRows, blockKeys: c.blockKeys, values: values)
    }

    @Test(arguments: cases.indices)
    func tensorCoreAndPortableMatchReference(index: Int) throws {
        let ctx = try CUDABackend.shared
        let c = Self.cases[index]
        let seed = UInt64(100 + index)
        let mask = try Self.mask(c, seed: seed)
        var kernels: [CUDABlockSparse.Kernel] = [.portable, .auto]
        if ctx.computeCapability.major >= 8 { kernels.append(.tensorCore) }
        if ctx.computeCapability.major == 9 && Self.wgmmaFits(c) { kernels.append(.wgmma) }
        for dtype in [DType.bfloat16, .float16] {
            let q = CUDAUpload.rounded(try Tensor.randomNormal([c.B, c.T, c.Hq, c.D], seed: seed), dtype)
            let k = CUDAUpload.rounded(try Tensor.randomNormal([c.B, c.S, c.Hkv, c.D], seed: seed &+ 1), dtype)
            let v = CUDAUpload.rounded(try Tensor.randomNormal([c.B, c.S, c.Hkv, c.D], seed: seed &+ 2), dtype)
            let want = try BlockSparseAttention.reference(q: q, k: k, v: v, mask: mask, options: AttentionOptions(causal: c.causal))
            for kernel in kernels {
                let got = try CUDABlockSparse.forward(q: q, k: k, v: v, mask: mask, causal: c.causal, dtype: dtype, kernel: kernel,
                                                      context: ctx)
                let (o, lse) = (ErrorStats(got.o, want.o), ErrorStats(got.lse, want.lse))
                // lse = -inf must match exactly (ErrorStats gives an infinite error otherwise).
                #expect(o.relativeRMS <= 5e-3 && lse.relativeRMS <= 5e-3, "\(c) \(dtype) \(kernel): o \(o), lse \(lse)")
            }
        }
    }

    /// The device-buffer entry writing o as bf16 and f16 (the kernels' packed stores), every kernel that takes the case.
    @Test(arguments: [DType.bfloat16, .float16], [1, 8])
    func halfOutputMatchesReference(_ outputDType: DType, caseIndex: Int) throws {
        let ctx = try CUDABackend.shared
        let c = Self.cases[caseIndex]
        let mask = try Self.mask(c, seed: 7)
        let q = CUDAUpload.rounded(try Tensor.randomNormal([c.B, c.T, c.Hq, c.D], seed: 7), .bfloat16)
        let k = CUDAUpload.rounded(try Tensor.randomNormal([c.B, c.S, c.Hkv, c.D], seed: 8), .bfloat16)
        let v = CUDAUpload.rounded(try Tensor.randomNormal([c.B, c.S, c.Hkv, c.D], seed: 9), .bfloat16)
        let want = try BlockSparseAttention.reference(q: q, k: k, v: v, mask: mask, options: AttentionOptions(causal: c.causal))
        let rows = c.B * c.T * c.Hq
        let shape = CUDAAttentionShape(batch: c.B, queryLength: c.T, keyLength: c.S, queryHeads: c.Hq, kvHeads: c.Hkv, headDim: c.D)
        var kernels: [CUDABlockSparse.Kernel] = [.portable]
        if ctx.computeCapability.major >= 8 { kernels.append(.tensorCore) }
        if ctx.computeCapability.major == 9 && Self.wgmmaFits(c) { kernels.append(.wgmma) }
        for kernel in kernels {
            let o = try CUDABuffer(context: ctx, byteCount: rows * c.D * 2), lse = try CUDABuffer(context: ctx, byteCount: rows * 4)
            try CUDABlockSparse.forward(
                q: CUDAUpload.buffer(q, dtype: .bfloat16, context: ctx), k: CUDAUpload.buffer(k, dtype: .bfloat16, context: ctx),
                v: CUDAUpload.buffer(v, dtype: .bfloat16, context: ctx), mask: CUDABuffer(context: ctx, copying: mask.values),
                maskShape: mask.shape, blockRows: mask.blockRows, blockKeys: mask.blockKeys, o: o, lse: lse, shape: shape,
                causal: c.causal, dtype: .bfloat16, outputDType: outputDType, kernel: kernel)
            let got = try Tensor(shape: want.o.shape, scalars: CUDAUpload.download(o, dtype: outputDType, count: rows * c.D))
            let gotLSE = try Tensor(shape: want.lse.shape, scalars: lse.download(Float.self, count: rows))
            #expect(ErrorStats(got, want.o).relativeRMS <= 1e-2, "\(kernel) \(outputDType) o \(ErrorStats(got, want.o))")
            #expect(ErrorStats(gotLSE, want.lse).relativeRMS <= 5e-3, "\(kernel) lse \(ErrorStats(gotLSE, want.lse))")
        }
    }

    @Test func tensorCoreRefusesWhatItCannotTake() throws {
        let ctx = try CUDABackend.shared
        let q = try Tensor.randomNormal([1, 128, 1, 64], seed: 1), kv = try Tensor.randomNormal([1, 128, 1, 64], seed: 2)
        let keys32 = try BlockMask.dense(T: 128, S: 128, blockRows: 64, blockKeys: 32)  // key blocks split a 64-key tile
        #expect(throws: LineaError.self) {
            try CUDABlockSparse.forward(q: q, k: kv, v: kv, mask: keys32, dtype: .bfloat16, kernel: .tensorCore, context: ctx)
        }
        let dense = try BlockMask.dense(T: 128, S: 128, blockRows: 64, blockKeys: 64)
        #expect(throws: LineaError.self) {  // fp32 inputs
            try CUDABlockSparse.forward(q: q, k: kv, v: kv, mask: dense, dtype: .float32, kernel: .tensorCore, context: ctx)
        }
        #expect(throws: LineaError.self) {  // wgmma: D = 64 and 64-row blocks
            try CUDABlockSparse.forward(q: q, k: kv, v: kv, mask: dense, dtype: .bfloat16, kernel: .wgmma, context: ctx)
        }
        // The portable kernel takes both; `auto` falls back to it.
        let want = try CUDABlockSparse.forward(q: q, k: kv, v: kv, mask: keys32, dtype: .bfloat16, kernel: .portable, context: ctx)
        let got = try CUDABlockSparse.forward(q: q, k: kv, v: kv, mask: keys32, dtype: .bfloat16, context: ctx)
        #expect(ErrorStats(got.o, want.o).relativeRMS < 1e-6)
    }
}
