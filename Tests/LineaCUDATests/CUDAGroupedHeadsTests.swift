import Foundation
import Linea
import LineaCUDA
import Testing

/// Grouped value heads (HV a multiple of H, fla's GVA) on the GPU against the CPU Float64 reference on the same
/// rounded inputs: the chunked kernels called directly (bf16 tensor cores, f32/f16 CUDA cores); the dispatch and the
/// decode step at HV > H are in the op-case table (skipped when no GPU is present).
@Suite(.enabled(if: CUDABackend.isAvailable, "needs an NVIDIA GPU, its driver and NVRTC"))
struct CUDAGroupedHeadsTests {
    static let dtypes: [DType] = [.bfloat16, .float16, .float32]

    /// (B, T, H, HV, K, V): HV = 2H around the chunk size, HV = 4H, and a long sequence with few heads (cut into
    /// segments: the end-state passes and scans run over HV state heads).
    static let shapes: [(Int, Int, Int, Int, Int, Int)] = [
        (2, 130, 2, 4, 64, 64), (1, 65, 1, 4, 128, 128), (1, 1000, 1, 2, 128, 64),
    ]

    @Test(arguments: CUDAChunked.covered, dtypes)
    func chunkedMatchesReference(_ r: RecurrentMechanism, _ dtype: DType) throws {
        for (index, (B, T, H, HV, K, V)) in Self.shapes.enumerated() {
            var x = try RecurrenceInputs.random(r, B: B, T: T, H: H, HV: HV, K: K, V: V, seed: UInt64(500 + index))
            (x.q, x.k, x.v) = (CUDAUpload.rounded(x.q, dtype), CUDAUpload.rounded(x.k, dtype), CUDAUpload.rounded(x.v, dtype))
            let want = try Recurrence.forward(r, x, form: .reference)
            let got = r == .gla ? try CUDAChunkedGLA.forward(x, dtype: dtype, context: CUDABackend.shared)
                : try CUDAChunked.forward(r, x, dtype: dtype, context: CUDABackend.shared)
            let o = ErrorStats(got.o, want.o), state = ErrorStats(got.finalState, want.finalState)
            let name = "\(r.rawValue) \(dtype) B\(B) T\(T) H\(H) HV\(HV) K\(K) V\(V)"
            #expect(got.o.shape == [B, T, HV, V] && got.finalState.shape == [B, HV, K, V], "\(name)")
            #expect(o.relativeRMS <= (dtype == .float32 ? 1e-5 : 2e-3), "\(name): o \(o)")
            #expect(state.relativeRMS <= (dtype == .float32 ? 1e-5 : 2e-3), "\(name): state \(state)")
        }
    }

    /// The plans count state heads: H = 8, HV = 16 plans as H = HV = 16 (blocks, segments, scratch for w and u).
    @Test func plansCountValueHeads() {
        for r in [RecurrentMechanism.simpleGLA, .gatedDeltaRule] {
            let grouped = CUDAChunkedShape(batch: 1, length: 8192, heads: 8, valueHeads: 16, keyDim: 128, valueDim: 128)
            let plain = CUDAChunkedShape(batch: 1, length: 8192, heads: 16, keyDim: 128, valueDim: 128)
            #expect(CUDAChunked.Plan(r, grouped, multiprocessors: 132, valueBlock: nil)
                    == CUDAChunked.Plan(r, plain, multiprocessors: 132, valueBlock: nil), "\(r)")
            #expect(CUDAChunked.flops(r, grouped) == CUDAChunked.flops(r, plain))
        }
        #expect(CUDAChunkedShape(batch: 1, length: 2, heads: 8, valueHeads: 16, keyDim: 64, valueDim: 64).description
                == "B=1 T=2 H=8 HV=16 K=64 V=64")
    }
}
