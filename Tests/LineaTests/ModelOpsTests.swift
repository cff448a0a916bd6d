import Foundation
import Linea
import Testing

/// Fills a Float32 output of `count` elements (NaN first, so an unwritten element fails) through `body`.
func output(_ count: Int, _ body: (UnsafeMutableBufferPointer<Float>) throws -> Void) rethrows -> [Float] {
    var out = [Float](repeating: .nan, count: count)
    try out.withUnsafeMutableBufferPointer { try body($0) }
    return out
}

/// An Int32 output (filled with -1 first) through `body`.
func outputInt32(_ count: Int, _ body: (UnsafeMutableBufferPointer<Int32>) throws -> Void) rethrows -> [Int32] {
    var out = [Int32](repeating: -1, count: count)
    try out.withUnsafeMutableBufferPointer { try body($0) }
    return out
}

/// Runs `body` with read-only buffers holding `arrays` (any count of inputs without nested closures).
func withBuffers<T, R>(_ arrays: [[T]], _ body: ([UnsafeBufferPointer<T>]) throws -> R) rethrows -> R {
    let buffers = arrays.map { array -> UnsafeMutableBufferPointer<T> in
        let b = UnsafeMutableBufferPointer<T>.allocate(capacity: max(array.count, 1))
        _ = b.initialize(from: array)
        return UnsafeMutableBufferPointer(rebasing: b[0..<array.count])
    }
    defer { buffers.forEach { UnsafeMutableBufferPointer(start: $0.baseAddress, count: 1).deallocate() } }
    return try body(buffers.map { UnsafeBufferPointer($0) })
}

func random(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    (try? Tensor.randomNormal([count], seed: seed, scale: scale).scalars) ?? []
}

func wide(_ x: [Float]) -> [Double] { x.map(Double.init) }

/// rel-RMS of `got` against the Float64 `want`.
func relRMS(_ got: [Float], _ want: [Double]) -> Double {
    ErrorStats(got, want.map { Float($0) }).relativeRMS
}

/// The argument a thrown `LineaError` names.
func thrownArgument(_ body: () throws -> Void) -> String? {
    do { try body() } catch let LineaError.shapeMismatch(argument, _, _) { return argument }
    catch let LineaError.invalidArgument(argument, _, _) { return argument } catch { return "\(error)" }
    return nil
}

@Suite struct ModelOpsTests {
    static let tolerance = 1e-5

    // MARK: matmul, embedding

    @Test(arguments: [(1, 37, 19), (3, 8, 16), (17, 45, 33), (20, 200, 700), (1, 300, 129)])
    func matmulMatchesReference(m: Int, n: Int, k: Int) throws {
        let x = random(m * k, seed: 1), w = random(n * k, seed: 2), bias = random(n, seed: 3)
        let wBF16 = w.map(HalfPrecision.bfloat16Bits)
        let wRounded = wBF16.map { Double(HalfPrecision.float(bfloat16Bits: $0)) }
        for withBias in [false, true] {
            let b = withBias ? wide(bias) : nil
            let got = try output(m * n) { out in
                try withBuffers([x, w, bias]) { try CPUOps.matmul(x: $0[0], weight: $0[1], bias: withBias ? $0[2] : nil, out: out, m: m, n: n, k: k) }
            }
            let want = try ReferenceOps.matmul(x: wide(x), weight: wide(w), bias: b, m: m, n: n, k: k)
            #expect(relRMS(got, want) <= Self.tolerance, "f32 bias \(withBias)")
            let gotBF16 = try output(m * n) { out in
                try withBuffers([x, bias]) { f in try withBuffers([wBF16]) { h in
                    try CPUOps.matmul(x: f[0], weightBF16: h[0], bias: withBias ? f[1] : nil, out: out, m: m, n: n, k: k)
                } }
            }
            // With AVX512-BF16, prefills (m >= 16) round x to bf16 too.
            let xBF16 = m >= 16 && CPUKernels.current.hasBF16Products ? x.map { HalfPrecision.float(bfloat16Bits: HalfPrecision.bfloat16Bits($0)) } : x
            let wantBF16 = try ReferenceOps.matmul(x: wide(xBF16), weight: wRounded, bias: b, m: m, n: n, k: k)
            #expect(relRMS(gotBF16, wantBF16) <= Self.tolerance, "bf16 bias \(withBias)")
        }
    }

