import Foundation
import Linea
import LineaCUDA
import Testing

/// GPU comparisons of the decode steps, split-KV decode and block-sparse attention against the CPU oracle
/// (skipped when no GPU is present).
@Suite(.enabled(if: CUDABackend.isAvailable, "needs an NVIDIA GPU, its driver and NVRTC"))
struct CUDADecodeTests {
    static let dtypes: [DType] = [.float32, .bfloat16, .float16]

    @Test(arguments: RecurrentMechanism.allCases, dtypes)
    func decodeStepMatchesReference(_ m: RecurrentMechanism, _ dtype: DType) throws {
        for c in CUDAKernelChecks.stepCases {
            let outcome = try CUDAKernelChecks.step(m, b: c.b, h: c.h, k: c.k, v: c.v, dtype: dtype, context: CUDABackend.shared)
            #expect(outcome.passed, "\(outcome)")
        }
    }

    @Test(arguments: CUDAKernelChecks.splitKVCases.indices, dtypes)
    func splitKVMatchesReference(_ index: Int, _ dtype: DType) throws {
        let c = CUDAKernelChecks.splitKVCases[index]
        let outcome = try CUDAKernelChecks.splitKV(b: c.b, t: c.t, s: c.s, hq: c.hq, hkv: c.hkv, d: c.d, causal: c.causal,
                                                   partitions: c.partitions, dtype: dtype, context: CUDABackend.shared)
        #expect(outcome.passed, "\(outcome)")
    }

    @Test(arguments: CUDAKernelChecks.blockSparseCases.indices, dtypes)
    func blockSparseMatchesReference(_ index: Int, _ dtype: DType) throws {
        let c = CUDAKernelChecks.blockSparseCases[index]
        let outcome = try CUDAKernelChecks.blockSparse(b: c.b, t: c.t, s: c.s, hq: c.hq, hkv: c.hkv, d: c.d, bm: c.bm, bn: c.bn,
                                                       perHead: c.perHead, density: c.density, causal: c.causal, dtype: dtype,
                                                       context: CUDABackend.shared)
        #expect(outcome.passed, "\(outcome)")
    }

    @Test func invalidArgumentsThrow() throws {
        let ctx = try CUDABackend.shared
        let x = try Tensor(zeros: [1, 2, 64]), s = try Tensor(zeros: [1, 2, 64, 64])
        // simple_gla needs g; linear_attn takes none; the delta rules need beta.
        #expect(throws: LineaError.self) { try CUDARecurrentStep.step(.simpleGLA, q: x, k: x, v: x, state: s, context: ctx) }
        #expect(throws: LineaError.self) {
            try CUDARecurrentStep.step(.linearAttention, q: x, k: x, v: x, g: try Tensor(zeros: [1, 2]), state: s, context: ctx)
        }
        #expect(throws: LineaError.self) {
            try CUDARecurrentStep.step(.deltaRule, q: x, k: x, v: x, state: s, context: ctx)
        }
        #expect(throws: LineaError.self) {  // gla's gate is per key
            try CUDARecurrentStep.step(.gla, q: x, k: x, v: x, g: try Tensor(zeros: [1, 2]), state: s, context: ctx)
        }
        let q = try Tensor(zeros: [1, 65, 4, 64]), kv = try Tensor(zeros: [1, 100, 2, 64])
        #expect(throws: LineaError.self) { try CUDASplitKV.forward(q: q, k: kv, v: kv, context: ctx) }  // T > 64
        let q1 = try Tensor(zeros: [1, 1, 4, 64])
        #expect(throws: LineaError.self) { try CUDASplitKV.forward(q: q1, k: kv, v: kv, partitions: 0, context: ctx) }
        let mask = try BlockMask(shape: [1, 1, 1, 1], blockRows: 64, blockKeys: 64, values: [1])
        #expect(throws: LineaError.self) { try CUDABlockSparse.forward(q: q1, k: kv, v: kv, mask: mask, context: ctx) }  // 2 key blocks
    }
}
