/// A register-blocked single-precision GEMM for the small, fixed-shape products inside fused kernels
/// (flash attention's `QKᵀ` and `PV` tiles), where a BLAS call's packing and dispatch cost a third of the time.
public enum MicroKernel {
    /// Rows of C per register block.
    public static let rows = 6
    /// Columns of C per register block (two 8-lane vectors).
    public static let columns = 16

    /// `C[m x n] (+)= A[m x depth] · B[depth x n]`; B and C row-major (strides `ldb`, `ldc`); A's element
    /// `(r, d)` at `a[r * aRowStride + d * aDepthStride]`, so A may be row-major (`lda, 1`) or transposed (`1, lda`).
    /// Requires `m % 6 == 0` and `n % 16 == 0` (callers pad); `accumulate == false` overwrites C. O(m·n·depth).
    /// Blocks of C run row by row (A's 6 rows stay in L1 while B streams) unless `columnBlocksOutside`, which keeps
    /// one 16-column panel of B in L1 while A streams: better when B is larger than L1 and A is small.
    @inlinable @inline(__always)
    public static func gemm(
        m: Int, n: Int, depth: Int,
        a: UnsafePointer<Float>, aRowStride: Int, aDepthStride: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, columnBlocksOutside: Bool = false
    ) {
        precondition(m % rows == 0 && n % columns == 0, "MicroKernel.gemm: m, n must be multiples of 6, 16")
        let (rowBlocks, columnBlocks) = (m / rows, n / columns)
        let (outer, inner) = columnBlocksOutside ? (columnBlocks, rowBlocks) : (rowBlocks, columnBlocks)
        for x in 0..<outer {
            for y in 0..<inner {
                let (i, j) = columnBlocksOutside ? (y * rows, x * columns) : (x * rows, y * columns)
                block(depth: depth, a: a + i * aRowStride, rs: aRowStride, ds: aDepthStride, b: b + j, ldb: ldb,
                      c: c + i * ldc + j, ldc: ldc, accumulate: accumulate)
            }
        }
    }

    /// One 6 x 16 block of C kept in twelve vector registers over the whole depth.
    @inlinable @inline(__always)
    static func block(
        depth: Int, a: UnsafePointer<Float>, rs: Int, ds: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool
    ) {
        typealias V = SIMD8<Float>
        @inline(__always) func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
        @inline(__always) func store(_ v: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }
        var c00 = V(), c01 = V(), c10 = V(), c11 = V(), c20 = V(), c21 = V()
        var c30 = V(), c31 = V(), c40 = V(), c41 = V(), c50 = V(), c51 = V()
        if accumulate {
            c00 = load(c); c01 = load(c + 8)
            c10 = load(c + ldc); c11 = load(c + ldc + 8)
            c20 = load(c + 2 * ldc); c21 = load(c + 2 * ldc + 8)
            c30 = load(c + 3 * ldc); c31 = load(c + 3 * ldc + 8)
            c40 = load(c + 4 * ldc); c41 = load(c + 4 * ldc + 8)
            c50 = load(c + 5 * ldc); c51 = load(c + 5 * ldc + 8)
        }
        // One pointer per operand, bumped each step, and the row offsets hoisted: the loop body is then the 12 FMAs,
        // 8 loads and 4 integer operations (indexing `a[r * rs + step * ds]` afresh cost 9 address operations a step).
        let (r1, r2, r3, r4, r5) = (rs, 2 * rs, 3 * rs, 4 * rs, 5 * rs)
        var pa = a, pb = b
        for _ in 0..<depth {
            let b0 = load(pb), b1 = load(pb + 8)
            var x = V(repeating: pa[0])
            c00 = c00.addingProduct(x, b0); c01 = c01.addingProduct(x, b1)
            x = V(repeating: pa[r1])
            c10 = c10.addingProduct(x, b0); c11 = c11.addingProduct(x, b1)
            x = V(repeating: pa[r2])
            c20 = c20.addingProduct(x, b0); c21 = c21.addingProduct(x, b1)
            x = V(repeating: pa[r3])
            c30 = c30.addingProduct(x, b0); c31 = c31.addingProduct(x, b1)
            x = V(repeating: pa[r4])
            c40 = c40.addingProduct(x, b0); c41 = c41.addingProduct(x, b1)
            x = V(repeating: pa[r5])
            c50 = c50.addingProduct(x, b0); c51 = c51.addingProduct(x, b1)
            pa += ds
            pb += ldb
        }
        store(c00, c); store(c01, c + 8)
        store(c10, c + ldc); store(c11, c + ldc + 8)
        store(c20, c + 2 * ldc); store(c21, c + 2 * ldc + 8)
        store(c30, c + 3 * ldc); store(c31, c + 3 * ldc + 8)
        store(c40, c + 4 * ldc); store(c41, c + 4 * ldc + 8)
        store(c50, c + 5 * ldc); store(c51, c + 5 * ldc + 8)
    }
}
