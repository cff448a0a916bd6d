import Linea
import Testing

@Suite struct MicroKernelTests {
    /// Both A layouts, overwrite and accumulate, against a plain Float64 triple loop.
    @Test(arguments: [false, true], [false, true])
    func gemmMatchesTripleLoop(transposedA: Bool, accumulate: Bool) throws {
        let (m, n, depth) = (12, 32, 37)
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
                             b: bp.baseAddress!, ldb: n, c: cp.baseAddress!, ldc: n, accumulate: accumulate)
        } } }
        let stats = ErrorStats(c, want)
        #expect(stats.relativeRMS < 1e-6, "\(stats)")
    }
}
