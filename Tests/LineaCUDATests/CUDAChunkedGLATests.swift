import Foundation
import Linea
import LineaCUDA
import Testing

/// The gla chunked kernel on the GPU against the CPU Float64 reference (skipped when no GPU is present).
@Suite(.enabled(if: CUDABackend.isAvailable, "needs an NVIDIA GPU, its driver and NVRTC"))
struct CUDAChunkedGLATests {
    /// (B, T, H, K, V, gate range, V block): lengths around the chunk size, a long split sequence, steep gates.
    static let cases: [(Int, Int, Int, Int, Int, ClosedRange<Float>, Int?)] = [
        (1, 1, 2, 64, 64, -1...(-1e-4), nil), (3, 63, 2, 128, 128, -1...(-1e-4), nil), (1, 64, 1, 64, 128, -1...(-1e-4), nil),
        (3, 65, 2, 128, 64, -1...(-1e-4), nil), (1, 1000, 2, 128, 128, -1...(-1e-4), 64), (2, 130, 2, 128, 128, -20...(-1e-4), nil),
    ]

    @Test func glaForwardMatchesReference() throws {
        for (index, c) in Self.cases.enumerated() {
            let (B, T, H, K, V, gates, valueBlock) = c
            var x = try RecurrenceInputs.random(.gla, B: B, T: T, H: H, K: K, V: V, seed: UInt64(200 + index), gateRange: gates)
            (x.q, x.k, x.v) = (HalfPrecision.roundedToBFloat16(x.q), HalfPrecision.roundedToBFloat16(x.k),
                               HalfPrecision.roundedToBFloat16(x.v))
            let want = try Recurrence.forward(.gla, x, form: .reference)
            let got = try CUDAChunkedGLA.forward(x, valueBlock: valueBlock, context: CUDABackend.shared)
            let o = ErrorStats(got.o, want.o), state = ErrorStats(got.finalState, want.finalState)
            let name = "B\(B) T\(T) H\(H) K\(K) V\(V) g in \(gates)"
            #expect(o.relativeRMS <= 2e-3, "gla \(name): o \(o)")
            #expect(state.relativeRMS <= 2e-3, "gla \(name): state \(state)")
        }
    }
}

/// Argument checks of the gla kernel's API (no GPU needed: they run before the device is touched).
@Suite struct CUDAChunkedGLAArgumentTests {
    @Test func unsupportedArgumentsThrowBeforeTheGPU() throws {
        let x = try RecurrenceInputs.random(.gla, B: 1, T: 8, H: 1, K: 64, V: 64, seed: 1)
        expectArgumentError("chunkSize", shapeMismatchToo: true) { _ = try CUDAChunkedGLA.forward(x, chunkSize: 32) }
        expectArgumentError("dtype", shapeMismatchToo: true) { _ = try CUDAChunkedGLA.forward(x, dtype: .float64) }
        var scalarGate = x
        scalarGate.g = try Tensor(zeros: [1, 8, 1])
        expectArgumentError("g", shapeMismatchToo: true) { _ = try CUDAChunkedGLA.forward(scalarGate) }
        var positive = x
        positive.g!.scalars[3] = 0.5
        expectArgumentError("g", shapeMismatchToo: true) { _ = try CUDAChunkedGLA.forward(positive) }
        let odd = try RecurrenceInputs.random(.gla, B: 1, T: 8, H: 1, K: 60, V: 64, seed: 2)
        expectArgumentError("K", shapeMismatchToo: true) { _ = try CUDAChunkedGLA.forward(odd) }
        var normalized = x
        normalized.normalize = true
        expectArgumentError("normalize", shapeMismatchToo: true) { _ = try CUDAChunkedGLA.forward(normalized) }
    }
}
