import CLineaKernels
import Foundation

/// One vector width's build of the hot CPU kernels (flash attention's tile products, online softmax and rescale),
/// compiled by clang in `CLineaKernels`: Swift builds the whole module for `haswell`, so the AVX-512 build lives
/// there as functions with their own target attribute, called once per tile.
public struct CPUKernels: @unchecked Sendable {  // the table is immutable static data
    /// A vector width with its own build of the kernels.
    public enum Width: String, Sendable, CaseIterable, CustomStringConvertible {
        /// 8 floats per register, 16 registers (AVX2 + FMA): x86-64 since Haswell and Zen 1.
        case avx2
        /// 16 floats per register, 32 registers (AVX-512 F, DQ, BW, VL): Skylake-SP and later, Zen 4 and later.
        case avx512

        /// The name `LINEA_CPU_KERNELS` takes and `linea bench` prints: "avx2" or "avx512".
        public var description: String { rawValue }

        /// Whether the running CPU can execute this build (cpuid, read once). O(1).
        public var isSupported: Bool {
            switch self {
            case .avx2: true
            case .avx512: linea_kernels_avx512() != nil && CPUFeatures.current.isSuperset(of: .avx512)
            }
        }
    }

    /// The width this build is for.
    public let width: Width
    let table: linea_kernel_table

    /// The build for `width`, or nil where the running CPU lacks its instructions.
    public init?(_ width: Width) {
        guard width.isSupported else { return nil }
        self.width = width
        switch width {
        case .avx2: table = linea_kernels_avx2
        case .avx512: table = linea_kernels_avx512()!.pointee
        }
    }

    /// Whether bf16 products may round their Float32 input to bf16 and run on `vdpbf16ps`: the avx512 build, on a
    /// CPU with AVX512-BF16. O(1).
    public var hasBF16Products: Bool {
        width == .avx512 && linea_has_bf16_gemm() != 0 && CPUFeatures.current.contains(.avx512bf16)
    }

    /// Rows of C in the GEMM's register block (6 for AVX2, 12 for AVX-512): `m` must be a multiple.
    public var rows: Int { table.rows }
    /// Columns of C in the GEMM's register block (16 for AVX2, 32 for AVX-512): `n` must be a multiple.
    public var columns: Int { table.columns }
    /// Queries per flash-attention tile: a multiple of `rows` and `columns`, so neither product computes padding.
    public var queryBlock: Int { table.query_block }
    /// Keys per flash-attention tile: a multiple of `rows`, so only the last tile of a row is ragged.
    public var keyBlock: Int { table.key_block }

    /// The build this process uses unless a scope overrides it: `LINEA_CPU_KERNELS` (`avx2`, `avx512`) where set
    /// and runnable, else the widest the CPU runs. Chosen once; O(1).
    public static let selected: CPUKernels = {
        let (width, warning) = choose(requested: ProcessInfo.processInfo.environment["LINEA_CPU_KERNELS"],
                                      avx512Runs: Width.avx512.isSupported)
        if let warning { FileHandle.standardError.write(Data("linea: \(warning)\n".utf8)) }
        return CPUKernels(width)!
    }()

    /// The width to use for an environment value `requested` (nil: unset), and a warning for a value that cannot be
    /// honoured: an unknown name, or `avx512` where the CPU lacks it (it would fault on the first AVX-512 instruction).
    public static func choose(requested: String?, avx512Runs: Bool) -> (Width, warning: String?) {
        let widest: Width = avx512Runs ? .avx512 : .avx2
        guard let requested, !requested.isEmpty else { return (widest, nil) }
        guard let width = Width(rawValue: requested.lowercased()) else {
            return (widest, "LINEA_CPU_KERNELS=\(requested) is not one of avx2, avx512; using \(widest)")
        }
        if width == .avx512 && !avx512Runs {
            return (.avx2, "LINEA_CPU_KERNELS=avx512 but this CPU lacks AVX-512 (has: \(CPUFeatures.current)); using avx2")
        }
        return (width, nil)
    }

