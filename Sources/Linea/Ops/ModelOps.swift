import Foundation
import CLineaKernels

/// Float32 forms of the model ops on raw buffers (row-major, sizes given), vectorized and parallel over rows where
/// large; each checks its buffer sizes and throws `LineaError` naming the argument. Outputs may alias inputs of the
/// same shape for the elementwise ops and norms (each element is read before it is written).
public enum CPUOps {
    /// Rows handled per parallel item: about 32K elements, so small calls stay on the calling thread.
    static let elementsPerItem = 1 << 15

    /// A value that may cross into `Parallel.forEach` although the compiler cannot prove it safe: every user
    /// writes disjoint rows.
    struct Unchecked<T>: @unchecked Sendable { let value: T }

    /// Runs `body` over `0..<rows` split into contiguous ranges, in parallel when `rows · width` is large.
    static func forRows(_ rows: Int, width: Int, _ body: (Range<Int>) -> Void) {
        let items = min(rows, max(1, rows * max(width, 1) / elementsPerItem), Parallel.threadCount * 4)
        if items <= 1 {
            if rows > 0 { body(0..<rows) }
            return
        }
        withoutActuallyEscaping(body) { body in
            let box = Unchecked(value: body)
            Parallel.forEach(items) { i in box.value(rows * i / items..<rows * (i + 1) / items) }
        }
    }

    // MARK: Matrix multiply

    /// `out[m, n] = x[m, k] · weight[n, k]^T + bias[n]` (nn.Linear layout) through OpenBLAS sgemm. O(m·n·k).
    public static func matmul(x: UnsafeBufferPointer<Float>, weight: UnsafeBufferPointer<Float>,
                              bias: UnsafeBufferPointer<Float>? = nil, out: UnsafeMutableBufferPointer<Float>,
                              m: Int, n: Int, k: Int) throws {
        guard try checkMatmul(x: x.count, weight: weight.count, bias: bias, out: out, m: m, n: n, k: k) else { return }
        let (xp, wp, op) = (x.baseAddress!, weight.baseAddress!, out.baseAddress!)
        if m < 4 {
            // Decode: dot products straight off the weight rows (sgemm would first pack the whole matrix: a second
            // pass over the memory a one-token step is bound by; measured 24 -> 45 tokens/s on a 120M model).
            gemv(x: xp, weight: UnsafeRawPointer(wp), bf16: false, out: op, m: m, n: n, k: k)
        } else {
            BLAS.sgemm(transB: true, m: m, n: n, k: k, a: xp, lda: k, b: wp, ldb: k, c: op, ldc: n)
        }
        if let bias { addBias(bias, out, m: m, n: n) }
    }

    /// The same product with bfloat16 weights (bits as `UInt16`), Float32 accumulation. Decode (m < 4): widened in
    /// registers by the gemv kernel. Up to 16 rows: each weight row is widened into a cache-resident buffer and dotted
    /// with every input row, so the bf16 matrix is read once. More rows: with AVX512-BF16 (and the avx512 kernels
    /// selected), x rounded to bf16 and multiplied by `vdpbf16ps`; elsewhere blocks of weight rows widened and
    /// multiplied by sgemm. O(m·n·k).
    public static func matmul(x: UnsafeBufferPointer<Float>, weightBF16 weight: UnsafeBufferPointer<UInt16>,
                              bias: UnsafeBufferPointer<Float>? = nil, out: UnsafeMutableBufferPointer<Float>,
                              m: Int, n: Int, k: Int) throws {
        guard try checkMatmul(x: x.count, weight: weight.count, bias: bias, out: out, m: m, n: n, k: k) else { return }
        let (xp, wp, op) = (x.baseAddress!, weight.baseAddress!, out.baseAddress!)
        if m < 4 {
            gemv(x: xp, weight: UnsafeRawPointer(wp), bf16: true, out: op, m: m, n: n, k: k)
        } else if m < 16 {
            forRows(n, width: m * k) { rows in
                let wide = UnsafeMutablePointer<Float>.allocate(capacity: max(k, 1))
                defer { wide.deallocate() }
                for j in rows {
                    widenBF16(wp + j * k, wide, count: k)
                    for i in 0..<m { op[i * n + j] = dot(xp + i * k, wide, count: k) }
                }
            }
        } else if CPUKernels.current.hasBF16Products {
            bf16Products(x: xp, weight: wp, out: op, m: m, n: n, k: k)
        } else {
            // Each sgemm call packs x again: blocks of at least 4·m rows (256 KiB of Float32 at the least) amortize it.
            let blockRows = max(16, min(n, max(1 << 16, 4 * m * k) / max(k, 1)))
            let wide = UnsafeMutablePointer<Float>.allocate(capacity: max(blockRows * k, 1))
            defer { wide.deallocate() }
            for j0 in stride(from: 0, to: n, by: blockRows) {
                let nb = min(blockRows, n - j0)
                forRows(nb, width: k) { rows in
                    widenBF16(wp + (j0 + rows.lowerBound) * k, wide + rows.lowerBound * k, count: rows.count * k)
                }
                BLAS.sgemm(transB: true, m: m, n: nb, k: k, a: xp, lda: k, b: wide, ldb: k, c: op + j0, ldc: n)
            }
        }
        if let bias { addBias(bias, out, m: m, n: n) }
    }

