/// A register-blocked single-precision GEMM for the small, fixed-shape products inside fused kernels
/// (flash attention's `QKᵀ` and `PV` tiles), where a BLAS call's packing and dispatch cost a third of the time.
/// Built for AVX2 and AVX-512 in `CLineaKernels`; `CPUKernels` picks one.
public enum MicroKernel {
    /// `C[m x n] (+)= A[m x depth] · B[depth x n]`; B and C row-major (strides `ldb`, `ldc`); A's element
    /// `(r, d)` at `a[r * aRowStride + d * aDepthStride]`, so A may be row-major (`lda, 1`) or transposed (`1, lda`).
    /// Requires `m % kernels.rows == 0` and `n % kernels.columns == 0` (callers pad; 12 x 32 always works);
    /// `accumulate == false` overwrites C. O(m·n·depth).
    /// Blocks of C run row by row (A's rows stay in L1 while B streams) unless `columnBlocksOutside`, which keeps
    /// one panel of B in L1 while A streams: better when B is larger than L1 and A is small.
    public static func gemm(
        m: Int, n: Int, depth: Int,
        a: UnsafePointer<Float>, aRowStride: Int, aDepthStride: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, columnBlocksOutside: Bool = false,
        kernels: CPUKernels = .current
    ) {
        kernels.gemm(m: m, n: n, depth: depth, a: a, aRowStride: aRowStride, aDepthStride: aDepthStride, b: b,
                     ldb: ldb, c: c, ldc: ldc, accumulate: accumulate, columnBlocksOutside: columnBlocksOutside)
    }
}
