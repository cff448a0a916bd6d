import Foundation
import Linea
import Testing

/// The model ops on device tensors (`Ops`, CPU backend) against the Float64 `ReferenceOps`, in f32 and bf16 (the
/// reference then reads the bf16-rounded inputs, and the output is rounded once more).
@Suite struct OpsDispatchTests {
    static let dtypes: [DType] = [.float32, .bfloat16]

    static func tolerance(_ dtype: DType) -> Double { dtype == .float32 ? 1e-5 : 2e-3 }

    /// A seeded tensor on the CPU as `dtype`, and the Float64 values the op reads (rounded through `dtype`).
    static func input(_ shape: [Int], seed: UInt64, _ dtype: DType, scale: Float = 1) throws -> (DeviceTensor, [Double]) {
        let t = try DeviceTensor(Tensor.randomNormal(shape, seed: seed, scale: scale), dtype: dtype)
        return (t, try t.host().scalars.map(Double.init))
    }

    static func check(_ got: DeviceTensor, _ want: [Double], _ dtype: DType, _ what: String) throws {
        let stats = ErrorStats(try got.host().scalars, want.map { Float($0) })
        #expect(stats.relativeRMS <= tolerance(dtype), "\(what) \(dtype): \(stats)")
    }

    @Test func profileTimesEachDispatchedOpByNameAndShape() throws {
        let x = try DeviceTensor(Tensor.randomNormal([3, 7, 13], seed: 5))
        // A scope of this thread's own: tests running beside it dispatch ops, and a bench in the same process sets
        // the process-wide switch.
        let (y, entries) = try Profile.recording {
            let y = try Ops.silu(x)
            _ = try Ops.add(y, x)
            return y
        }
        _ = try Ops.silu(y)  // outside the scope: not counted
        #expect(entries["silu f32[3, 7, 13] f32[3, 7, 13]"]?.calls == 1)
        #expect(entries["add f32[3, 7, 13] f32[3, 7, 13]"]?.calls == 1)
        #expect((entries["allocate"]?.calls ?? 0) >= 2)
        #expect(entries.count == 3)
        let table = Profile.format(entries, wall: 1)
        #expect(table.contains("silu f32[3, 7, 13]") && table.contains("outside them"))
    }

    @Test(arguments: dtypes)
    func matmulAndEmbedding(_ dtype: DType) throws {
        let (m, n, k) = (5, 33, 47)
        let (x, xs) = try Self.input([m, k], seed: 1, dtype), (w, ws) = try Self.input([n, k], seed: 2, dtype)
        let (b, bs) = try Self.input([n], seed: 3, dtype)
        try Self.check(try Ops.matmul(x, weight: w, bias: b), try ReferenceOps.matmul(x: xs, weight: ws, bias: bs, m: m, n: n, k: k), dtype, "matmul")
        // f32 activations against bf16 weights (the weights stay bf16).
        let (x32, xs32) = try Self.input([2, 3, k], seed: 4, .float32)
        let got = try Ops.matmul(x32, weight: w)
        #expect(got.shape == [2, 3, n] && got.dtype == .float32)
        try Self.check(got, try ReferenceOps.matmul(x: xs32, weight: ws, m: 6, n: n, k: k), .float32, "matmul f32 x \(dtype) w")
        let ids = try DeviceTensor(integers: [3, 0, 32, 7], shape: [2, 2])
        try Self.check(try Ops.embedding(ids: ids, table: w), try ReferenceOps.embedding(ids: [3, 0, 32, 7], table: ws, vocab: n, dim: k), dtype, "embedding")
        #expect(throws: LineaError.self) { try Ops.embedding(ids: DeviceTensor(integers: [33], shape: [1]), table: w) }
        #expect(throws: LineaError.self) { try Ops.embedding(ids: x, table: w) }
        #expect(throws: LineaError.shapeMismatch(argument: "x", expected: "[..., 33] (K of weight)", actual: "[5, 47]")) { try Ops.matmul(x, weight: w.narrowed(axis: 1, 0..<33)) }
    }

