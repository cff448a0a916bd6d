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
            var x = try RecurrenceInputs.random(mechanism, B: B, T: T, H: H, K: K, V: V, seed: UInt64(100 + index))
            (x.q, x.k, x.v) = (HalfPrecision.roundedToBFloat16(x.q), HalfPrecision.roundedToBFloat16(x.k),
                               HalfPrecision.roundedToBFloat16(x.v))
            let want = try Recurrence.forward(mechanism, x, form: .reference)
            let got = try CUDAChunked.forward(mechanism, x, dtype: .bfloat16, context: CUDABackend.shared)
            let o = ErrorStats(got.o, want.o), state = ErrorStats(got.finalState, want.finalState)
            #expect(o.relativeRMS <= 2e-3, "\(mechanism.rawValue) B\(B) T\(T) H\(H) K\(K) V\(V): o \(o)")
            #expect(state.relativeRMS <= 2e-3, "\(mechanism.rawValue) B\(B) T\(T) H\(H) K\(K) V\(V): state \(state)")
        }
    }

    /// Sequences cut into segments at every V block and K, so that each end-state entry (`linea_chunk_end_k*_v*_*`, and
    /// the delta rules' `linea_chunk_end_k*_*` with their transition blocks) is checked, with an initial state folded in
    /// by the scan and, for the delta rules, also without one (segment 0's transition is then skipped).
    @Test(arguments: CUDAChunked.supported)
    func segmentedRunsMatchReferenceAtEveryValueBlock(mechanism: RecurrentMechanism) throws {
        let ctx = try CUDABackend.shared
        for K in [64, 128] {
            for (valueBlock, initial) in mechanism.isDelta ? [(64, true), (64, false)] : [(32, true), (64, true), (128, true)] {
                let (B, T, H, V) = (1, 1000, 2, 128)
                let plan = CUDAChunked.Plan(mechanism, CUDAChunkedShape(batch: B, length: T, heads: H, keyDim: K, valueDim: V),
                                            multiprocessors: ctx.multiprocessorCount, valueBlock: valueBlock)
                #expect(plan.segments > 1, "K\(K) BV\(valueBlock): not cut into segments")
                var x = try RecurrenceInputs.random(mechanism, B: B, T: T, H: H, K: K, V: V, seed: UInt64(K + valueBlock))
                (x.q, x.k, x.v) = (HalfPrecision.roundedToBFloat16(x.q), HalfPrecision.roundedToBFloat16(x.k),
                                   HalfPrecision.roundedToBFloat16(x.v))
                x.initialState = initial
                    ? try Tensor(shape: [B, H, K, V], scalars: (0..<(B * H * K * V)).map { Float($0 % 7) * 0.05 - 0.15 }) : nil
                let want = try Recurrence.forward(mechanism, x, form: .reference)
                let got = try CUDAChunked.forward(mechanism, x, dtype: .bfloat16, valueBlock: valueBlock, context: ctx)
                let o = ErrorStats(got.o, want.o), state = ErrorStats(got.finalState, want.finalState)
                #expect(o.relativeRMS <= 2e-3, "\(mechanism.rawValue) K\(K) BV\(valueBlock) P\(plan.segments) h0 \(initial): o \(o)")
                #expect(state.relativeRMS <= 2e-3, "\(mechanism.rawValue) K\(K) BV\(valueBlock) P\(plan.segments) h0 \(initial): state \(state)")
            }
        }
    }
}