    /// The decode product (m < 4: the gemv kernel, rows split over the threads) of each vector width, element by element
    /// against the reference, f32 and bf16 weights: depths with whole 4-vector steps, single vectors and a partial tail,
    /// row counts that split unevenly and are no multiple of 16.
    @Test(arguments: CPUKernels.Width.allCases)
    func decodeMatmulMatchesReferenceElementwise(_ width: CPUKernels.Width) throws {
        guard let kernels = CPUKernels(width) else { return }  // this CPU lacks AVX-512
        try CPUKernels.with(kernels) {
            for (m, n, k) in [(1, 1000, 203), (2, 515, 259), (3, 130, 640), (1, 7, 1)] {
                let x = random(m * k, seed: 5), w = random(n * k, seed: 6)
                let wBF16 = w.map(HalfPrecision.bfloat16Bits)
                let got = try output(m * n) { out in try withBuffers([x, w]) { try CPUOps.matmul(x: $0[0], weight: $0[1], out: out, m: m, n: n, k: k) } }
                let gotBF16 = try output(m * n) { out in
                    try withBuffers([x]) { f in try withBuffers([wBF16]) { try CPUOps.matmul(x: f[0], weightBF16: $0[0], out: out, m: m, n: n, k: k) } }
                }
                let want = try ReferenceOps.matmul(x: wide(x), weight: wide(w), m: m, n: n, k: k)
                let wantBF16 = try ReferenceOps.matmul(x: wide(x), weight: wBF16.map { Double(HalfPrecision.float(bfloat16Bits: $0)) },
                                                       m: m, n: n, k: k)
                let bound = 1e-5 * Double(k).squareRoot()  // a dot of k unit normals has size about sqrt(k)
                let worst = zip(got, want).map { abs(Double($0) - $1) }.max() ?? 0
                let worstBF16 = zip(gotBF16, wantBF16).map { abs(Double($0) - $1) }.max() ?? 0
                #expect(worst <= bound && worstBF16 <= bound, "\(width) m \(m) n \(n) k \(k): \(worst), bf16 \(worstBF16)")
            }
        }
    }

    /// The prefill product with bf16 weights (m >= 16) of each vector width, element by element: on the avx512 build
    /// of a CPU with AVX512-BF16, x rounded to bf16 and `vdpbf16ps` (12 x 32 blocks of out, 256-deep weight panels),
    /// else x kept in Float32. Odd depths (a zero pad), depths over one panel, columns and rows past the last whole block.
    @Test(arguments: CPUKernels.Width.allCases)
    func prefillMatmulBF16MatchesReferenceElementwise(_ width: CPUKernels.Width) throws {
        guard let kernels = CPUKernels(width) else { return }  // this CPU lacks AVX-512
        try CPUKernels.with(kernels) {
            for (m, n, k) in [(16, 33, 1), (29, 70, 257), (40, 31, 513), (17, 300, 64), (100, 96, 37)] {
                let x = random(m * k, seed: 7), w = random(n * k, seed: 8).map(HalfPrecision.bfloat16Bits)
                let got = try output(m * n) { out in
                    try withBuffers([x]) { f in try withBuffers([w]) { try CPUOps.matmul(x: f[0], weightBF16: $0[0], out: out, m: m, n: n, k: k) } }
                }
                let xUsed = kernels.hasBF16Products ? x.map { HalfPrecision.float(bfloat16Bits: HalfPrecision.bfloat16Bits($0)) } : x
                let want = try ReferenceOps.matmul(x: wide(xUsed), weight: w.map { Double(HalfPrecision.float(bfloat16Bits: $0)) },
                                                   m: m, n: n, k: k)
                let worst = zip(got, want).map { abs(Double($0) - $1) }.max() ?? 0
                #expect(worst <= 1e-5 * Double(k).squareRoot(), "\(width) bf16 products \(kernels.hasBF16Products) m \(m) n \(n) k \(k): \(worst)")
            }
        }
    }

