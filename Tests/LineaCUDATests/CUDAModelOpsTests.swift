import Foundation
import Linea
import LineaCUDA
import Testing

/// The model ops on the GPU (CUDAModelOps, CUBLAS) against ReferenceOps on the inputs rounded to each dtype:
/// rel-RMS <= 1e-5 for f32 (and for f32 outputs), 5e-4 for f16 and 2e-3 for bf16 outputs (one rounding of an fp32
/// result). Skipped when no GPU is present.
@Suite(.enabled(if: CUDABackend.isAvailable, "needs an NVIDIA GPU, its driver and NVRTC"))
struct CUDAModelOpsTests {
    static let dtypes: [DType] = [.float32, .bfloat16, .float16]

    /// Uploads, downloads and the tolerances for one dtype.
    struct Device {
        let ctx: CUDAContext
        let dtype: DType
        init(_ dtype: DType) throws { (ctx, self.dtype) = (try CUDABackend.shared, dtype) }

        var tolerance: Double { dtype == .float32 ? 1e-5 : dtype == .float16 ? 5e-4 : 2e-3 }
        /// rel-RMS of a `dtype` output against the reference rounded to `dtype` as well: the kernel's own rounding of
        /// its output is then not counted (one element of a tiny shape would otherwise carry a whole ulp, 2^-8).
        func rel(_ got: [Float], _ want: [Double]) -> Double {
            let rounded = (try? Tensor(shape: [want.count], scalars: want.map { Float($0) })).map { CUDAUpload.rounded($0, dtype).scalars } ?? []
            return ErrorStats(got, rounded).relativeRMS
        }
        func up(_ x: [Float], as type: DType? = nil) throws -> CUDABuffer {
            try CUDAUpload.buffer(Tensor(shape: [x.count], scalars: x), dtype: type ?? dtype, context: ctx)
        }
        func buffer(_ count: Int, bytesPerElement: Int? = nil) throws -> CUDABuffer {
            try CUDABuffer(context: ctx, byteCount: max(count, 1) * (bytesPerElement ?? dtype.byteCount))
        }
        func down(_ b: CUDABuffer, _ count: Int, as type: DType? = nil) throws -> [Float] {
            try CUDAUpload.download(b, dtype: type ?? dtype, count: count)
        }
        func ints(_ b: CUDABuffer, _ count: Int) throws -> [Int] { try b.download(Int32.self, count: count).map(Int.init) }
        /// What the device reads for `x`, in Float64.
        func seen(_ x: [Float]) -> [Double] {
            (try? CUDAUpload.rounded(Tensor(shape: [x.count], scalars: x), dtype).scalars.map(Double.init)) ?? []
        }
    }

    static func random(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        (try? Tensor.randomNormal([count], seed: seed, scale: scale).scalars) ?? []
    }

    static func rel(_ got: [Float], _ want: [Double]) -> Double { ErrorStats(got, want.map { Float($0) }).relativeRMS }

    @Test(arguments: [(1, 37, 19), (3, 8, 16), (17, 45, 33), (64, 130, 70)], dtypes)
    func matmulMatchesReference(shape: (Int, Int, Int), dtype: DType) throws {
        let (m, n, k) = shape, d = try Device(dtype)
        let x = Self.random(m * k, seed: 1), w = Self.random(n * k, seed: 2), bias = Self.random(n, seed: 3)
        for withBias in [false, true] {
            let out = try d.buffer(m * n, bytesPerElement: 4)
            try CUDAModelOps.matmul(x: d.up(x), weight: d.up(w), bias: withBias ? d.up(bias, as: .float32) : nil, out: out,
                                    m: m, n: n, k: k, dtype: dtype)
            let want = try ReferenceOps.matmul(x: d.seen(x), weight: d.seen(w), bias: withBias ? bias.map(Double.init) : nil,
                                               m: m, n: n, k: k)
            #expect(Self.rel(try d.down(out, m * n, as: .float32), want) <= 1e-5, "bias \(withBias)")
        }
    }