    /// `out [m, n] = bf16(x) [m, k] · weight [n, k]^T` through the AVX512-BF16 kernel: x rounded to bf16 once (as
    /// llama.cpp and torch's bf16 matmul do), then strips of 32 output columns spread over the threads. O(m·n·k).
    static func bf16Products(x: UnsafePointer<Float>, weight: UnsafePointer<UInt16>, out: UnsafeMutablePointer<Float>,
                             m: Int, n: Int, k: Int) {
        let ldx = (k + 1) & ~1
        let rounded = UnsafeMutablePointer<UInt16>.allocate(capacity: m * ldx)
        defer { rounded.deallocate() }
        forRows(m, width: k) { rows in
            linea_round_bf16(x + rows.lowerBound * k, rounded + rows.lowerBound * ldx, rows.count, k, ldx)
        }
        let strips = (n + 31) / 32
        let items = BF16ProductItems(x: rounded, ldx: ldx, weight: weight, out: out, m: m, n: n, k: k,
                                     parts: min(strips, 4 * Parallel.threadCount))
        Parallel.forEachStatic(items.parts, items)
    }

    /// One part of a bf16 product per item: a contiguous range of 32-column strips of out.
    struct BF16ProductItems: ParallelItems, @unchecked Sendable {  // each item writes its own columns of out
        let x: UnsafePointer<UInt16>, ldx: Int, weight: UnsafePointer<UInt16>, out: UnsafeMutablePointer<Float>
        let m: Int, n: Int, k: Int, parts: Int

        func run(_ item: Int) {
            let strips = (n + 31) / 32
            let j0 = strips * item / parts * 32, j1 = min(n, strips * (item + 1) / parts * 32)
            if j0 < j1 { linea_gemm_bf16(m, j0, j1, k, x, ldx, weight, out, n) }
        }
    }

    /// `out [m, n] = x [m, k] · weight [n, k]^T` for m < 4 through the vector width's gemv kernel (each weight read once
    /// for all m rows), the rows of the matrix split into up to 4 parts per thread when it is large. O(m·n·k).
    static func gemv(x: UnsafePointer<Float>, weight: UnsafeRawPointer, bf16: Bool, out: UnsafeMutablePointer<Float>,
                     m: Int, n: Int, k: Int) {
        let items = GEMVItems(kernels: CPUKernels.current, x: x, weight: weight, bf16: bf16, out: out, m: m, n: n, k: k,
                              parts: min(4 * Parallel.threadCount, max(1, n * k / elementsPerItem)))
        Parallel.forEachStatic(items.parts, items)
    }

