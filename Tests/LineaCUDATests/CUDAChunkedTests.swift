import Foundation
import Linea
import LineaCUDA
import Testing

/// Chunked recurrence kernels on the GPU against the CPU Float64 reference (skipped when no GPU is present).
@Suite(.enabled(if: CUDABackend.isAvailable, "needs an NVIDIA GPU, its driver and NVRTC"))
struct CUDAChunkedTests {
    /// (B, T, H, K, V): lengths around the chunk size of 64 and a long multi-chunk case.
    static let shapes: [(Int, Int, Int, Int, Int)] = [(1, 1, 2, 64, 64), (3, 63, 2, 128, 128), (1, 64, 1, 64, 128),
                                                       (3, 65, 2, 128, 64), (1, 1000, 2, 128, 128)]

    @Test(arguments: CUDAChunked.supported)
    func chunkedForwardMatchesReference(mechanism: RecurrentMechanism) throws {
        for (index, s) in Self.shapes.enumerated() {
            let (B, T, H, K, V) = s
            var x = try Self.inputs(mechanism, B: B, T: T, H: H, K: K, V: V, seed: UInt64(100 + index))
            (x.q, x.k, x.v) = (HalfPrecision.roundedToBFloat16(x.q), HalfPrecision.roundedToBFloat16(x.k),
                               HalfPrecision.roundedToBFloat16(x.v))
            let want = try Recurrence.forward(mechanism, x, form: .reference)
            let got = try CUDAChunked.forward(mechanism, x, dtype: .bfloat16, context: CUDABackend.shared)
            let o = ErrorStats(got.o, want.o), state = ErrorStats(got.finalState, want.finalState)
            #expect(o.relativeRMS <= 2e-3, "\(mechanism.rawValue) B\(B) T\(T) H\(H) K\(K) V\(V): o \(o)")
            #expect(state.relativeRMS <= 2e-3, "\(mechanism.rawValue) B\(B) T\(T) H\(H) K\(K) V\(V): state \(state)")
        }
    }

    /// Random inputs with an initial state: unit-norm keys for the delta rules, gates in [-1, -1e-4], beta in [0, 1].
    static func inputs(_ r: RecurrentMechanism, B: Int, T: Int, H: Int, K: Int, V: Int, seed: UInt64) throws -> RecurrenceInputs {
        var x = RecurrenceInputs(
            q: try Tensor.randomNormal([B, T, H, K], seed: seed), k: try Tensor.randomNormal([B, T, H, K], seed: seed + 1),
            v: try Tensor.randomNormal([B, T, H, V], seed: seed + 2),
            initialState: try Tensor.randomNormal([B, H, K, V], seed: seed + 3, scale: 0.1))
        if r == .simpleGLA || r == .gatedDeltaRule { x.g = try Tensor.randomUniform([B, T, H], seed: seed + 4, in: -1...(-1e-4)) }
        if r == .deltaRule || r == .gatedDeltaRule {
            x.beta = try Tensor.randomUniform([B, T, H], seed: seed + 5)
            // Unit-norm keys, as the delta rules expect (normalized before the bf16 rounding in the test).
            for row in stride(from: 0, to: x.k.count, by: K) {
                let norm = max(1e-6, x.k.scalars[row..<(row + K)].reduce(0) { $0 + $1 * $1 }.squareRoot())
                for i in row..<(row + K) { x.k.scalars[i] /= norm }
            }
        }
        return x
    }
}

/// Argument checks of the chunked kernels' API (no GPU needed).
@Suite struct CUDAChunkedArgumentTests {
    @Test func unsupportedArgumentsThrowBeforeTheGPU() throws {
        // Argument checks run before the device is touched, so they hold with or without a GPU.
        func expectError(_ argument: String, _ body: () throws -> Void) {
            do {
                try body()
                Issue.record("expected an error naming \(argument)")
            } catch let LineaError.invalidArgument(name, _, _) {
                #expect(name == argument)
            } catch {
                Issue.record("expected invalidArgument(\(argument)), got \(error)")
            }
        }
        let x = try CUDAChunkedTests.inputs(.simpleGLA, B: 1, T: 8, H: 1, K: 64, V: 64, seed: 1)
        expectError("mechanism") { _ = try CUDAChunked.forward(.gla, x) }
        expectError("chunkSize") { _ = try CUDAChunked.forward(.simpleGLA, x, chunkSize: 32) }
        expectError("dtype") { _ = try CUDAChunked.forward(.simpleGLA, x, dtype: .float16) }
        let odd = try CUDAChunkedTests.inputs(.linearAttention, B: 1, T: 8, H: 1, K: 60, V: 64, seed: 2)
        expectError("K") { _ = try CUDAChunked.forward(.linearAttention, odd) }
        var normalized = try CUDAChunkedTests.inputs(.linearAttention, B: 1, T: 8, H: 1, K: 64, V: 64, seed: 3)
        normalized.normalize = true
        expectError("normalize") { _ = try CUDAChunked.forward(.linearAttention, normalized) }
        var positive = x
        positive.g!.scalars[3] = 0.5
        expectError("g") { _ = try CUDAChunked.forward(.simpleGLA, positive) }
        var delta = try CUDAChunkedTests.inputs(.deltaRule, B: 1, T: 8, H: 1, K: 64, V: 64, seed: 4)
        delta.beta!.scalars[0] = 1.5
        expectError("beta") { _ = try CUDAChunked.forward(.deltaRule, delta) }
    }
}