    /// Conversions round to nearest even as the host's `HalfPrecision` does, and widen exactly.
    @Test(arguments: dtypes, dtypes)
    func convertRoundsAsTheHost(from: DType, to: DType) throws {
        let d = try Device(from), x = Self.random(1001, seed: 17, scale: 30)
        let out = try d.buffer(x.count, bytesPerElement: to.byteCount)
        try CUDAModelOps.convert(x: d.up(x), from: from, out: out, to: to, count: x.count)
        let want = try CUDAUpload.rounded(CUDAUpload.rounded(Tensor(shape: [x.count], scalars: x), from), to).scalars
        #expect(try d.down(out, x.count, as: to) == want)
    }

    @Test(arguments: dtypes)
    func embeddingGathersRowsAndNamesBadIds(dtype: DType) throws {
        let d = try Device(dtype), (vocab, dim) = (11, 13)
        let table = Self.random(vocab * dim, seed: 4), ids = [3, 0, 10, 3, 7]
        let want = try ReferenceOps.embedding(ids: ids, table: d.seen(table), vocab: vocab, dim: dim)
        for idType in [CUDAModelOps.IDType.int32, .int64] {
            let idBuffer = idType == .int32 ? try CUDABuffer(context: d.ctx, copying: ids.map { Int32($0) })
                : try CUDABuffer(context: d.ctx, copying: ids.map { Int64($0) })
            let out = try d.buffer(ids.count * dim)
            try CUDAModelOps.embedding(ids: idBuffer, idType: idType, table: d.up(table), out: out, count: ids.count,
                                       vocab: vocab, dim: dim, dtype: dtype)
            #expect(try d.down(out, ids.count * dim) == want.map { Float($0) })
            let bad = try CUDABuffer(context: d.ctx, copying: [Int64(1), 2, 11])
            #expect(throws: LineaError.invalidArgument(argument: "ids", expected: "token ids in 0..<11", actual: "11 at index 2")) {
                try CUDAModelOps.embedding(ids: bad, idType: .int64, table: d.up(table), out: out, count: 3, vocab: vocab,
                                           dim: dim, dtype: dtype)
            }
        }
    }

    @Test(arguments: [(1, 7), (5, 64), (3, 129), (300, 257)], dtypes)
    func normsMatchReference(shape: (Int, Int), dtype: DType) throws {
        let (rows, dim) = shape, d = try Device(dtype)
        let x = Self.random(rows * dim, seed: 5, scale: 3), z = Self.random(rows * dim, seed: 6), w = Self.random(dim, seed: 7)
        let (xb, zb, wb, out) = (try d.up(x), try d.up(z), try d.up(w), try d.buffer(rows * dim))
        for zeroCentered in [false, true] {
            try CUDAModelOps.rmsNorm(x: xb, weight: wb, out: out, rows: rows, dim: dim, eps: 1e-6, zeroCentered: zeroCentered, dtype: dtype)
            let want = try ReferenceOps.rmsNorm(x: d.seen(x), weight: d.seen(w), rows: rows, dim: dim, eps: 1e-6, zeroCentered: zeroCentered)
            #expect(d.rel(try d.down(out, rows * dim), want) <= d.tolerance, "zeroCentered \(zeroCentered)")
        }
        try CUDAModelOps.rmsNormGated(x: xb, gate: zb, weight: wb, out: out, rows: rows, dim: dim, eps: 1e-6, dtype: dtype)
        let gated = try ReferenceOps.rmsNormGated(x: d.seen(x), gate: d.seen(z), weight: d.seen(w), rows: rows, dim: dim, eps: 1e-6)
        #expect(d.rel(try d.down(out, rows * dim), gated) <= d.tolerance, "gated")
        try CUDAModelOps.l2Norm(x: xb, out: out, rows: rows, dim: dim, dtype: dtype)
        #expect(d.rel(try d.down(out, rows * dim), try ReferenceOps.l2Norm(x: d.seen(x), rows: rows, dim: dim)) <= d.tolerance, "l2")
    }

    /// The last two axes swapped through shared-memory tiles, value for value: partial tiles, several batches.
    @Test(arguments: [(1, 3, 5), (2, 33, 70), (3, 64, 32), (1, 1000, 17)], dtypes)
    func transposeSwapsTheLastTwoAxes(shape: (Int, Int, Int), dtype: DType) throws {
        let d = try Device(dtype)
        let (batches, rows, cols) = shape
        let count = batches * rows * cols
        let x = Self.random(count, seed: 12)
        let (xb, out) = (try d.up(x), try d.buffer(count))
        try CUDAModelOps.transposeLastTwo(x: xb, out: out, batches: batches, rows: rows, cols: cols, dtype: dtype)
        let seen = d.seen(x)
        var want = [Double](repeating: 0, count: count)
        for b in 0..<batches { for i in 0..<rows { for j in 0..<cols { want[(b * cols + j) * rows + i] = seen[(b * rows + i) * cols + j] } } }
        #expect(try d.down(out, count).map(Double.init) == want)
    }

    @Test(arguments: [1, 33, 100_003], dtypes)
    func activationsMatchReference(count: Int, dtype: DType) throws {
        let d = try Device(dtype)
        let x = Self.random(count, seed: 8, scale: 4), y = Self.random(count, seed: 9)
        let (xb, yb, out) = (try d.up(x), try d.up(y), try d.buffer(count))
        let cases: [(String, () throws -> Void, (Double) -> Double)] = [
            ("silu", { try CUDAModelOps.silu(x: xb, out: out, count: count, dtype: dtype) }, ReferenceOps.silu),
            ("sigmoid", { try CUDAModelOps.sigmoid(x: xb, out: out, count: count, dtype: dtype) }, ReferenceOps.sigmoid),
            ("softplus", { try CUDAModelOps.softplus(x: xb, out: out, count: count, dtype: dtype) }, ReferenceOps.softplus),
            ("gelu", { try CUDAModelOps.gelu(x: xb, out: out, count: count, dtype: dtype) }, { ReferenceOps.gelu($0) }),
            ("geluTanh", { try CUDAModelOps.gelu(x: xb, out: out, count: count, approximate: .tanh, dtype: dtype) },
             { ReferenceOps.gelu($0, approximate: .tanh) }),
        ]
        for (name, run, f) in cases {
            try run()
            #expect(d.rel(try d.down(out, count), d.seen(x).map(f)) <= d.tolerance, "\(name)")
        }
        try CUDAModelOps.swiglu(gate: xb, up: yb, out: out, count: count, dtype: dtype)
        #expect(d.rel(try d.down(out, count), try ReferenceOps.swiglu(gate: d.seen(x), up: d.seen(y))) <= d.tolerance, "swiglu")
        try CUDAModelOps.add(xb, yb, out: out, count: count, dtype: dtype)
        #expect(d.rel(try d.down(out, count), try ReferenceOps.add(d.seen(x), d.seen(y))) <= d.tolerance, "add")
    }

    @Test(arguments: [(5, 3, 8, 8), (4, 2, 12, 8), (3, 5, 10, 6), (70, 4, 130, 64)], dtypes)
    func rotaryMatchesReference(shape: (Int, Int, Int, Int), dtype: DType) throws {
        let (tokens, heads, headDim, rotaryDim) = shape, d = try Device(dtype)
        let x = Self.random(tokens * heads * headDim, seed: 10)
        let positions = (0..<tokens).map { $0 == 1 ? 100_000 : ($0 * 37) % 1000 }
        let (xb, out) = (try d.up(x), try d.buffer(x.count))
        let pb = try CUDABuffer(context: d.ctx, copying: positions.map { Int32($0) })
        for layout in RotaryLayout.allCases {
            try CUDAModelOps.rotary(x: xb, positions: pb, out: out, tokens: tokens, heads: heads, headDim: headDim,
                                    rotaryDim: rotaryDim, theta: 10_000, layout: layout, dtype: dtype)
            let want = try ReferenceOps.rotary(x: d.seen(x), positions: positions, tokens: tokens, heads: heads, headDim: headDim,
                                               rotaryDim: rotaryDim, theta: 10_000, layout: layout)
            #expect(d.rel(try d.down(out, x.count), want) <= d.tolerance, "\(layout)")
        }
    }

    /// The whole sequence in one call equals one token then single-token steps with the state carried, and the
    /// reference.
    @Test(arguments: [(2, 1, 9, 5), (3, 2, 13, 6), (4, 1, 37, 3), (4, 2, 5, 40)], dtypes)
    func conv1dPrefillThenDecodeEqualsOneCall(shape: (Int, Int, Int, Int), dtype: DType) throws {
        let (width, batch, channels, length) = shape, d = try Device(dtype)
        let x = Self.random(batch * length * channels, seed: 11), w = Self.random(channels * width, seed: 12)
        let bias = Self.random(channels, seed: 13), state0 = Self.random(batch * channels * (width - 1), seed: 14)
        let (wb, bb) = (try d.up(w), try d.up(bias))
        func run(_ range: Range<Int>, _ state: CUDABuffer) throws -> [Float] {
            let part = (0..<batch).flatMap { b in x[(b * length + range.lowerBound) * channels..<(b * length + range.upperBound) * channels] }
            let out = try d.buffer(part.count)
            try CUDAModelOps.causalConv1d(x: d.up(part), weight: wb, bias: bb, state: state, out: out, batch: batch,
                                          length: range.count, channels: channels, width: width, silu: true, dtype: dtype)
            return try d.down(out, part.count)
        }
        let state = try d.up(state0), stepped = try d.up(state0)
        let whole = try run(0..<length, state)
        let want = try ReferenceOps.causalConv1d(x: d.seen(x), weight: d.seen(w), bias: d.seen(bias), state: d.seen(state0),
                                                 batch: batch, length: length, channels: channels, width: width, silu: true)
        #expect(d.rel(whole, want.y) <= d.tolerance)
        #expect(try d.down(state, state0.count) == want.state.map { Float($0) })
        let pieces = try (0..<length).map { try run($0..<$0 + 1, stepped) }
        let joined = (0..<batch).flatMap { b in (0..<length).flatMap { t in pieces[t][b * channels..<(b + 1) * channels] } }
        #expect(joined == whole)
        #expect(try d.down(stepped, state0.count) == d.down(state, state0.count))
    }

    @Test(arguments: [(1, 1), (3, 7), (4, 64), (40, 1003)], dtypes)
    func softmaxRoutingArgmaxMatchReference(shape: (Int, Int), dtype: DType) throws {
        let (rows, cols) = shape, d = try Device(dtype)
        var x = Self.random(rows * cols, seed: 15, scale: 5)
        if cols >= 7 { x[3] = x[5]; x[4] = x[5] }  // a three-way tie in row 0
        let (xb, out) = (try d.up(x), try d.buffer(x.count))
        try CUDAModelOps.softmax(x: xb, out: out, rows: rows, cols: cols, dtype: dtype)
        #expect(d.rel(try d.down(out, x.count), try ReferenceOps.softmax(x: d.seen(x), rows: rows, cols: cols)) <= d.tolerance)
        let am = try d.buffer(rows, bytesPerElement: 4)
        try CUDAModelOps.argmax(x: xb, out: am, rows: rows, cols: cols, dtype: dtype)
        #expect(try d.ints(am, rows) == ReferenceOps.argmax(x: d.seen(x), rows: rows, cols: cols))
        for k in Set([1, min(2, cols), cols]) {
            for normalize in [false, true] {
                let (wb, ib) = (try d.buffer(rows * k, bytesPerElement: 4), try d.buffer(rows * k, bytesPerElement: 4))
                try CUDAModelOps.topKRouting(logits: xb, weights: wb, indices: ib, rows: rows, experts: cols, k: k,
                                             normalize: normalize, dtype: dtype)
                let want = try ReferenceOps.topKRouting(logits: d.seen(x), rows: rows, experts: cols, k: k, normalize: normalize)
                #expect(try d.ints(ib, rows * k) == want.indices, "k \(k)")
                #expect(Self.rel(try d.down(wb, rows * k, as: .float32), want.weights) <= 1e-5, "k \(k)")
            }
        }
    }

    /// The GPU picks the token the reference picks from the same distribution and draw, over a grid of draws per
    /// setting (a draw within float rounding of a cumulative boundary may differ: at most 0.5% of them); temperature
    /// 0 is argmax; `draws` takes the CPU's draws.
    @Test(arguments: dtypes)
    func samplingMatchesReference(dtype: DType) throws {
        let d = try Device(dtype), (rows, vocab) = (6, 300)
        var logits = Self.random(rows * vocab, seed: 16, scale: 2)
        logits[10] = logits[20]  // ties
        let lb = try d.up(logits), tokens = try d.buffer(rows, bytesPerElement: 4)
        var mismatches = 0, total = 0
        for (t, k, p) in [(1.0, 0, 1.0), (0.7, 10, 1.0), (1.3, 0, 0.9), (0.5, 20, 0.6), (2.0, 50, 0.3), (1.0, 1, 1.0)] as [(Float, Int, Float)] {
            for step in 0..<64 {
                let u = (0..<rows).map { Float((Double(step) + 0.5 + Double($0) / Double(rows)) / 64) }
                try CUDAModelOps.sample(logits: lb, uniforms: d.up(u, as: .float32), tokens: tokens, rows: rows, vocab: vocab,
                                        temperature: t, topK: k, topP: p, dtype: dtype)
                let got = try d.ints(tokens, rows)
                for r in 0..<rows {
                    let row = Array(d.seen(logits)[r * vocab..<(r + 1) * vocab])
                    let dist = try ReferenceOps.samplingDistribution(logits: row, temperature: Double(t), topK: k, topP: Double(p))
                    #expect(dist[got[r]] > 0, "t \(t) k \(k) p \(p): token \(got[r]) is cut")
                    mismatches += got[r] == ReferenceOps.sample(distribution: dist, u: Double(u[r])) ? 0 : 1
                    total += 1
                }
            }
        }
        #expect(Double(mismatches) <= 0.005 * Double(total), "\(mismatches) of \(total)")
        try CUDAModelOps.sample(logits: lb, uniforms: nil, tokens: tokens, rows: rows, vocab: vocab, temperature: 0, dtype: dtype)
        #expect(try d.ints(tokens, rows) == ReferenceOps.argmax(x: d.seen(logits), rows: rows, cols: vocab))
        var a = SeededRandom(seed: 7), b = SeededRandom(seed: 7)
        #expect(CPUOps.draws(rows: 3, temperature: 1, random: &a) == (0..<3).map { _ in Float(b.nextUnit()) })
    }

    @Test func badBuffersNameTheArgument() throws {
        let d = try Device(.float32)
        let small = try d.buffer(3), big = try d.buffer(64)
        #expect(throws: LineaError.shapeMismatch(argument: "x", expected: ">= 64 bytes", actual: "12 bytes")) {
            try CUDAModelOps.silu(x: small, out: big, count: 16, dtype: .float32)
        }
        #expect(throws: LineaError.self) { try CUDAModelOps.matmul(x: big, weight: small, out: big, m: 2, n: 2, k: 4, dtype: .float32) }
        #expect(throws: LineaError.self) {
            try CUDAModelOps.rotary(x: big, positions: big, out: big, tokens: 2, heads: 1, headDim: 8, rotaryDim: 8, theta: 1e4,
                                    layout: .halfSplit, dtype: .float32)
        }
        #expect(throws: LineaError.self) { try CUDAModelOps.softmax(x: big, out: big, rows: 2, cols: 8, dtype: .float64) }
        #expect(throws: LineaError.self) {
            try CUDAModelOps.sample(logits: big, uniforms: nil, tokens: big, rows: 1, vocab: 16, temperature: 1, dtype: .float32)
        }
    }
}