    /// One part of a gemv per item: a contiguous range of output rows starting at a multiple of 16 (its outputs then
    /// start a cache line of their own, which no other thread writes).
    struct GEMVItems: ParallelItems, @unchecked Sendable {  // each item writes its own range of out
        let kernels: CPUKernels
        let x: UnsafePointer<Float>, weight: UnsafeRawPointer, bf16: Bool, out: UnsafeMutablePointer<Float>
        let m: Int, n: Int, k: Int, parts: Int

        func run(_ item: Int) {
            func edge(_ p: Int) -> Int { p == parts ? n : (n * p / parts) & ~15 }
            let rows = edge(item)..<edge(item + 1)
            if !rows.isEmpty { kernels.gemv(m: m, rows: rows, k: k, x: x, weight: weight, bf16: bf16, out: out, ldo: n) }
        }
    }

    /// Checks the sizes; false when nothing is left to multiply (out is then empty, or bias / zeros when k = 0).
    static func checkMatmul(x: Int, weight: Int, bias: UnsafeBufferPointer<Float>?, out: UnsafeMutableBufferPointer<Float>,
                            m: Int, n: Int, k: Int) throws -> Bool {
        try OpCheck.sizes(["m": m, "n": n, "k": k])
        try OpCheck.count("x", x, m * k, "[m, k] = [\(m), \(k)]")
        try OpCheck.count("weight", weight, n * k, "[n, k] = [\(n), \(k)]")
        if let bias { try OpCheck.count("bias", bias.count, n, "[n] = [\(n)]") }
        try OpCheck.count("out", out.count, m * n, "[m, n] = [\(m), \(n)]")
        if m > 0 && n > 0 && k == 0 {
            for i in 0..<m { for j in 0..<n { out[i * n + j] = bias?[j] ?? 0 } }
        }
        return m > 0 && n > 0 && k > 0
    }

    static func addBias(_ bias: UnsafeBufferPointer<Float>, _ out: UnsafeMutableBufferPointer<Float>, m: Int, n: Int) {
        forRows(m, width: n) { rows in
            for i in rows { for j in 0..<n { out[i * n + j] += bias[j] } }
        }
    }

    /// bfloat16 bits to Float32 (exact: the bits are the high half). O(count).
    @inline(__always)
    static func widenBF16(_ src: UnsafePointer<UInt16>, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { dst[i] = Float(bitPattern: UInt32(src[i]) << 16) }
    }

