import Foundation
import Linea
import LineaCUDA
import Testing

/// The f32/f16 chunked kernel (`CUDAChunkedSIMT`, reached through `CUDAChunked` / `CUDAChunkedGLA`) on the GPU against
/// the CPU Float64 reference on the same rounded inputs (skipped when no GPU is present).
@Suite(.enabled(if: CUDABackend.isAvailable, "needs an NVIDIA GPU, its driver and NVRTC"))
struct CUDAChunkedSIMTTests {
    /// (B, T, H, K, V, gate range, V block): lengths around the chunk size, a long sequence, steep gates, both V blocks.
    static let cases: [(Int, Int, Int, Int, Int, ClosedRange<Float>, Int?)] = [
        (1, 1, 2, 64, 64, -1...(-1e-4), nil), (3, 63, 2, 128, 128, -1...(-1e-4), 64), (1, 64, 1, 64, 128, -1...(-1e-4), nil),
        (3, 65, 2, 128, 64, -1...(-1e-4), nil), (1, 600, 2, 128, 128, -1...(-1e-4), nil), (2, 130, 2, 64, 64, -20...(-1e-4), 64),
    ]

    /// Every chunked mechanism with `dtype` inputs; relative RMS of o and the final state at most `tolerance`.
    func matchesReference(_ dtype: DType, tolerance: Double) throws {
        for r in CUDAChunked.covered {
            for (index, c) in Self.cases.enumerated() {
                let (B, T, H, K, V, gates, valueBlock) = c
                var x = try RecurrenceInputs.random(r, B: B, T: T, H: H, K: K, V: V, seed: UInt64(300 + index), gateRange: gates)
                (x.q, x.k, x.v) = (CUDAUpload.rounded(x.q, dtype), CUDAUpload.rounded(x.k, dtype), CUDAUpload.rounded(x.v, dtype))
                let want = try Recurrence.forward(r, x, form: .reference)
                let got = r == .gla ? try CUDAChunkedGLA.forward(x, dtype: dtype, valueBlock: valueBlock, context: CUDABackend.shared)
                    : try CUDAChunked.forward(r, x, dtype: dtype, valueBlock: valueBlock, context: CUDABackend.shared)
                let o = ErrorStats(got.o, want.o), state = ErrorStats(got.finalState, want.finalState)
                let name = "\(r.rawValue) \(dtype) B\(B) T\(T) H\(H) K\(K) V\(V) g in \(gates) BV \(valueBlock.map(String.init) ?? "auto")"
                #expect(o.relativeRMS <= tolerance, "\(name): o \(o)")
                #expect(state.relativeRMS <= tolerance, "\(name): state \(state)")
            }
        }
    }

    @Test func float32InputsMatchReference() throws { try matchesReference(.float32, tolerance: 1e-5) }

    @Test func float16InputsMatchReference() throws { try matchesReference(.float16, tolerance: 2e-3) }
}

/// Argument checks of the f32/f16 chunked path (no GPU needed: they run before the device is touched).
@Suite struct CUDAChunkedSIMTArgumentTests {
    @Test func unsupportedArgumentsThrowBeforeTheGPU() throws {
        let x = try RecurrenceInputs.random(.simpleGLA, B: 1, T: 8, H: 1, K: 64, V: 64, seed: 1)
        expectArgumentError("dtype") { _ = try CUDAChunkedSIMT.forward(.simpleGLA, x, dtype: .bfloat16) }
        expectArgumentError("chunkSize") { _ = try CUDAChunked.forward(.simpleGLA, x, chunkSize: 32, dtype: .float16) }
        var positive = x
        positive.g!.scalars[3] = 0.5
        expectArgumentError("g") { _ = try CUDAChunked.forward(.simpleGLA, positive, dtype: .float32) }
        let odd = try RecurrenceInputs.random(.gla, B: 1, T: 8, H: 1, K: 64, V: 96, seed: 2)
        expectArgumentError("V") { _ = try CUDAChunkedGLA.forward(odd, dtype: .float16) }
        var normalized = try RecurrenceInputs.random(.linearAttention, B: 1, T: 8, H: 1, K: 64, V: 64, seed: 3)
        normalized.normalize = true
        expectArgumentError("normalize") { _ = try CUDAChunked.forward(.linearAttention, normalized, dtype: .float32) }
        var delta = try RecurrenceInputs.random(.gatedDeltaRule, B: 1, T: 8, H: 1, K: 64, V: 64, seed: 4)
        delta.beta!.scalars[0] = -0.5
        expectArgumentError("beta") { _ = try CUDAChunkedSIMT.forward(.gatedDeltaRule, delta, dtype: .float16) }
        // The CUDA-core kernel has V blocks of 32 and 64 only (the bf16 kernels also take 128).
        let wide = try RecurrenceInputs.random(.retention, B: 1, T: 8, H: 1, K: 64, V: 128, seed: 5)
        expectArgumentError("valueBlock") { _ = try CUDAChunked.forward(.retention, wide, dtype: .float32, valueBlock: 128) }
        let gla = try RecurrenceInputs.random(.gla, B: 1, T: 8, H: 1, K: 64, V: 64, seed: 6)
        expectArgumentError("valueBlock") { _ = try CUDAChunkedGLA.forward(gla, dtype: .float16, valueBlock: 48) }
    }
}