    @Test func embeddingGathersRowsAndNamesBadIds() throws {
        let (vocab, dim) = (11, 13)
        let table = random(vocab * dim, seed: 4), tableBF16 = table.map(HalfPrecision.bfloat16Bits)
        let ids = [3, 0, 10, 3, 7]
        let want = try ReferenceOps.embedding(ids: ids, table: wide(table), vocab: vocab, dim: dim)
        let wantBF16 = try ReferenceOps.embedding(ids: ids, table: tableBF16.map { Double(HalfPrecision.float(bfloat16Bits: $0)) },
                                                  vocab: vocab, dim: dim)
        let got32 = try output(ids.count * dim) { out in try withBuffers([table]) { t in try withBuffers([ids.map { Int32($0) }]) {
            try CPUOps.embedding(ids: $0[0], table: t[0], out: out, vocab: vocab, dim: dim) } } }
        let got64 = try output(ids.count * dim) { out in try withBuffers([tableBF16]) { t in try withBuffers([ids.map { Int64($0) }]) {
            try CPUOps.embedding(ids: $0[0], tableBF16: t[0], out: out, vocab: vocab, dim: dim) } } }
        #expect(got32 == want.map { Float($0) })
        #expect(got64 == wantBF16.map { Float($0) })
        for bad in [-1, 11] {
            var out = [Float](repeating: 0, count: 3 * dim)
            #expect(throws: LineaError.invalidArgument(argument: "ids", expected: "token ids in 0..<11", actual: "\(bad) at index 2")) {
                try withBuffers([table]) { t in try withBuffers([[Int64(1), 2, Int64(bad)]]) { ids in
                    try out.withUnsafeMutableBufferPointer { try CPUOps.embedding(ids: ids[0], table: t[0], out: $0, vocab: vocab, dim: dim) } } }
            }
        }
        #expect(throws: LineaError.self) { try ReferenceOps.embedding(ids: [11], table: wide(table), vocab: vocab, dim: dim) }
    }

    // MARK: norms

    @Test(arguments: [(1, 7), (5, 64), (3, 129), (300, 257)])
    func normsMatchReference(rows: Int, dim: Int) throws {
        let x = random(rows * dim, seed: 5, scale: 3), z = random(rows * dim, seed: 6), w = random(dim, seed: 7)
        let eps: Float = 1e-6
        for zeroCentered in [false, true] {
            let got = try output(rows * dim) { out in try withBuffers([x, w]) {
                try CPUOps.rmsNorm(x: $0[0], weight: $0[1], out: out, rows: rows, dim: dim, eps: eps, zeroCentered: zeroCentered) } }
            let want = try ReferenceOps.rmsNorm(x: wide(x), weight: wide(w), rows: rows, dim: dim, eps: Double(eps), zeroCentered: zeroCentered)
            #expect(relRMS(got, want) <= Self.tolerance, "zeroCentered \(zeroCentered)")
        }
        let gated = try output(rows * dim) { out in try withBuffers([x, z, w]) {
            try CPUOps.rmsNormGated(x: $0[0], gate: $0[1], weight: $0[2], out: out, rows: rows, dim: dim, eps: eps) } }
        let wantGated = try ReferenceOps.rmsNormGated(x: wide(x), gate: wide(z), weight: wide(w), rows: rows, dim: dim, eps: Double(eps))
        #expect(relRMS(gated, wantGated) <= Self.tolerance)
        let l2 = try output(rows * dim) { out in try withBuffers([x]) { try CPUOps.l2Norm(x: $0[0], out: out, rows: rows, dim: dim) } }
        #expect(relRMS(l2, try ReferenceOps.l2Norm(x: wide(x), rows: rows, dim: dim)) <= Self.tolerance)
    }

    // MARK: activations

    @Test(arguments: [1, 7, 8, 33, 100_003])
    func activationsMatchReference(count: Int) throws {
        let x = random(count, seed: 8, scale: 4), y = random(count, seed: 9)
        func unary(_ op: (UnsafeBufferPointer<Float>, UnsafeMutableBufferPointer<Float>) throws -> Void) throws -> [Float] {
            try output(count) { out in try withBuffers([x]) { try op($0[0], out) } }
        }
        let cases: [(String, [Float], (Double) -> Double)] = [
            ("silu", try unary { try CPUOps.silu(x: $0, out: $1) }, ReferenceOps.silu),
            ("sigmoid", try unary { try CPUOps.sigmoid(x: $0, out: $1) }, ReferenceOps.sigmoid),
            ("softplus", try unary { try CPUOps.softplus(x: $0, out: $1) }, ReferenceOps.softplus),
            ("gelu", try unary { try CPUOps.gelu(x: $0, out: $1) }, { ReferenceOps.gelu($0) }),
            ("geluTanh", try unary { try CPUOps.gelu(x: $0, out: $1, approximate: .tanh) }, { ReferenceOps.gelu($0, approximate: .tanh) }),
        ]
        for (name, got, f) in cases { #expect(relRMS(got, wide(x).map(f)) <= Self.tolerance, "\(name)") }
        let swiglu = try output(count) { out in try withBuffers([x, y]) { try CPUOps.swiglu(gate: $0[0], up: $0[1], out: out) } }
        #expect(relRMS(swiglu, try ReferenceOps.swiglu(gate: wide(x), up: wide(y))) <= Self.tolerance)
        let sum = try output(count) { out in try withBuffers([x, y]) { try CPUOps.add($0[0], $0[1], out: out) } }
        #expect(relRMS(sum, try ReferenceOps.add(wide(x), wide(y))) <= Self.tolerance)
    }

    /// Element by element on a grid over [-30, 30] (rel-RMS hides a wrong formula on a narrow range, e.g. softplus's
    /// threshold): relative error <= 1e-6, times 1 + x² for GELU, whose tail e^(-x²/2) turns the argument's rounding
    /// (relative 6e-8) into a relative error growing with x² in any Float32 form.
    @Test func activationsAreAccurateElementwise() throws {
        let x = (0...600).map { Float($0) * 0.1 - 30 }
        let cases: [(String, (UnsafeBufferPointer<Float>, UnsafeMutableBufferPointer<Float>) throws -> Void, (Double) -> Double, Bool)] = [
            ("silu", { try CPUOps.silu(x: $0, out: $1) }, ReferenceOps.silu, false),
            ("sigmoid", { try CPUOps.sigmoid(x: $0, out: $1) }, ReferenceOps.sigmoid, false),
            ("softplus", { try CPUOps.softplus(x: $0, out: $1) }, ReferenceOps.softplus, false),
            ("gelu", { try CPUOps.gelu(x: $0, out: $1) }, { ReferenceOps.gelu($0) }, true),
            ("geluTanh", { try CPUOps.gelu(x: $0, out: $1, approximate: .tanh) }, { ReferenceOps.gelu($0, approximate: .tanh) }, true),
        ]
        for (name, op, f, gaussianTail) in cases {
            let got = try output(x.count) { out in try withBuffers([x]) { try op($0[0], out) } }
            for (i, v) in x.enumerated() {
                let want = f(Double(v))
                let tolerance = 1e-6 * (gaussianTail ? 1 + Double(v * v) : 1)
                #expect(abs(Double(got[i]) - want) <= tolerance * abs(want) + 1e-37, "\(name)(\(v)) = \(got[i]), want \(want)")
            }
        }
    }

    // MARK: rotary

    @Test(arguments: [(5, 3, 8, 8), (4, 2, 12, 8), (3, 5, 10, 6), (70, 4, 130, 64)])
    func rotaryMatchesReference(tokens: Int, heads: Int, headDim: Int, rotaryDim: Int) throws {
        let x = random(tokens * heads * headDim, seed: 10)
        let positions = (0..<tokens).map { $0 == 1 ? 100_000 : ($0 * 37) % 1000 }
        for layout in RotaryLayout.allCases {
            let got = try output(x.count) { out in try withBuffers([x]) { xb in try withBuffers([positions]) {
                try CPUOps.rotary(x: xb[0], positions: $0[0], out: out, tokens: tokens, heads: heads, headDim: headDim,
                                  rotaryDim: rotaryDim, theta: 10_000, layout: layout) } } }
            let want = try ReferenceOps.rotary(x: wide(x), positions: positions, tokens: tokens, heads: heads, headDim: headDim,
                                               rotaryDim: rotaryDim, theta: 10_000, layout: layout)
            #expect(relRMS(got, want) <= Self.tolerance, "\(layout)")
        }
    }

    // MARK: causal conv1d

    /// One call over the whole sequence equals a prefill of part of it followed by single-token decode steps, with
    /// the state carried; and every form matches the reference.
    @Test(arguments: [(2, 1, 9, 5), (3, 2, 13, 6), (4, 1, 37, 3), (4, 2, 5, 40)])
    func conv1dPrefillThenDecodeEqualsOneCall(width: Int, batch: Int, channels: Int, length: Int) throws {
        let x = random(batch * length * channels, seed: 11), w = random(channels * width, seed: 12)
        let bias = random(channels, seed: 13), state0 = random(batch * channels * (width - 1), seed: 14)
        for (withBias, silu) in [(false, false), (true, true), (true, false)] {
            // CPU over x[:, range] with the state carried.
            func run(_ range: Range<Int>, state: inout [Float]) throws -> [Float] {
                let part = (0..<batch).flatMap { b in x[(b * length + range.lowerBound) * channels..<(b * length + range.upperBound) * channels] }
                return try output(part.count) { out in try withBuffers([part, w, bias]) { f in try state.withUnsafeMutableBufferPointer { s in
                    try CPUOps.causalConv1d(x: f[0], weight: f[1], bias: withBias ? f[2] : nil, state: s, out: out, batch: batch,
                                            length: range.count, channels: channels, width: width, silu: silu) } } }
            }
            let want = try ReferenceOps.causalConv1d(x: wide(x), weight: wide(w), bias: withBias ? wide(bias) : nil, state: wide(state0),
                                                     batch: batch, length: length, channels: channels, width: width, silu: silu)
            var state = state0
            let whole = try run(0..<length, state: &state)
            #expect(relRMS(whole, want.y) <= Self.tolerance)
            #expect(state == want.state.map { Float($0) })
            // Prefill 1 token (shorter than the state), then decode one at a time.
            var stepped = state0
            var pieces = [try run(0..<1, state: &stepped)]
            for t in 1..<length { pieces.append(try run(t..<t + 1, state: &stepped)) }
            let joined = (0..<batch).flatMap { b in (0..<length).flatMap { t in pieces[t][b * channels..<(b + 1) * channels] } }
            #expect(joined == whole, "bias \(withBias) silu \(silu)")
            #expect(stepped == state)
        }
        // No state: zeros in front, nothing kept.
        let noState = try output(x.count) { out in try withBuffers([x, w]) {
            try CPUOps.causalConv1d(x: $0[0], weight: $0[1], state: nil, out: out, batch: batch, length: length, channels: channels,
                                    width: width, silu: false) } }
        let wantNoState = try ReferenceOps.causalConv1d(x: wide(x), weight: wide(w), bias: nil, state: nil, batch: batch,
                                                        length: length, channels: channels, width: width, silu: false)
        #expect(relRMS(noState, wantNoState.y) <= Self.tolerance)
    }

    // MARK: softmax, routing, argmax, sampling

    @Test(arguments: [(1, 1), (3, 7), (4, 64), (40, 1003)])
    func softmaxRoutingArgmaxMatchReference(rows: Int, cols: Int) throws {
        let x = random(rows * cols, seed: 15, scale: 5)
        let got = try output(x.count) { out in try withBuffers([x]) { try CPUOps.softmax(x: $0[0], out: out, rows: rows, cols: cols) } }
        #expect(relRMS(got, try ReferenceOps.softmax(x: wide(x), rows: rows, cols: cols)) <= Self.tolerance)
        let am = try outputInt32(rows) { out in try withBuffers([x]) { try CPUOps.argmax(x: $0[0], out: out, rows: rows, cols: cols) } }
        #expect(am.map(Int.init) == (try ReferenceOps.argmax(x: wide(x), rows: rows, cols: cols)))
        for k in Set([1, min(2, cols), cols]) {
            for normalize in [false, true] {
                var indices = [Int32](repeating: -1, count: rows * k)
                let weights = try output(rows * k) { out in try withBuffers([x]) { l in try indices.withUnsafeMutableBufferPointer {
                    try CPUOps.topKRouting(logits: l[0], weights: out, indices: $0, rows: rows, experts: cols, k: k, normalize: normalize) } } }
                let want = try ReferenceOps.topKRouting(logits: wide(x), rows: rows, experts: cols, k: k, normalize: normalize)
                #expect(indices.map(Int.init) == want.indices)
                #expect(relRMS(weights, want.weights) <= Self.tolerance)
            }
        }
    }

    @Test func routingAndArgmaxBreakTiesToTheLowerIndex() throws {
        let logits: [Double] = [1, 3, 0, 3, 3, 2]
        let routed = try ReferenceOps.topKRouting(logits: logits, rows: 1, experts: 6, k: 2, normalize: true)
        #expect(routed.indices == [1, 3])
        #expect(try ReferenceOps.argmax(x: logits, rows: 1, cols: 6) == [1])
        var indices = [Int32](repeating: 0, count: 2)
        _ = try output(2) { w in try withBuffers([logits.map { Float($0) }]) { l in try indices.withUnsafeMutableBufferPointer {
            try CPUOps.topKRouting(logits: l[0], weights: w, indices: $0, rows: 1, experts: 6, k: 2, normalize: true) } } }
        #expect(indices == [1, 3])
    }

    /// Hand-checked truncation: top-k keeps ties with the k-th logit (Hugging Face), top-p keeps tokens while the
    /// mass before them is < p, temperature 0 is argmax.
    @Test func samplingTruncationIsExact() throws {
        let logits: [Double] = [1, 3, 3, 2, 0]
        // The tokens kept, the same on the CPU as in the reference.
        func kept(_ t: Double, _ k: Int, _ p: Double) throws -> [Int] {
            let want = try ReferenceOps.samplingDistribution(logits: logits, temperature: t, topK: k, topP: p)
            let got = try output(logits.count) { out in try withBuffers([logits.map { Float($0) }]) {
                try CPUOps.samplingProbabilities(logits: $0[0], probabilities: out, temperature: Float(t), topK: k, topP: Float(p)) } }
            #expect(got.map { $0 > 0 } == want.map { $0 > 0 }, "t \(t) k \(k) p \(p)")
            return want.indices.filter { want[$0] > 0 }
        }
        #expect(try kept(1, 1, 1) == [1, 2])  // both 3s tie with the first
        #expect(try kept(1, 3, 1) == [1, 2, 3])
        #expect(try kept(0, 0, 1) == [1])
        // softmax(1,3,3,2,0) = 0.0530, 0.3917, 0.3917, 0.1441, 0.0195; the mass before each in descending order:
        // 0 (token 1), 0.3917 (token 2), 0.7834 (token 3), 0.9275 (token 0), 0.9805 (token 4).
        #expect(try kept(1, 0, 0.39) == [1])
        #expect(try kept(1, 0, 0.40) == [1, 2])
        #expect(try kept(1, 0, 0.78) == [1, 2])
        #expect(try kept(1, 0, 0.79) == [1, 2, 3])
        #expect(try kept(1, 0, 0.93) == [0, 1, 2, 3])
        #expect(try kept(1, 0, 0.99) == [0, 1, 2, 3, 4])
        // top-k, then top-p on the renormalized pair (0.5 each): the mass before token 2 is 0.5.
        #expect(try kept(1, 2, 0.5) == [1])
        #expect(try kept(1, 2, 0.51) == [1, 2])
        // CPU: the same kept sets and probabilities on random logits, across settings.
        for seed: UInt64 in 0..<40 {
            let l = random(50, seed: 100 + seed, scale: 2)
            for (t, k, p) in [(1.0, 0, 1.0), (0.7, 10, 1.0), (1.3, 0, 0.9), (0.5, 20, 0.6), (0.0, 5, 0.5), (2.0, 50, 0.3)] {
                let got = try output(50) { out in try withBuffers([l]) {
                    try CPUOps.samplingProbabilities(logits: $0[0], probabilities: out, temperature: Float(t), topK: k, topP: Float(p)) } }
                let want = try ReferenceOps.samplingDistribution(logits: wide(l), temperature: t, topK: k, topP: p)
                #expect(got.map { $0 > 0 } == want.map { $0 > 0 }, "seed \(seed) t \(t) k \(k) p \(p)")
                #expect(relRMS(got, want) <= Self.tolerance)
            }
        }
    }

    /// Token frequencies over many seeds match the truncated, renormalized distribution; a seed gives the token the
    /// reference picks with the same draw; temperature 0 is argmax.
    @Test func samplingFrequenciesMatchTheDistribution() throws {
        let l: [Float] = [0.3, 2.1, -1, 1.7, 0.9, 1.75, -3, 0.2, 1.2, 2.0, 0.0]
        let (t, k, p): (Float, Int, Float) = (0.8, 7, 0.9)
        let want = try ReferenceOps.samplingDistribution(logits: wide(l), temperature: Double(t), topK: k, topP: Double(p))
        let draws = 20_000
        var counts = [Int](repeating: 0, count: l.count)
        try withBuffers([l]) { logits in
            for seed in 0..<draws {
                var rng = SeededRandom(seed: UInt64(seed))
                let token = try outputInt32(1) {
                    try CPUOps.sample(logits: logits[0], tokens: $0, rows: 1, vocab: l.count, temperature: t, topK: k, topP: p, random: &rng) }[0]
                counts[Int(token)] += 1
                if seed < 500 {
                    var again = SeededRandom(seed: UInt64(seed))
                    #expect(Int(token) == ReferenceOps.sample(distribution: want, u: again.nextUnit()))
                }
            }
            var rng = SeededRandom(seed: 1)
            let greedy = try outputInt32(1) {
                try CPUOps.sample(logits: logits[0], tokens: $0, rows: 1, vocab: l.count, temperature: 0, random: &rng) }[0]
            #expect(greedy == 1)
        }
        for (i, q) in want.enumerated() {
            let f = Double(counts[i]) / Double(draws)
            #expect(abs(f - q) <= 5 * (q * (1 - q) / Double(draws)).squareRoot() + 1e-12, "token \(i): \(f) vs \(q)")
        }
    }

    // MARK: errors

    @Test func badSizesNameTheArgument() throws {
        let a = [Float](repeating: 1, count: 12)
        var o = [Float](repeating: 0, count: 12)
        withBuffers([a, [Float](repeating: 1, count: 5)]) { b in o.withUnsafeMutableBufferPointer { out in
            #expect(thrownArgument { try CPUOps.matmul(x: b[0], weight: b[1], out: out, m: 3, n: 4, k: 4) } == "weight")
            #expect(thrownArgument { try CPUOps.rmsNorm(x: b[0], weight: b[1], out: out, rows: 3, dim: 4, eps: 1e-6) } == "weight")
            #expect(thrownArgument { try CPUOps.swiglu(gate: b[0], up: b[1], out: out) } == "up")
            #expect(thrownArgument { try CPUOps.softmax(x: b[0], out: out, rows: 2, cols: 4) } == "x")
            #expect(thrownArgument { try CPUOps.causalConv1d(x: b[0], weight: b[0], state: nil, out: out, batch: 1, length: 3,
                                                             channels: 4, width: 5, silu: false) } == "width")
            #expect(thrownArgument { try CPUOps.samplingProbabilities(logits: b[0], probabilities: out, temperature: 1, topK: 0, topP: 0) } == "topP")
            #expect(thrownArgument { try CPUOps.topKRouting(logits: b[0], weights: out, indices: .init(start: nil, count: 0), rows: 3,
                                                            experts: 4, k: 5, normalize: true) } == "k")
            withBuffers([[0, 1, 2]]) { pos in
                #expect(thrownArgument { try CPUOps.rotary(x: b[0], positions: pos[0], out: out, tokens: 3, heads: 1, headDim: 4,
                                                           rotaryDim: 3, theta: 1e4, layout: .halfSplit) } == "rotaryDim")
            }
        } }
        #expect(thrownArgument { _ = try ReferenceOps.matmul(x: [1, 2], weight: [1, 2], m: 1, n: 1, k: 3) } == "x")
    }

    /// Empty sizes return without touching memory; k = 0 gives the bias (or zeros).
    @Test func emptySizesAreFine() throws {
        let none = UnsafeBufferPointer<Float>(start: nil, count: 0)
        let noOut = UnsafeMutableBufferPointer<Float>(start: nil, count: 0)
        let bias: [Float] = [1, 2, 3]
        let got = try output(6) { out in try withBuffers([bias]) {
            try CPUOps.matmul(x: none, weight: none, bias: $0[0], out: out, m: 2, n: 3, k: 0) } }
        #expect(got == [1, 2, 3, 1, 2, 3])
        try CPUOps.matmul(x: none, weightBF16: .init(start: nil, count: 0), out: noOut, m: 0, n: 3, k: 0)
        try CPUOps.rmsNorm(x: none, weight: none, out: noOut, rows: 4, dim: 0, eps: 1e-6)
        try CPUOps.l2Norm(x: none, out: noOut, rows: 0, dim: 8)
        try CPUOps.softmax(x: none, out: noOut, rows: 3, cols: 0)
        try CPUOps.silu(x: none, out: noOut)
        try CPUOps.embedding(ids: UnsafeBufferPointer<Int32>(start: nil, count: 0), tableBF16: .init(start: nil, count: 0),
                             out: noOut, vocab: 0, dim: 5)
        try CPUOps.causalConv1d(x: none, weight: none, state: nil, out: noOut, batch: 2, length: 0, channels: 0, width: 3, silu: true)
        #expect(thrownArgument { var r = SeededRandom(seed: 1)
            try CPUOps.sample(logits: none, tokens: .init(start: nil, count: 0), rows: 0, vocab: 0, temperature: 1, random: &r) } == "vocab")
    }

    // MARK: the reference against torch

    /// `ReferenceOps` against numbers computed once with torch (float64) by scripts/model_ops_torch.py, which
    /// follows transformers' Llama/Qwen3-Next norms and rotary, fla's l2norm, causal-conv1d and HF's warpers.
    @Test func referenceMatchesTorch() throws {
        let x: [Double] = [0.5, -1.25, 2.0, 0.75, -0.3, 1.1, 3.0, 0.2, -0.7, -2.2, 0.9, 0.05]
        let w: [Double] = [0.9, 1.1, -0.4, 0.25, 1.5, -0.8]
        let z: [Double] = [1.0, -0.5, 0.3, 2.0, -1.5, 0.8, -0.2, 0.6, 1.4, -0.9, 0.1, -2.5]
        func close(_ got: [Double], _ want: [Double], _ what: String) {
            #expect(got.count == want.count && zip(got, want).allSatisfy { abs($0 - $1) <= 1e-12 * max(1, abs($1)) }, "\(what): \(got)")
        }
        close(try ReferenceOps.rmsNorm(x: x, weight: w, rows: 2, dim: 6, eps: 1e-6), TorchValues.rmsNorm, "rmsNorm")
        close(try ReferenceOps.rmsNorm(x: x, weight: w, rows: 2, dim: 6, eps: 1e-6, zeroCentered: true), TorchValues.rmsNormZeroCentered, "zero-centered")
        close(try ReferenceOps.rmsNormGated(x: x, gate: z, weight: w, rows: 2, dim: 6, eps: 1e-6), TorchValues.rmsNormGated, "gated")
        close(try ReferenceOps.l2Norm(x: x, rows: 2, dim: 6, eps: 1e-6), TorchValues.l2Norm, "l2Norm")
        let a = TorchValues.activationInput
        close(a.map { ReferenceOps.gelu($0) }, TorchValues.gelu, "gelu")
        close(a.map { ReferenceOps.gelu($0, approximate: .tanh) }, TorchValues.geluTanh, "gelu tanh")
        close(a.map(ReferenceOps.softplus), TorchValues.softplus, "softplus")
        close(a.map(ReferenceOps.silu), TorchValues.silu, "silu")
        for (layout, want) in [(RotaryLayout.halfSplit, TorchValues.rotaryHalfSplit), (.interleaved, TorchValues.rotaryInterleaved)] {
            close(try ReferenceOps.rotary(x: x, positions: [3, 10], tokens: 2, heads: 1, headDim: 6, rotaryDim: 4, theta: 100,
                                          layout: layout), want, "rotary \(layout)")
        }
        let cw: [Double] = [0.2, -0.5, 1.0, 0.3, 0.3, 0.3, -1.0, 0.5, 0.25, 0.1, 0.0, -0.2, 0.7, 0.7, -0.7, 1.2, -0.1, 0.4]
        let cb: [Double] = [0.1, -0.1, 0.0, 0.2, 0.05, -0.3]
        close(try ReferenceOps.causalConv1d(x: x, weight: cw, bias: cb, state: nil, batch: 1, length: 2, channels: 6, width: 3,
                                            silu: true).y, TorchValues.conv1dSiLU, "conv1d")
        close(try ReferenceOps.softmax(x: x, rows: 2, cols: 6), TorchValues.softmax, "softmax")
        let routed = try ReferenceOps.topKRouting(logits: x, rows: 2, experts: 6, k: 2, normalize: true)
        close(routed.weights, TorchValues.routingWeights, "routing weights")
        #expect(routed.indices.map(Double.init) == TorchValues.routingIndices)
        close(try ReferenceOps.samplingDistribution(logits: Array(x[6...]), temperature: 1.5, topK: 4, topP: 0.85),
              TorchValues.samplingDistribution, "sampling distribution")
    }
}