    /// `Σ a[i]·b[i]`: four independent 16-lane FMA chains (one chain waits on the FMA latency). O(count).
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        func load(_ p: UnsafePointer<Float>, _ i: Int) -> SIMD16<Float> { UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self) }
        var (s0, s1, s2, s3) = (SIMD16<Float>(), SIMD16<Float>(), SIMD16<Float>(), SIMD16<Float>())
        var i = 0
        while i + 64 <= count {
            s0.addProduct(load(a, i), load(b, i))
            s1.addProduct(load(a, i + 16), load(b, i + 16))
            s2.addProduct(load(a, i + 32), load(b, i + 32))
            s3.addProduct(load(a, i + 48), load(b, i + 48))
            i += 64
        }
        while i + 16 <= count { s0.addProduct(load(a, i), load(b, i)); i += 16 }
        var sum = ((s0 + s1) + (s2 + s3)).sum()
        while i < count { sum += a[i] * b[i]; i += 1 }
        return sum
    }

    /// `y[i] = silu(y[i])`, or `y[i] *= silu(gate[i])` when `gate` is given, 8 lanes at a time. O(count).
    @inline(__always)
    static func applySiLU(_ y: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>? = nil, count: Int) {
        forVectors(count) { i, n in
            let v = load8(y + i, n)
            let z = gate.map { load8($0 + i, n) } ?? v
            store8(gate == nil ? z * sigmoid8(z) : v * z * sigmoid8(z), y + i, n)
        }
    }

    /// Calls `body(i, 8)` for each whole vector of `0 ..< count` and then `body(i, count - i)` for a partial tail. The
    /// literal 8 keeps an inlined body 8 lanes wide: with the lane count varying inside the loop, LLVM split the
    /// formulas into 4-, 3- and 1-lane pieces with scalar FMAs (SiLU and the gated norm ran 2-2.4x slower). O(count / 8) calls.
    @inline(__always)
    static func forVectors(_ count: Int, _ body: (_ i: Int, _ n: Int) -> Void) {
        var i = 0
        while i + 8 <= count { body(i, 8); i += 8 }
        if i < count { body(i, count - i) }
    }

    /// The `n <= 8` floats at `p` in the low lanes (zeros above). O(1).
    @inline(__always)
    static func load8(_ p: UnsafePointer<Float>, _ n: Int) -> SIMD8<Float> {
        if n == 8 { return UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
        var v = SIMD8<Float>()
        for l in 0..<n { v[l] = p[l] }
        return v
    }

    /// Stores the low `n <= 8` lanes of `v` at `p`. O(1).
    @inline(__always)
    static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, _ n: Int) {
        if n == 8 { return UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self) }
        for l in 0..<n { p[l] = v[l] }
    }

    // MARK: Embedding

    /// Rows `table[ids[i]]` of a Float32 `[vocab, dim]` table into `out [ids.count, dim]`; an id outside
    /// `0..<vocab` throws naming `ids`, the value and its index. O(ids.count·dim).
    public static func embedding<ID: FixedWidthInteger>(ids: UnsafeBufferPointer<ID>, table: UnsafeBufferPointer<Float>,
                                                        out: UnsafeMutableBufferPointer<Float>, vocab: Int, dim: Int) throws {
        try checkEmbedding(ids: ids, table: table.count, out: out.count, vocab: vocab, dim: dim)
        forRows(ids.count, width: dim) { rows in
            for i in rows {
                let row = Int(ids[i]) * dim
                for c in 0..<dim { out[i * dim + c] = table[row + c] }
            }
        }
    }

    /// The same gather from a bfloat16 table (bits as `UInt16`), widened to Float32. O(ids.count·dim).
    public static func embedding<ID: FixedWidthInteger>(ids: UnsafeBufferPointer<ID>, tableBF16 table: UnsafeBufferPointer<UInt16>,
                                                        out: UnsafeMutableBufferPointer<Float>, vocab: Int, dim: Int) throws {
        try checkEmbedding(ids: ids, table: table.count, out: out.count, vocab: vocab, dim: dim)
        if out.isEmpty { return }
        forRows(ids.count, width: dim) { rows in
            for i in rows { widenBF16(table.baseAddress! + Int(ids[i]) * dim, out.baseAddress! + i * dim, count: dim) }
        }
    }

    static func checkEmbedding<ID: FixedWidthInteger>(ids: UnsafeBufferPointer<ID>, table: Int, out: Int,
                                                      vocab: Int, dim: Int) throws {
        try OpCheck.sizes(["vocab": vocab, "dim": dim])
        try OpCheck.count("table", table, vocab * dim, "[vocab, dim] = [\(vocab), \(dim)]")
        try OpCheck.count("out", out, ids.count * dim, "[ids, dim] = [\(ids.count), \(dim)]")
        for (i, id) in ids.enumerated() where id < 0 || id >= vocab {
            throw LineaError.invalidArgument(argument: "ids", expected: "token ids in 0..<\(vocab)", actual: "\(id) at index \(i)")
        }
    }

    // MARK: Norms

    /// RMSNorm of `x [rows, dim]` into `out`: `x / sqrt(mean(x²) + eps) · w`, or `· (1 + w)` when `zeroCentered`
    /// (Qwen3NextRMSNorm). O(rows·dim).
    public static func rmsNorm(x: UnsafeBufferPointer<Float>, weight: UnsafeBufferPointer<Float>,
                               out: UnsafeMutableBufferPointer<Float>, rows: Int, dim: Int, eps: Float,
                               zeroCentered: Bool = false) throws {
        let nonEmpty = try checkRows(["x": x.count, "out": out.count], rows: rows, dim: dim)
        try OpCheck.count("weight", weight.count, dim, "[dim] = [\(dim)]")
        guard nonEmpty else { return }
        let offset: Float = zeroCentered ? 1 : 0
        forRows(rows, width: dim) { range in
            for r in range {
                let row = x.baseAddress! + r * dim
                let inv = 1 / (sumOfSquares(row, count: dim) / Float(dim) + eps).squareRoot()
                for c in 0..<dim { out[r * dim + c] = row[c] * inv * (offset + weight[c]) }
            }
        }
    }

    /// Gated RMSNorm (Qwen3NextRMSNormGated): `x / sqrt(mean(x²) + eps) · w · silu(gate)`, all `[rows, dim]`.
    /// O(rows·dim).
    public static func rmsNormGated(x: UnsafeBufferPointer<Float>, gate: UnsafeBufferPointer<Float>,
                                    weight: UnsafeBufferPointer<Float>, out: UnsafeMutableBufferPointer<Float>,
                                    rows: Int, dim: Int, eps: Float) throws {
        let nonEmpty = try checkRows(["x": x.count, "gate": gate.count, "out": out.count], rows: rows, dim: dim)
        try OpCheck.count("weight", weight.count, dim, "[dim] = [\(dim)]")
        guard nonEmpty else { return }
        forRows(rows, width: dim) { range in
            for r in range {
                let row = x.baseAddress! + r * dim
                let inv = 1 / (sumOfSquares(row, count: dim) / Float(dim) + eps).squareRoot()
                for c in 0..<dim { out[r * dim + c] = row[c] * inv * weight[c] }
                applySiLU(out.baseAddress! + r * dim, gate: gate.baseAddress! + r * dim, count: dim)
            }
        }
    }

    /// L2 norm of each row of `x [rows, dim]` (fla's `l2norm`): `x / sqrt(Σ x² + eps)`. O(rows·dim).
    public static func l2Norm(x: UnsafeBufferPointer<Float>, out: UnsafeMutableBufferPointer<Float>,
                              rows: Int, dim: Int, eps: Float = 1e-6) throws {
        guard try checkRows(["x": x.count, "out": out.count], rows: rows, dim: dim) else { return }
        forRows(rows, width: dim) { range in
            for r in range {
                let row = x.baseAddress! + r * dim
                let inv = 1 / (sumOfSquares(row, count: dim) + eps).squareRoot()
                for c in 0..<dim { out[r * dim + c] = row[c] * inv }
            }
        }
    }

    /// Checks `[rows, dim]` buffers; false when they are empty (nothing to do).
    @discardableResult
    static func checkRows(_ buffers: KeyValuePairs<String, Int>, rows: Int, dim: Int) throws -> Bool {
        try OpCheck.sizes(["rows": rows, "dim": dim])
        for (name, count) in buffers { try OpCheck.count(name, count, rows * dim, "[rows, dim] = [\(rows), \(dim)]") }
        return rows * dim > 0
    }

    @inline(__always)
    static func sumOfSquares(_ a: UnsafePointer<Float>, count: Int) -> Float {
        var acc = SIMD16<Float>()
        var i = 0
        while i + 16 <= count {
            let v = UnsafeRawPointer(a + i).loadUnaligned(as: SIMD16<Float>.self)
            acc.addProduct(v, v)
            i += 16
        }
        var sum = acc.sum()
        while i < count { sum += a[i] * a[i]; i += 1 }
        return sum
    }

    // MARK: Elementwise

    /// An elementwise formula on 8 lanes of one input (`b` is `a` again) or two: a value type rather than a closure, so
    /// that `map` and `broadcast` specialize for it and inline it into their loops (a closure captured by the parallel
    /// body was called out of line for every 8 elements).
    protocol Formula8 {
        /// The formula on lanes `a` (and `b`). O(1).
        func callAsFunction(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float>
    }

    /// Applies `f` to 8 lanes at a time over `x` (and `y`, of the same size, checked by the caller) into `out` (a short
    /// tail is padded, so every element sees the same formula), in parallel when large. O(n).
    @inline(__always)
    static func map<F: Formula8>(_ x: UnsafeBufferPointer<Float>, _ y: UnsafeBufferPointer<Float>?, _ out: UnsafeMutableBufferPointer<Float>,
                                 _ f: F) throws {
        try OpCheck.count("out", out.count, x.count, "the shape of the input")
        guard let xp = x.baseAddress, let op = out.baseAddress else { return }
        let yp = y?.baseAddress ?? xp  // a one-input formula ignores its second lanes
        forRows((x.count + 7) / 8, width: 8) { blocks in
            let first = blocks.lowerBound * 8
            forVectors(min(x.count, blocks.upperBound * 8) - first) { j, n in
                store8(f(load8(xp + first + j, n), load8(yp + first + j, n)), op + first + j, n)
            }
        }
    }

    /// `1 / (1 + e^-x)` on 8 lanes. Transparent: under `@inline(__always)` the compiler still called it out of line from
    /// the conv and elementwise loops (its vector split into two halves for the call; 2% of a Mamba-2 prefill). O(1).
    @_transparent
    static func sigmoid8(_ x: SIMD8<Float>) -> SIMD8<Float> { 1 / (1 + VectorMath.exp(-x)) }

    /// `out = x · sigmoid(x)` (SiLU). O(n).
    public static func silu(x: UnsafeBufferPointer<Float>, out: UnsafeMutableBufferPointer<Float>) throws {
        try map(x, nil, out, SiLU())
    }

    /// `out = 1 / (1 + e^-x)`. O(n).
    public static func sigmoid(x: UnsafeBufferPointer<Float>, out: UnsafeMutableBufferPointer<Float>) throws {
        try map(x, nil, out, Sigmoid())
    }

    /// `out = silu(gate) · up` (SwiGLU), elementwise. O(n).
    public static func swiglu(gate: UnsafeBufferPointer<Float>, up: UnsafeBufferPointer<Float>,
                              out: UnsafeMutableBufferPointer<Float>) throws {
        try OpCheck.count("up", up.count, gate.count, "the shape of gate")
        try map(gate, up, out, SwiGLU())
    }

    /// `out [rows, width] = silu(x[:, :width]) · x[:, width:]` for `x [rows, 2 · width]` (`Ops.swiglu(halves:)`). O(n).
    public static func swiglu(halves x: UnsafeBufferPointer<Float>, out: UnsafeMutableBufferPointer<Float>, rows: Int, width: Int) throws {
        try OpCheck.count("x", x.count, rows * 2 * width, "[rows, 2 · width] = [\(rows), \(2 * width)]")
        try OpCheck.count("out", out.count, rows * width, "[rows, width] = [\(rows), \(width)]")
        guard let base = x.baseAddress, let o = out.baseAddress else { return }
        forRows(rows, width: 2 * width) { range in
            for r in range {  // sizes checked above: the per-row calls cannot throw
                let row = base + r * 2 * width
                try? swiglu(gate: UnsafeBufferPointer(start: row, count: width), up: UnsafeBufferPointer(start: row + width, count: width),
                            out: UnsafeMutableBufferPointer(start: o + r * width, count: width))
            }
        }
    }

    /// `out = a + b` (residual add); `a[i]` meets `b[(i / inner) % b.count]` (b broadcast, `Ops.add`). O(n).
    public static func add(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>,
                           out: UnsafeMutableBufferPointer<Float>, inner: Int = 1) throws {
        try broadcast(a, b, out, inner: inner, Add())
    }

    /// `out = a · b`, `b` broadcast as in `add`. O(n).
    public static func mul(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>,
                           out: UnsafeMutableBufferPointer<Float>, inner: Int = 1) throws {
        try broadcast(a, b, out, inner: inner, Mul())
    }

    /// `target[rows[i]] += weights[i] · values[i]` for the rows of `values [n, D]`, in place; a row id
    /// outside the target is an error naming it (rows before it already added). O(n·D).
    public static func indexAdd(into target: UnsafeMutableBufferPointer<Float>, rows: [Int], values: UnsafeBufferPointer<Float>,
                                weights: [Float]?) throws {
        guard !rows.isEmpty else { return }
        let dim = values.count / rows.count
        let targetRows = dim == 0 ? 0 : target.count / dim
        for (i, row) in rows.enumerated() {
            try OpCheck.value("rows", (0..<targetRows).contains(row) || dim == 0, "row ids in 0..<\(targetRows)", "\(row) at index \(i)")
            let w = weights?[i] ?? 1
            for d in 0..<dim { target[row * dim + d] += w * values[i * dim + d] }
        }
    }

    /// `out = a / b`, `b` broadcast as in `add`. O(n).
    public static func div(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>,
                           out: UnsafeMutableBufferPointer<Float>, inner: Int = 1) throws {
        try broadcast(a, b, out, inner: inner, Div())
    }

    /// `out = e^x`. O(n).
    public static func exp(x: UnsafeBufferPointer<Float>, out: UnsafeMutableBufferPointer<Float>) throws {
        try map(x, nil, out, Exp())
    }

    /// `out [batches, cols, rows]` = `x [batches, rows, cols]` with the last two axes swapped, in 32 x 32 tiles (both
    /// sides stream whole cache lines). O(n).
    public static func transposeLastTwo(x: UnsafeBufferPointer<Float>, out: UnsafeMutableBufferPointer<Float>, batches: Int, rows: Int,
                                        cols: Int) throws {
        try OpCheck.sizes(["batches": batches, "rows": rows, "cols": cols])
        try OpCheck.count("x", x.count, batches * rows * cols, "[batches, rows, cols] = [\(batches), \(rows), \(cols)]")
        try OpCheck.count("out", out.count, batches * rows * cols, "[batches, cols, rows] = [\(batches), \(cols), \(rows)]")
        let tile = 32, rowTiles = (rows + tile - 1) / tile
        forRows(batches * rowTiles, width: tile * cols) { range in
            for item in range {
                let (b, r0) = (item / rowTiles, item % rowTiles * tile)
                let (src, dst) = (x.baseAddress! + b * rows * cols, out.baseAddress! + b * rows * cols)
                for c0 in stride(from: 0, to: cols, by: tile) {
                    for c in c0..<min(c0 + tile, cols) {
                        for r in r0..<min(r0 + tile, rows) { dst[c * rows + r] = src[r * cols + c] }
                    }
                }
            }
        }
    }

    /// `out = min(max(x, low), high)`. O(n).
    public static func clamp(x: UnsafeBufferPointer<Float>, out: UnsafeMutableBufferPointer<Float>, low: Float, high: Float) throws {
        try map(x, nil, out, Clamp(low: SIMD8(repeating: low), high: SIMD8(repeating: high)))
    }

    /// `out[i] = f(a[i], b[(i / inner) % b.count])`, b's runs tiling a. O(n).
    static func broadcast<F: Formula8>(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>, _ out: UnsafeMutableBufferPointer<Float>,
                                       inner: Int, _ f: F) throws {
        guard b.count != a.count || inner != 1 else { return try map(a, b, out, f) }
        try OpCheck.value("b", inner >= 1 && !b.isEmpty && a.count % (inner * b.count) == 0,
                          "a length whose repeats tile a (\(a.count) elements, runs of \(inner))", "\(b.count) elements")
        try OpCheck.count("out", out.count, a.count, "the shape of a")
        if inner == 1 {
            // b repeats element by element ([..., H] by [H]): whole periods of b, vector by vector.
            let period = b.count
            forRows(a.count / period, width: period) { range in
                for row in range {
                    let base = row * period
                    forVectors(period) { j, n in
                        store8(f(load8(a.baseAddress! + base + j, n), load8(b.baseAddress! + j, n)), out.baseAddress! + base + j, n)
                    }
                }
            }
            return
        }
        let runs = a.count / inner
        forRows(runs, width: inner) { range in
            for run in range {
                let y = SIMD8<Float>(repeating: b[run % b.count]), base = run * inner
                forVectors(inner) { j, n in store8(f(load8(a.baseAddress! + base + j, n), y), out.baseAddress! + base + j, n) }
            }
        }
    }

    /// GELU, exact (erf) or the tanh approximation (torch's `approximate`). O(n).
    public static func gelu(x: UnsafeBufferPointer<Float>, out: UnsafeMutableBufferPointer<Float>,
                            approximate: GELUApproximation = .none) throws {
        switch approximate {
        case .none:
            try map(x, nil, out, GELUErf())
        case .tanh:
            try map(x, nil, out, GELUTanh())
        }
    }

    /// torch's softplus (beta 1, threshold 20): `x` above 20, else `log(1 + e^x)`. O(n).
    public static func softplus(x: UnsafeBufferPointer<Float>, out: UnsafeMutableBufferPointer<Float>) throws {
        try map(x, nil, out, Softplus())
    }
}