    /// The build `with(_:_:)` set for this task, if any (task-local, so parallel tests each keep their own).
    @TaskLocal static var scoped: CPUKernels?

    /// The build the CPU kernels called from this task use: `selected`, or the one set by `with(_:_:)`.
    public static var current: CPUKernels { scoped ?? selected }

    /// The width of `current`, e.g. for `linea bench` to print which kernels ran.
    public static var width: Width { current.width }

    /// Runs `body` with `kernels` as `current` in this task (tests and side-by-side timings; other tasks keep theirs).
    public static func with<R>(_ kernels: CPUKernels, _ body: () throws -> R) rethrows -> R {
        try $scoped.withValue(kernels, operation: body)
    }

    /// `C[m x n] (+)= A[m x depth] · B[depth x n]`, see `MicroKernel.gemm`. O(m·n·depth).
    @inline(__always)
    func gemm(
        m: Int, n: Int, depth: Int, a: UnsafePointer<Float>, aRowStride: Int, aDepthStride: Int,
        b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool,
        columnBlocksOutside: Bool
    ) {
        precondition(m % rows == 0 && n % columns == 0, "gemm: m, n must be multiples of \(rows), \(columns)")
        table.gemm(m, n, depth, a, aRowStride, aDepthStride, b, ldb, c, ldc, accumulate ? 1 : 0,
                   columnBlocksOutside ? 1 : 0)
    }

    /// `out[i·ldo + j] = Σ_d x[i·k + d] · w[j·k + d]` for input rows `i < m` (1...3) and outputs `j` in `rows`: the
    /// product with an nn.Linear weight `[n, k]`, Float32 or bfloat16 bits (widened exactly), summed in Float32.
    /// O(m·rows.count·k).
    @inline(__always)
    func gemv(m: Int, rows: Range<Int>, k: Int, x: UnsafePointer<Float>, weight: UnsafeRawPointer, bf16: Bool,
              out: UnsafeMutablePointer<Float>, ldo: Int) {
        precondition((1...3).contains(m), "gemv: m must be 1...3")
        table.gemv(m, rows.lowerBound, rows.upperBound, k, x, weight, bf16 ? 1 : 0, out, ldo)
    }

    /// `y[i][c] = x[i][c] · e^(e[i][c] - r[i][c])` for `i < rows`, `c < n` (row strides in elements; a stride of 0
    /// repeats one row; `r` nil for 0), the exponent formed in Float64. O(rows·n).
    func scaledByExp(
        rows: Int, n: Int, y: UnsafeMutablePointer<Float>, ldy: Int, x: UnsafePointer<Float>, ldx: Int,
        e: UnsafePointer<Double>, lde: Int, minus r: UnsafePointer<Double>?, ldr: Int
    ) {
        table.scaled_by_exp(rows, n, y, ldy, x, ldx, e, lde, r, ldr)
    }

    /// `2^x` elementwise through the kernels' own formula: the softmax's degree-5 one (`fast`) or the degree-6 one of
    /// the rescale and `scaledByExp`; for tests of their accuracy. O(count).
    package func exp2(_ x: [Float], fast: Bool) -> [Float] {
        var y = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
            if let xb = xp.baseAddress, let yb = yp.baseAddress { table.exp2(xb, yb, x.count, fast ? 1 : 0) }
        } }
        return y
    }

    /// One key tile of flash attention's online softmax down the columns of `Sᵀ [keys, lds]`: running max and sum
    /// per column, scores replaced by `2^(s - max)`, rows `0..<accRows` of `acc [., dvPad]` rescaled.
    /// `columns` a multiple of `self.columns`. O(keys·columns + accRows·dvPad).
    @inline(__always)
    func softmaxColumns(
        scores: UnsafeMutablePointer<Float>, lds: Int, keys: Int, columns: Int, colMax: UnsafeMutablePointer<Float>,
        colSum: UnsafeMutablePointer<Float>, acc: UnsafeMutablePointer<Float>, dvPad: Int, accRows: Int
    ) {
        table.softmax_columns(scores, lds, keys, columns, colMax, colSum, acc, dvPad, accRows)
    }
}