extension CUDAChunkedTests {
    /// An uneven cut (the last segment longer than the others, its blocks dispatched first): blocks for about half the
    /// SMs (BV = 32, H heads) at T = 2048, a shape where the plan cuts unevenly on this device.
    @Test(arguments: CUDAChunked.supported.filter { !$0.isDelta })
    func unevenSegmentsMatchReference(mechanism: RecurrentMechanism) throws {
        let ctx = try CUDABackend.shared
        let (B, T, K, V) = (1, 2048, 64, 128)
        let H = max(1, ctx.multiprocessorCount / 2 / (V / 32))
        let plan = CUDAChunked.Plan(mechanism, CUDAChunkedShape(batch: B, length: T, heads: H, keyDim: K, valueDim: V),
                                    multiprocessors: ctx.multiprocessorCount, valueBlock: 32)
        #expect(plan.segments > 1 && plan.lastSegmentChunks > plan.segmentChunks, "not an uneven cut: \(plan)")
        var x = try RecurrenceInputs.random(mechanism, B: B, T: T, H: H, K: K, V: V, seed: 7)
        (x.q, x.k, x.v) = (HalfPrecision.roundedToBFloat16(x.q), HalfPrecision.roundedToBFloat16(x.k),
                           HalfPrecision.roundedToBFloat16(x.v))
        x.initialState = try Tensor(shape: [B, H, K, V], scalars: (0..<(B * H * K * V)).map { Float($0 % 5) * 0.04 - 0.08 })
        let want = try Recurrence.forward(mechanism, x, form: .reference)
        let got = try CUDAChunked.forward(mechanism, x, dtype: .bfloat16, valueBlock: 32, context: ctx)
        let o = ErrorStats(got.o, want.o), state = ErrorStats(got.finalState, want.finalState)
        #expect(o.relativeRMS <= 2e-3, "\(mechanism.rawValue) \(plan): o \(o)")
        #expect(state.relativeRMS <= 2e-3, "\(mechanism.rawValue) \(plan): state \(state)")
    }
}

/// Argument checks of the chunked kernels' API (no GPU needed).
@Suite struct CUDAChunkedArgumentTests {
    @Test func unsupportedArgumentsThrowBeforeTheGPU() throws {
        // Argument checks run before the device is touched, so they hold with or without a GPU.
        let x = try RecurrenceInputs.random(.simpleGLA, B: 1, T: 8, H: 1, K: 64, V: 64, seed: 1)
        expectArgumentError("mechanism") { _ = try CUDAChunked.forward(.gla, x) }
        expectArgumentError("chunkSize") { _ = try CUDAChunked.forward(.simpleGLA, x, chunkSize: 32) }
        expectArgumentError("dtype") { _ = try CUDAChunked.forward(.simpleGLA, x, dtype: .float64) }
        let odd = try RecurrenceInputs.random(.linearAttention, B: 1, T: 8, H: 1, K: 60, V: 64, seed: 2)
        expectArgumentError("K") { _ = try CUDAChunked.forward(.linearAttention, odd) }
        var normalized = try RecurrenceInputs.random(.linearAttention, B: 1, T: 8, H: 1, K: 64, V: 64, seed: 3)
        normalized.normalize = true
        expectArgumentError("normalize") { _ = try CUDAChunked.forward(.linearAttention, normalized) }
        var positive = x
        positive.g!.scalars[3] = 0.5
        expectArgumentError("g") { _ = try CUDAChunked.forward(.simpleGLA, positive) }
        var delta = try RecurrenceInputs.random(.deltaRule, B: 1, T: 8, H: 1, K: 64, V: 64, seed: 4)
        delta.beta!.scalars[0] = 2.5
        expectArgumentError("beta") { _ = try CUDAChunked.forward(.deltaRule, delta) }
    }
}

/// Records an issue unless `body` throws `invalidArgument` (or, with `shapeMismatchToo`, `shapeMismatch`) naming
/// `argument`.
func expectArgumentError(_ argument: String, shapeMismatchToo: Bool = false, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected an error naming \(argument)")
    } catch let LineaError.invalidArgument(name, _, _) {
        #expect(name == argument)
    } catch let LineaError.shapeMismatch(name, _, _) where shapeMismatchToo {
        #expect(name == argument)
    } catch {
        Issue.record("expected an error naming \(argument), got \(error)")
    }
}