/// Printed by `python3 scripts/model_ops_torch.py` (torch 2.15, float64).
enum TorchValues {
    static let rmsNorm: [Double] = [0.397876947268747, -1.2157351166545, -0.707336795144438, 0.165782061361978, -0.397876947268747, -0.778070474658882, 1.69733535928279, 0.138301399645264, 0.176019963184882, -0.345753499113161, 0.848667679641394, -0.0251457090264117]
    static let rmsNormZeroCentered: [Double] = [0.83996244423402, -2.32094885906769, 1.06100519271666, 0.828910306809889, -0.663128245447911, 0.194517618664721, 3.58326353626366, 0.264029944777323, -0.264029944777323, -1.7287674955658, 1.41444613273566, 0.00628642725660292]
    static let rmsNormGated: [Double] = [0.290871355539935, 0.229494724511566, -0.121897298650879, 0.29204071045756, 0.108874365773963, -0.429479017626782, -0.152816534781704, 0.0535771025044913, 0.197680529944222, 0.0899461987990239, 0.0445532868897776, 0.00476876930521837]
    static let l2Norm: [Double] = [0.180480707163408, -0.45120176790852, 0.721922828653632, 0.270721060745112, -0.108288424298045, 0.397057555759498, 0.769927080968739, 0.0513284720645826, -0.179649652226039, -0.564613192710408, 0.230978124290622, 0.0128321180161456]
    static let activationInput: [Double] = [-30, -3, -0.5, 0, 0.7, 2.5, 19, 25]
    static let gelu: [Double] = [-0, -0.00404969409489031, -0.154268769362993, 0, 0.530625443443849, 2.48447583668556, 19, 25]
    static let geluTanh: [Double] = [-0, -0.00363739208177299, -0.154285990174856, 0, 0.530570134705117, 2.48491573391, 19, 25]
    static let softplus: [Double] = [9.35762296883974e-14, 0.0485873515737421, 0.474076984180107, 0.693147180559945, 1.10318604888546, 2.57888973429255, 19.0000000056028, 25]
    static let silu: [Double] = [-2.80728689065179e-12, -0.1422776195327, -0.188770334399073, 0, 0.467731440517716, 2.31035454994689, 18.9999998935469, 24.9999999996528]
    static let rotaryHalfSplit: [Double] = [-0.777236264419957, -1.41581076640301, -1.90942498917096, 0.34710210851753, -0.3, 1.1, -2.89802936485192, 1.959296627751, -1.04471326231459, -1.02037087594833, 0.9, 0.05]
    static let rotaryInterleaved: [Double] = [-0.318596238225389, 1.30805062478049, 1.68903282325521, 1.30754278016688, -0.3, 1.1, -2.40841036505148, -1.7998776384834, 1.47302455246967, -1.77769476227544, 0.9, 0.05]
    static let conv1dSiLU: [Double] = [0.387393783735477, -0.182130910352373, 0.311229665600927, 0.0256248698242105, 0.146805435868788, 0.0748920123221501, 2.69415824593457, -0.165051236591218, 0.573619752211741, 0.419042214788044, -0.246613248839556, -0.157449747274253]
    static let softmax: [Double] = [0.108566597230863, 0.0188660457278032, 0.486561732213352, 0.139402270247729, 0.0487821166714751, 0.197821237908779, 0.789985332107706, 0.0480390575184732, 0.0195312232695447, 0.00435800497602826, 0.0967387821421554, 0.041347599986092]
    static let routingWeights: [Double] = [0.710949502625004, 0.289050497374996, 0.890903178804387, 0.109096821195613]
    static let routingIndices: [Double] = [2, 5, 0, 4]
    static let samplingDistribution: [Double] = [0.713656051223467, 0.110358533246271, 0, 0, 0.175985415530262, 0]
}
