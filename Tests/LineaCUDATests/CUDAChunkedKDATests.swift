import Foundation
import Linea
import LineaCUDA
import Testing

/// The kda chunked kernels on the GPU against the CPU Float64 reference (skipped when no GPU is present).
@Suite(.enabled(if: CUDABackend.isAvailable, "needs an NVIDIA GPU, its driver and NVRTC"))
struct CUDAChunkedKDATests {
    /// (B, T, H, HV, K, V, gate range, initial state, V block): lengths around the chunk size and not a multiple of it,
    /// grouped value heads, steep gates (a chunk's summed log decay far below -100 and 16-row blocks past the
    /// reference-row bound), no initial state, both walk widths; the T = 1000 and T = 2000 ones have so few heads that
    /// they run in sequence segments (CUDAChunkedKDA.Plan: 4 and 8 on an H100), the end-state pass and scan included,
    /// once without an initial state (the scan then starts from zeros).
    static let cases: [(Int, Int, Int, Int, Int, Int, ClosedRange<Float>, Bool, Int?)] = [
        (1, 1, 2, 2, 64, 64, -1...(-1e-4), true, nil), (3, 63, 2, 2, 128, 128, -1...(-1e-4), true, nil),
        (1, 64, 1, 1, 64, 128, -1...(-1e-4), true, nil), (3, 65, 2, 2, 128, 64, -1...(-1e-4), false, nil),
        (1, 1000, 2, 2, 128, 128, -1...(-1e-4), true, 128), (1, 1000, 2, 2, 128, 128, -0.1...(-1e-4), true, 64),
        (2, 130, 2, 2, 128, 128, -20...(-1e-4), true, nil), (1, 200, 1, 1, 64, 64, -20...(-5), true, nil),
        (2, 130, 2, 4, 64, 128, -1...(-1e-4), true, nil), (1, 300, 1, 4, 128, 64, -20...(-1e-4), false, nil),
        (1, 2000, 1, 1, 64, 64, -0.2...(-1e-4), true, nil), (1, 1000, 2, 2, 128, 128, -1...(-1e-4), false, 64),
    ]

    @Test func kdaForwardMatchesReference() throws {
        for (index, c) in Self.cases.enumerated() {
            let (B, T, H, HV, K, V, gates, h0, valueBlock) = c
            var x = try RecurrenceInputs.random(.kda, B: B, T: T, H: H, HV: HV, K: K, V: V, seed: UInt64(300 + index),
                                                gateRange: gates, initialState: h0)
            (x.q, x.k, x.v) = (HalfPrecision.roundedToBFloat16(x.q), HalfPrecision.roundedToBFloat16(x.k),
                               HalfPrecision.roundedToBFloat16(x.v))
            let want = try Recurrence.forward(.kda, x, form: .reference)
            let got = try CUDAChunkedKDA.forward(x, valueBlock: valueBlock, context: CUDABackend.shared)
            let o = ErrorStats(got.o, want.o), state = ErrorStats(got.finalState, want.finalState)
            let name = "B\(B) T\(T) H\(H) HV\(HV) K\(K) V\(V) g in \(gates)\(h0 ? "" : " no h0") BV \(valueBlock.map(String.init) ?? "auto")"
            #expect(got.o.scalars.allSatisfy(\.isFinite) && got.finalState.scalars.allSatisfy(\.isFinite), "kda \(name): not finite")
            #expect(o.relativeRMS <= 2e-3, "kda \(name): o \(o)")
            #expect(state.relativeRMS <= 2e-3, "kda \(name): state \(state)")
        }
    }

    /// The backend's automatic form takes the chunked kernel for bf16 inputs (and the recurrent one for f32, which the
    /// device-resident test in CUDADeviceBackendTests covers); a bf16 output is the fp32 one rounded.
    @Test func backendRunsTheChunkedKernelForBF16() throws {
        let x = try RecurrenceInputs.random(.kda, B: 2, T: 150, H: 2, HV: 4, K: 128, V: 128, seed: 41)
        func put(_ t: Tensor?, _ type: DType) throws -> DeviceTensor? { try t.map { try DeviceTensor($0, dtype: type, on: Device.cuda(0)) } }
        let got = try Recurrence.forward(.kda, q: put(x.q, .bfloat16)!, k: put(x.k, .bfloat16)!, v: put(x.v, .bfloat16)!,
                                         g: put(x.g, .float32), beta: put(x.beta, .float32), initialState: put(x.initialState, .float32),
                                         form: .chunked(size: 64))
        var rounded = x
        (rounded.q, rounded.k, rounded.v) = (HalfPrecision.roundedToBFloat16(x.q), HalfPrecision.roundedToBFloat16(x.k),
                                             HalfPrecision.roundedToBFloat16(x.v))
        let want = try Recurrence.forward(.kda, rounded, form: .reference)
        #expect(ErrorStats(try got.o.host(), want.o).relativeRMS <= 2e-3)
        #expect(ErrorStats(try got.finalState.host(), want.finalState).relativeRMS <= 2e-3)
    }
}

/// Argument checks of the kda kernel's API (no GPU needed: they run before the device is touched).
@Suite struct CUDAChunkedKDAArgumentTests {
    @Test func unsupportedArgumentsThrowBeforeTheGPU() throws {
        let x = try RecurrenceInputs.random(.kda, B: 1, T: 8, H: 1, K: 64, V: 64, seed: 1)
        expectArgumentError("chunkSize", shapeMismatchToo: true) { _ = try CUDAChunkedKDA.forward(x, chunkSize: 32) }
        expectArgumentError("dtype", shapeMismatchToo: true) { _ = try CUDAChunkedKDA.forward(x, dtype: .float32) }
        var scalarGate = x
        scalarGate.g = try Tensor(zeros: [1, 8, 1])
        expectArgumentError("g", shapeMismatchToo: true) { _ = try CUDAChunkedKDA.forward(scalarGate) }
        let odd = try RecurrenceInputs.random(.kda, B: 1, T: 8, H: 1, K: 60, V: 64, seed: 2)
        expectArgumentError("K", shapeMismatchToo: true) { _ = try CUDAChunkedKDA.forward(odd) }
        var activated = x
        activated.activations = InKernelActivations(gateInKernel: true, lowerBound: -5)
        expectArgumentError("activations", shapeMismatchToo: true) { _ = try CUDAChunkedKDA.forward(activated) }
    }
}
