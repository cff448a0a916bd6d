import Foundation
import Linea
import LineaCUDA
import Testing

/// The decode-step, split-KV and block-sparse launchers' argument checks (skipped when no GPU is present); their
/// numbers are checked against the reference by the op-case table (CUDAOpCaseTests).
@Suite(.enabled(if: CUDABackend.isAvailable, "needs an NVIDIA GPU, its driver and NVRTC"))
struct CUDADecodeTests {
    static let dtypes: [DType] = [.float32, .bfloat16, .float16]

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