    @Test(arguments: dtypes)
    func normsAndActivations(_ dtype: DType) throws {
        let (rows, d) = (6, 37)
        let (x, xs) = try Self.input([2, 3, d], seed: 5, dtype, scale: 3), (z, zs) = try Self.input([2, 3, d], seed: 6, dtype)
        let (w, ws) = try Self.input([d], seed: 7, dtype)
        for zeroCentered in [false, true] {
            try Self.check(try Ops.rmsNorm(x, weight: w, eps: 1e-6, zeroCentered: zeroCentered),
                           try ReferenceOps.rmsNorm(x: xs, weight: ws, rows: rows, dim: d, eps: 1e-6, zeroCentered: zeroCentered), dtype, "rmsNorm")
        }
        try Self.check(try Ops.rmsNormGated(x, gate: z, weight: w, eps: 1e-5),
                       try ReferenceOps.rmsNormGated(x: xs, gate: zs, weight: ws, rows: rows, dim: d, eps: 1e-5), dtype, "rmsNormGated")
        try Self.check(try Ops.l2Norm(x), try ReferenceOps.l2Norm(x: xs, rows: rows, dim: d), dtype, "l2Norm")
        try Self.check(try Ops.silu(x), xs.map(ReferenceOps.silu), dtype, "silu")
        try Self.check(try Ops.sigmoid(x), xs.map(ReferenceOps.sigmoid), dtype, "sigmoid")
        try Self.check(try Ops.softplus(x), xs.map(ReferenceOps.softplus), dtype, "softplus")
        for approximate in GELUApproximation.allCases {
            try Self.check(try Ops.gelu(x, approximate: approximate), xs.map { ReferenceOps.gelu($0, approximate: approximate) }, dtype, "gelu")
        }
        try Self.check(try Ops.softmax(x), try ReferenceOps.softmax(x: xs, rows: rows, cols: d), dtype, "softmax")
        try Self.check(try Ops.swiglu(gate: x, up: z), try ReferenceOps.swiglu(gate: xs, up: zs), dtype, "swiglu")
        // Each row of g is [gate | up], 20 wide each; an odd last axis has no halves.
        let (g, gs) = try Self.input([2, 3, 40], seed: 11, dtype, scale: 3)
        var halves: [Double] = []
        for r in 0..<rows {
            let row = Array(gs[(r * 40)..<((r + 1) * 40)])
            halves += try ReferenceOps.swiglu(gate: Array(row[..<20]), up: Array(row[20...]))
        }
        try Self.check(try Ops.swiglu(halves: g), halves, dtype, "swiglu halves")
        #expect(throws: LineaError.self) { try Ops.swiglu(halves: x) }
        if dtype == .float32 {
            // Rounded once into a 16-bit matmul input: equal to the f32 result cast, and the matmul's f32 product of it.
            let bf16Outputs = [try Ops.rmsNorm(x, weight: w, outputDType: .bfloat16), try Ops.rmsNormGated(x, gate: z, weight: w, outputDType: .bfloat16),
                               try Ops.swiglu(halves: g, outputDType: .bfloat16)]
            let castOutputs = [try Ops.rmsNorm(x, weight: w), try Ops.rmsNormGated(x, gate: z, weight: w), try Ops.swiglu(halves: g)]
            for (narrow, cast) in zip(bf16Outputs, castOutputs) {
                #expect(narrow.dtype == .bfloat16)
                #expect(try narrow.host().scalars == Ops.cast(cast, to: .bfloat16).host().scalars)
            }
            let weight = try DeviceTensor(Tensor.randomNormal([5, d], seed: 12), dtype: .bfloat16)
            let product = try Ops.matmul(bf16Outputs[0], weight: weight, outputDType: .float32)
            #expect(product.dtype == .float32)
            #expect(try product.host().scalars == Ops.matmul(Ops.cast(bf16Outputs[0], to: .float32), weight: weight).host().scalars)
            #expect(throws: LineaError.invalidArgument(argument: "outputDType", expected: "x's dtype (bf16) or f32", actual: "f16")) {
                try Ops.matmul(bf16Outputs[0], weight: weight, outputDType: .float16)
            }
            #expect(throws: LineaError.invalidArgument(argument: "outputDType", expected: "x's dtype (f32), or bf16 or f16 from f32 x", actual: "i32")) {
                try Ops.rmsNorm(x, weight: w, outputDType: .int32)
            }
        }
        try Self.check(try Ops.add(x, z), try ReferenceOps.add(xs, zs), dtype, "add")
        try Self.check(try Ops.mul(x, z), zip(xs, zs).map { $0 * $1 }, dtype, "mul")
        // b broadcast: [d] over the last axis, [3, 1, 1] over the second, one element.
        let (y, ys) = try Self.input([2, 3, 4, d], seed: 9, dtype), (m, ms) = try Self.input([3, 1, 1], seed: 10, dtype)
        let (s, ss) = try Self.input([1], seed: 11, dtype)
        try Self.check(try Ops.add(x, w), xs.indices.map { xs[$0] + ws[$0 % d] }, dtype, "add [d]")
        try Self.check(try Ops.mul(y, m), ys.indices.map { ys[$0] * ms[($0 / (4 * d)) % 3] }, dtype, "mul [3, 1, 1]")
        try Self.check(try Ops.mul(y, s), ys.map { $0 * ss[0] }, dtype, "mul [1]")
        try Self.check(try Ops.clamp(x, min: -0.5, max: 1), xs.map { min(max($0, -0.5), 1) }, dtype, "clamp")
        let den = try DeviceTensor(Tensor.randomUniform([d], seed: 12, in: 0.25...2), dtype: dtype), dens = try den.host().scalars.map(Double.init)
        try Self.check(try Ops.div(x, den), xs.indices.map { xs[$0] / dens[$0 % d] }, dtype, "div [d]")
        try Self.check(try Ops.exp(x), xs.map { Foundation.exp($0) }, dtype, "exp")
        #expect(throws: LineaError.shapeMismatch(argument: "b", expected: "broadcastable to a's [2, 3, 37] (each axis 1 or a's, those not 1 adjacent)",
                                                 actual: "[3]")) { try Ops.add(x, m.reshaped([3])) }
        #expect(throws: LineaError.self) { try Ops.add(w, x) }
        #expect(throws: LineaError.self) { try Ops.mul(y, DeviceTensor.zeros([2, 1, 4, d], dtype: dtype)) }
        #expect(throws: LineaError.self) { try Ops.clamp(x, min: 1, max: 0) }
        #expect(throws: LineaError.self) { try Ops.rmsNorm(x, weight: z) }
    }

    /// indexAdd: repeated rows accumulate, weights scale each row, a bad row id is an error naming it.
    /// The last two axes swapped, value for value: shapes under, at and past the 32 x 32 tile, a batch axis.
    @Test(arguments: dtypes)
    func transposeLastTwoSwapsTheAxes(_ dtype: DType) throws {
        for shape in [[3, 5], [2, 33, 70], [1, 64, 32], [2, 3, 1, 9]] {
            let (x, xs) = try Self.input(shape, seed: 11, dtype)
            let got = try Ops.transposeLastTwo(x)
            let (r, c) = (shape[shape.count - 2], shape[shape.count - 1])
            #expect(got.shape == Array(shape.dropLast(2)) + [c, r] && got.dtype == dtype)
            var want = [Double](repeating: 0, count: xs.count)
            for b in 0..<(xs.count / (r * c)) { for i in 0..<r { for j in 0..<c { want[b * r * c + j * r + i] = xs[b * r * c + i * c + j] } } }
            #expect(try got.host().scalars.map(Double.init) == want, "\(shape) \(dtype)")
        }
        #expect(throws: LineaError.shapeMismatch(argument: "x", expected: "[..., R, C] (rank >= 2)", actual: "[4]")) {
            try Ops.transposeLastTwo(DeviceTensor.zeros([4]))
        }
    }

    @Test func indexAddMatchesReference() throws {
        let (target, ts) = try Self.input([4, 9], seed: 20, .float32), (values, vs) = try Self.input([5, 9], seed: 21, .float32)
        let (weights, ws) = try Self.input([5], seed: 22, .float32)
        let rows = [3, 0, 3, 1, 2]
        var want = ts
        for (i, r) in rows.enumerated() { for d in 0..<9 { want[r * 9 + d] += ws[i] * vs[i * 9 + d] } }
        for dtype in [DType.int32, .int64] {
            let t = try DeviceTensor(target.host())
            try Ops.indexAdd(t, rows: DeviceTensor(integers: rows, shape: [5], dtype: dtype), values: values, weights: weights)
            try Self.check(t, want, .float32, "indexAdd \(dtype)")
        }
        let unweighted = try DeviceTensor(target.host())
        try Ops.indexAdd(unweighted, rows: DeviceTensor(integers: rows, shape: [5], dtype: .int32), values: values)
        var plain = ts
        for (i, r) in rows.enumerated() { for d in 0..<9 { plain[r * 9 + d] += vs[i * 9 + d] } }
        try Self.check(unweighted, plain, .float32, "indexAdd unweighted")
        #expect(throws: LineaError.invalidArgument(argument: "rows", expected: "row ids in 0..<4", actual: "4 at index 1")) {
            try Ops.indexAdd(target, rows: DeviceTensor(integers: [0, 4, 1, 1, 1], shape: [5], dtype: .int32), values: values)
        }
        #expect(throws: LineaError.self) { try Ops.indexAdd(DeviceTensor(target.host(), dtype: .bfloat16), rows: DeviceTensor(integers: rows, shape: [5]), values: values) }
        #expect(throws: LineaError.self) { try Ops.indexAdd(target, rows: DeviceTensor(integers: rows, shape: [5]), values: values.narrowed(axis: 0, 0..<4)) }
    }

    @Test(arguments: dtypes)
    func rotaryAndConv(_ dtype: DType) throws {
        let (b, t, h, d) = (2, 5, 3, 16)
        let (x, xs) = try Self.input([b, t, h, d], seed: 8, dtype)
        let positions = (0..<(b * t)).map { $0 % t + 3 }
        let p = try DeviceTensor(integers: positions, shape: [b, t], dtype: .int32)
        for layout in RotaryLayout.allCases {
            for rotaryDim in [d, 4] {
                try Self.check(try Ops.rotary(x, positions: p, theta: 10_000, rotaryDim: rotaryDim, layout: layout),
                               try ReferenceOps.rotary(x: xs, positions: positions, tokens: b * t, heads: h, headDim: d, rotaryDim: rotaryDim,
                                                       theta: 10_000, layout: layout), dtype, "rotary \(layout) \(rotaryDim)")
            }
            // Llama 3's scaling: wavelengths of these 8 frequencies span all three bands at a context of 64.
            let scaling = try RotaryScaling(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalContext: 64)
            try Self.check(try Ops.rotary(x, positions: p, theta: 10_000, layout: layout, scaling: scaling),
                           try ReferenceOps.rotary(x: xs, positions: positions, tokens: b * t, heads: h, headDim: d, rotaryDim: d,
                                                   theta: 10_000, layout: layout, scaling: scaling), dtype, "rotary llama3 \(layout)")
        }
        // A prefill of 4 tokens then one-token steps, the state carried, equals the reference over all 7.
        let (c, width) = (9, 4)
        let (seq, seqs) = try Self.input([1, 7, c], seed: 9, dtype), (w, ws) = try Self.input([c, width], seed: 10, dtype)
        let (bias, biases) = try Self.input([c], seed: 11, dtype)
        let want = try ReferenceOps.causalConv1d(x: seqs, weight: ws, bias: biases, state: nil, batch: 1, length: 7, channels: c,
                                                 width: width, silu: true)
        let state = try DeviceTensor.zeros([1, c, width - 1], dtype: dtype)
        var got: [Float] = []
        for range in [0..<4, 4..<5, 5..<6, 6..<7] {
            let piece = try seq.narrowed(axis: 1, range).contiguous()
            if range.count == 1 {
                // A decode step split into parts: for one token, the parts one after another are the output's channels.
                let parts = try Ops.causalConv1d(piece, weight: w, bias: bias, state: state, silu: true, parts: [3, 0, 6])
                got += try parts.flatMap { try $0.host().scalars }
            } else {
                got += try Ops.causalConv1d(piece, weight: w, bias: bias, state: state, silu: true).host().scalars
            }
        }
        #expect(ErrorStats(got, want.y.map { Float($0) }).relativeRMS <= Self.tolerance(dtype), "conv1d \(dtype)")
        // Split into parts of 3, 0, 6 channels: each a packed [1, 7, width] holding those columns of the one output.
        let parts = try Ops.causalConv1d(seq, weight: w, bias: bias, state: DeviceTensor.zeros([1, c, width - 1], dtype: dtype),
                                         silu: true, parts: [3, 0, 6])
        for (part, columns) in zip(parts, [0..<3, 3..<3, 3..<9]) {
            #expect(part.shape == [1, 7, columns.count] && part.isContiguous)
            let expected = (0..<7).flatMap { t in columns.map { Float(want.y[t * c + $0]) } }
            #expect(ErrorStats(try part.host().scalars, expected).relativeRMS <= Self.tolerance(dtype), "conv1d part \(columns) \(dtype)")
        }
        #expect(throws: LineaError.invalidArgument(argument: "parts", expected: "1 to 3 widths >= 0 summing to C = 9", actual: "[3, 5]")) {
            try Ops.causalConv1d(seq, weight: w, parts: [3, 5])
        }
    }

    @Test func routingArgmaxAndSampling() throws {
        let (rows, experts) = (4, 10)
        let (logits, ls) = try Self.input([rows, experts], seed: 12, .float32, scale: 2)
        let routed = try Ops.topKRouting(logits, k: 3, normalize: true)
        let want = try ReferenceOps.topKRouting(logits: ls, rows: rows, experts: experts, k: 3, normalize: true)
        #expect(try routed.indices.hostIntegers() == want.indices)
        try Self.check(routed.weights, want.weights, .float32, "routing weights")
        #expect(try Ops.argmax(logits).hostIntegers() == (try ReferenceOps.argmax(x: ls, rows: rows, cols: experts)))
        // Each row's token is the one the reference distribution gives for the same draw.
        var random = SeededRandom(seed: 99), mirror = SeededRandom(seed: 99)
        let tokens = try Ops.sample(logits, temperature: 0.8, topK: 5, topP: 0.9, random: &random).hostIntegers()
        for r in 0..<rows {
            let p = try ReferenceOps.samplingDistribution(logits: Array(ls[r * experts..<(r + 1) * experts]), temperature: 0.8, topK: 5, topP: 0.9)
            #expect(tokens[r] == ReferenceOps.sample(distribution: p, u: Double(Float(mirror.nextUnit()))))
        }
        #expect(try Ops.sample(logits, temperature: 0, random: &random).hostIntegers() == (try ReferenceOps.argmax(x: ls, rows: rows, cols: experts)))
        #expect(throws: LineaError.self) { try Ops.topKRouting(logits, k: 11, normalize: false) }
    }
}