/// The elementwise formulas of `CPUOps.map` and `CPUOps.broadcast`, one type each so that every op's loop is its own
/// specialization with the formula inlined.
extension CPUOps {
    /// `a · sigmoid(a)`.
    struct SiLU: Formula8 { @inline(__always) func callAsFunction(_ a: SIMD8<Float>, _: SIMD8<Float>) -> SIMD8<Float> { a * sigmoid8(a) } }
    /// `sigmoid(a)`.
    struct Sigmoid: Formula8 { @inline(__always) func callAsFunction(_ a: SIMD8<Float>, _: SIMD8<Float>) -> SIMD8<Float> { sigmoid8(a) } }
    /// `silu(gate) · up`.
    struct SwiGLU: Formula8 {
        @inline(__always) func callAsFunction(_ gate: SIMD8<Float>, _ up: SIMD8<Float>) -> SIMD8<Float> { gate * sigmoid8(gate) * up }
    }
    /// `a + b`.
    struct Add: Formula8 { @inline(__always) func callAsFunction(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> { a + b } }
    /// `a · b`.
    struct Mul: Formula8 { @inline(__always) func callAsFunction(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> { a * b } }
    /// `a / b`.
    struct Div: Formula8 { @inline(__always) func callAsFunction(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> { a / b } }
    /// `e^a`.
    struct Exp: Formula8 { @inline(__always) func callAsFunction(_ a: SIMD8<Float>, _: SIMD8<Float>) -> SIMD8<Float> { VectorMath.exp(a) } }
    /// `a` clamped to `[low, high]`.
    struct Clamp: Formula8 {
        let low: SIMD8<Float>, high: SIMD8<Float>
        @inline(__always) func callAsFunction(_ a: SIMD8<Float>, _: SIMD8<Float>) -> SIMD8<Float> { a.clamped(lowerBound: low, upperBound: high) }
    }
    /// Exact GELU, `a/2 · erfc(-a/√2)`: the same value as `a/2 · (1 + erf(a/√2))` without cancellation for negative a.
    struct GELUErf: Formula8 {
        @inline(__always) func callAsFunction(_ a: SIMD8<Float>, _: SIMD8<Float>) -> SIMD8<Float> {
            var e = SIMD8<Float>()
            for l in 0..<8 { e[l] = Foundation.erfc(a[l] * -0.707_106_781_186_547_5) }
            return 0.5 * a * e
        }
    }
    /// Tanh GELU, `a/2 · (1 + tanh(u)) = a · sigmoid(2u)`: no cancellation, no overflow.
    struct GELUTanh: Formula8 {
        @inline(__always) func callAsFunction(_ a: SIMD8<Float>, _: SIMD8<Float>) -> SIMD8<Float> {
            a * sigmoid8(1.595_769_121_605_730_8 * (a + 0.044715 * a * a * a))
        }
    }
    /// torch's softplus (beta 1, threshold 20): `a` above 20, else `log(1 + e^a)`.
    struct Softplus: Formula8 {
        @inline(__always) func callAsFunction(_ a: SIMD8<Float>, _: SIMD8<Float>) -> SIMD8<Float> {
            let e = VectorMath.exp(a)
            var r = SIMD8<Float>()
            for l in 0..<8 { r[l] = a[l] > 20 ? a[l] : Foundation.log1p(e[l]) }
            return r
        }
    }
}
