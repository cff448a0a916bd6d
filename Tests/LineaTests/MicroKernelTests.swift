import Linea
import Testing

@Suite struct MicroKernelTests {
    @Test func gemmAVX2MatchesTripleLoop() throws {
        try checkGemm(try #require(CPUKernels(.avx2)))
    }

    @Test(.enabled(if: CPUKernels.Width.avx512.isSupported, "this CPU lacks AVX-512"))
    func gemmAVX512MatchesTripleLoop() throws {
        try checkGemm(try #require(CPUKernels(.avx512)))
    }

    /// Both A layouts, overwrite and accumulate, both block orders, against a plain Float64 triple loop; shapes of
    /// one and of several register blocks (12 x 32 is a whole number of blocks at either width).
    func checkGemm(_ kernels: CPUKernels) throws {
        for (m, n) in [(12, 32), (48, 96)] {
            for transposedA in [false, true] {
                for accumulate in [false, true] {
                    for columnBlocksOutside in [false, true] {
                        try checkGemm(kernels, m: m, n: n, depth: 37, transposedA: transposedA,
                                      accumulate: accumulate, columnBlocksOutside: columnBlocksOutside)
                    }
                }
            }
        }
    }

    func checkGemm(
        _ kernels: CPUKernels, m: Int, n: Int, depth: Int, transposedA: Bool, accumulate: Bool,
        columnBlocksOutside: Bool
    ) throws {
        let a = try Tensor.randomNormal([m * depth], seed: 1).scalars
        let b = try Tensor.randomNormal([depth * n], seed: 2).scalars
        var c = try Tensor.randomNormal([m * n], seed: 3).scalars
        var want = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var sum = accumulate ? Double(c[i * n + j]) : 0
                for d in 0..<depth {
                    let aValue = transposedA ? a[d * m + i] : a[i * depth + d]
                    sum += Double(aValue) * Double(b[d * n + j])
                }
                want[i * n + j] = Float(sum)
            }
        }
        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
            MicroKernel.gemm(m: m, n: n, depth: depth, a: ap.baseAddress!,
                             aRowStride: transposedA ? 1 : depth, aDepthStride: transposedA ? m : 1,
                             b: bp.baseAddress!, ldb: n, c: cp.baseAddress!, ldc: n, accumulate: accumulate,
                             columnBlocksOutside: columnBlocksOutside, kernels: kernels)
        } } }
        let stats = ErrorStats(c, want)
        let shape = "\(kernels.width) m\(m) n\(n) transposedA=\(transposedA) accumulate=\(accumulate)"
        #expect(stats.relativeRMS < 1e-6, "\(shape) columnBlocksOutside=\(columnBlocksOutside): \(stats)")
    }
}

@Suite struct CPUKernelsTests {
    @Test func widestRunnableWidthUnlessOverridden() {
        #expect(CPUKernels.choose(requested: nil, avx512Runs: true) == (.avx512, nil))
        #expect(CPUKernels.choose(requested: nil, avx512Runs: false) == (.avx2, nil))
        #expect(CPUKernels.choose(requested: "avx2", avx512Runs: true) == (.avx2, nil))
        #expect(CPUKernels.choose(requested: "AVX512", avx512Runs: true) == (.avx512, nil))
    }

    @Test func overridesThatCannotRunWarnAndFallBack() throws {
        let (width, warning) = CPUKernels.choose(requested: "avx512", avx512Runs: false)
        #expect(width == .avx2)
        #expect(try #require(warning).contains("lacks AVX-512"))
        let unknown = CPUKernels.choose(requested: "sse", avx512Runs: true)
        #expect(unknown.0 == .avx512 && unknown.warning?.contains("not one of avx2, avx512") == true)
    }

    @Test func scopedWidthIsReportedAndIsolated() throws {
        let avx2 = try #require(CPUKernels(.avx2))
        CPUKernels.with(avx2) { #expect(CPUKernels.width == .avx2 && CPUKernels.current.rows == 6) }
        #expect(CPUKernels.width == CPUKernels.selected.width)
        #expect(CPUKernels(.avx512) == nil || CPUKernels(.avx512)!.rows == 12)
    }
}
