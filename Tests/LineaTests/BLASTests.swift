import Foundation
import Linea
import Testing

@Suite struct BLASTests {
    /// The core follows the feature flags, widest first; without AVX2 OpenBLAS keeps its own choice.
    @Test func coreFollowsFeatureFlags() {
        #expect(BLAS.core(for: [.avx2, .fma, .f16c, .avx512f, .avx512dq, .avx512bw, .avx512vl]) == "SkylakeX")
        #expect(BLAS.core(for: [.avx2, .fma, .f16c, .avx512f]) == "Haswell")  // AVX-512 without BW/DQ/VL: too little
        #expect(BLAS.core(for: [.avx2, .fma]) == "Haswell")
        #expect(BLAS.core(for: [.avx2]) == nil)
        #expect(BLAS.core(for: []) == nil)
    }

    /// On an x86-64 host with OpenBLAS installed (CI installs it), the library loads and runs the chosen core.
    @Test func loadsOpenBLASWithTheChosenCore() throws {
        let info = BLAS.info
        #expect(info.library != nil, "\(info.choice)")
        if let wanted = BLAS.core(for: .current), ProcessEnvironment.forcedCore == nil {
            #expect(info.core.lowercased() == wanted.lowercased(), "\(info.core) (\(info.choice)), wanted \(wanted)")
        }
    }

    /// A chunked recurrence runs OpenBLAS on one thread per worker and then gives the lone GEMMs after it (a model's
    /// projections) Linea's thread count back; other tests' recurrences may hold it at 1 for a while, hence the wait.
    @Test func chunkedRecurrenceGivesOpenBLASItsThreadsBack() async throws {
        guard BLAS.info.library != nil, Parallel.threadCount > 1 else { return }
        let inputs = try RecurrenceInputs.random(.gatedDeltaRule, B: 1, T: 200, H: 2, K: 16, V: 16, seed: 5)
        _ = try Recurrence.forward(.gatedDeltaRule, inputs, form: .chunked(size: 64))
        var waited = 0
        while BLAS.threads != Parallel.threadCount, waited < 200 {
            try await Task.sleep(nanoseconds: 50_000_000)
            waited += 1
        }
        #expect(BLAS.threads == Parallel.threadCount, "OpenBLAS threads \(BLAS.threads), Linea's \(Parallel.threadCount)")
    }

    /// OpenBLAS (every transpose) and the portable fallback against a Float64 triple loop, with alpha and beta.
    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func sgemmMatchesTripleLoop(transA: Bool, transB: Bool) throws {
        let (m, n, k, alpha, beta): (Int, Int, Int, Float, Float) = (13, 29, 70, 0.75, -0.5)
        let (lda, ldb, ldc) = (transA ? m + 3 : k + 3, transB ? k + 1 : n + 1, n + 2)
        let a = try Tensor.randomNormal([(transA ? k : m) * lda], seed: 1).scalars
        let b = try Tensor.randomNormal([(transB ? n : k) * ldb], seed: 2).scalars
        let c0 = try Tensor.randomNormal([m * ldc], seed: 3).scalars
        var want = c0
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0
                for p in 0..<k {
                    sum += Double(transA ? a[p * lda + i] : a[i * lda + p]) * Double(transB ? b[j * ldb + p] : b[p * ldb + j])
                }
                want[i * ldc + j] = Float(Double(alpha) * sum + Double(beta) * Double(c0[i * ldc + j]))
            }
        }
        for portable in [false, true] {
            var c = c0
            a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                let (pa, pb, pc) = (ap.baseAddress!, bp.baseAddress!, cp.baseAddress!)
                if portable {
                    BLAS.portableSgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: pa, lda: lda,
                                       b: pb, ldb: ldb, beta: beta, c: pc, ldc: ldc)
                } else {
                    BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: pa, lda: lda,
                               b: pb, ldb: ldb, beta: beta, c: pc, ldc: ldc)
                }
            } } }
            let stats = ErrorStats(c, want)
            #expect(stats.relativeRMS < 1e-6, "portable \(portable): \(stats)")
        }
    }
}

/// The environment the BLAS choice reads.
enum ProcessEnvironment {
    static var forcedCore: String? {
        guard let value = getenv("LINEA_BLAS_CORETYPE") else { return nil }
        let text = String(cString: value)
        return text.isEmpty || text == "auto" ? nil : text
    }
}
