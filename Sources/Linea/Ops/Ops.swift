/// One model op as a backend receives it: its kind, named inputs and preallocated outputs, shapes already checked.
public struct ModelOpCall: OpCall {
    /// The ops and their settings.
    public enum Kind: Sendable, Equatable {
        case matmul, embedding, softmax, argmax, silu, sigmoid, softplus, exp, swiglu, swigluHalves, add, mul, div
        case clamp(min: Float, max: Float), cast, indexAdd, transposeLastTwo
        case rmsNorm(eps: Float, zeroCentered: Bool), rmsNormGated(eps: Float), l2Norm(eps: Float)
        case gelu(GELUApproximation)
        case rotary(theta: Float, rotaryDim: Int, layout: RotaryLayout, scaling: RotaryScaling?)
        case causalConv1d(silu: Bool, parts: [Int])
        case topKRouting(k: Int, normalize: Bool)
        case sample(temperature: Float, topK: Int, topP: Float)
    }

    /// What to compute.
    public let kind: Kind
    /// Inputs by argument name (`x`, `weight`, `bias`, `gate`, `up`, `ids`, `table`, `positions`, `state` (conv1d,
    /// updated in place), `uniforms` (sampling draws)).
    public let inputs: [(name: String, tensor: DeviceTensor)]
    /// Outputs by name (`out`; routing's `weights` and `indices`).
    public let outputs: [(name: String, tensor: DeviceTensor)]

    public var name: String { "\(kind)".split(separator: "(").first.map(String.init) ?? "op" }

    public func forEachTensor(_ body: (_ name: String, _ tensor: DeviceTensor) throws -> Void) rethrows {
        for (name, tensor) in inputs { try body(name, tensor) }
        for (name, tensor) in outputs { try body(name, tensor) }
    }

    /// The input or output named `name`, if the call has one. O(arguments).
    public subscript(_ name: String) -> DeviceTensor? {
        inputs.first { $0.name == name }?.tensor ?? outputs.first { $0.name == name }?.tensor
    }

    /// The first float input (`x`, `gate`, `a`, or an embedding's `table`): its dtype is the call's compute dtype and
    /// its last axis the row width. O(arguments).
    public var primary: (name: String, tensor: DeviceTensor) {
        inputs.first { $0.tensor.dtype.isFloatingPoint }!
    }
}

/// The ops a model needs besides its mixers, on device tensors, run where their inputs live (CPU or GPU).
/// Float outputs take the dtype of the first float input (bf16 in, bf16 out; compute is Float32); indices and
/// tokens are i32. Shapes are checked here for every backend; errors name the argument.
public enum Ops {
    /// `x [..., K] · weight[N, K]^T + bias[N]` (nn.Linear), `[..., N]` in `outputDType` (x's dtype when nil, or f32);
    /// weight f32, bf16 or f16 (bf16 weights stay bf16 on both devices), fp32 accumulation. `out` (allocated when nil)
    /// lets a loop reuse its output. O(rows·N·K).
    public static func matmul(_ x: DeviceTensor, weight: DeviceTensor, bias: DeviceTensor? = nil, out: DeviceTensor? = nil,
                              outputDType: DType? = nil) throws -> DeviceTensor {
        try float(x, "x")
        try float(weight, "weight")
        try weight.expectRank(2, "weight", layout: "[N, K] (nn.Linear)")
        let (n, k) = (weight.shape[0], weight.shape[1])
        try lastAxis(x, k, "x", "[..., \(k)] (K of weight)")
        if let bias { try bias.expectShape([n], "bias") }
        let shape = Array(x.shape.dropLast()) + [n]
        let dtype = outputDType ?? out?.dtype ?? x.dtype
        guard dtype == x.dtype || dtype == .float32 else {
            throw LineaError.invalidArgument(argument: "outputDType", expected: "x's dtype (\(x.dtype.shortName)) or f32", actual: dtype.shortName)
        }
        let result = try out ?? DeviceTensor.uninitialized(shape, dtype: dtype, on: x.device)
        try result.expectShape(shape, "out")
        try result.expectDType([dtype], "out")
        try run(.matmul, ["x": x, "weight": weight, "bias": bias], result)
        return result
    }

    /// Rows of `table [V, D]` at integer `ids [...]` (i32 or i64), `[..., D]` in the table's dtype; an id outside
    /// `0..<V` is an error naming it. O(ids·D).
    public static func embedding(ids: DeviceTensor, table: DeviceTensor) throws -> DeviceTensor {
        try ids.expectDType([.int32, .int64], "ids")
        try float(table, "table")
        try table.expectRank(2, "table", layout: "[vocab, D]")
        let out = try DeviceTensor.uninitialized(ids.shape + [table.shape[1]], dtype: table.dtype, on: table.device)
        try run(.embedding, ["ids": ids, "table": table], out)
        return out
    }

    /// RMSNorm over the last axis: `x · rsqrt(mean(x²) + eps) · w`, or `· (1 + w)` when `zeroCentered` (Qwen3-Next,
    /// Gemma); `weight [D]`. `outputDType` (x's when nil; bf16 or f16 from f32 x) rounds the result once for the 16-bit
    /// matmul it feeds. O(n).
    public static func rmsNorm(_ x: DeviceTensor, weight: DeviceTensor, eps: Float = 1e-6, zeroCentered: Bool = false,
                               outputDType: DType? = nil) throws -> DeviceTensor {
        try norm(.rmsNorm(eps: eps, zeroCentered: zeroCentered), x, weight: weight, gate: nil, outputDType: outputDType)
    }

    /// Gated RMSNorm (Qwen3-Next, Mamba-2): `rmsnorm(x) · w · silu(gate)`; `gate` shaped as `x`, `weight [D]`;
    /// `outputDType` as for `rmsNorm`. O(n).
    public static func rmsNormGated(_ x: DeviceTensor, gate: DeviceTensor, weight: DeviceTensor, eps: Float = 1e-6,
                                    outputDType: DType? = nil) throws -> DeviceTensor {
        try norm(.rmsNormGated(eps: eps), x, weight: weight, gate: gate, outputDType: outputDType)
    }

    /// `x / sqrt(sum x² + eps)` over the last axis (fla's l2norm). O(n).
    public static func l2Norm(_ x: DeviceTensor, eps: Float = 1e-6) throws -> DeviceTensor {
        try float(x, "x")
        return try elementwise(.l2Norm(eps: eps), ["x": x])
    }

    /// `x · sigmoid(x)`. O(n).
    public static func silu(_ x: DeviceTensor) throws -> DeviceTensor { try unary(.silu, x) }
    /// `1 / (1 + e^-x)`. O(n).
    public static func sigmoid(_ x: DeviceTensor) throws -> DeviceTensor { try unary(.sigmoid, x) }
    /// torch's softplus (`log(1 + e^x)`, x above 20 passed through). O(n).
    public static func softplus(_ x: DeviceTensor) throws -> DeviceTensor { try unary(.softplus, x) }
    /// GELU, exact (erf) or the tanh approximation (`gelu_pytorch_tanh`). O(n).
    public static func gelu(_ x: DeviceTensor, approximate: GELUApproximation = .none) throws -> DeviceTensor {
        try unary(.gelu(approximate), x)
    }
    /// Softmax over the last axis. O(n).
    public static func softmax(_ x: DeviceTensor) throws -> DeviceTensor { try unary(.softmax, x) }

    /// `silu(gate) · up` (the SwiGLU MLP's middle), shapes equal. O(n).
    public static func swiglu(gate: DeviceTensor, up: DeviceTensor) throws -> DeviceTensor {
        try binary(.swiglu, ("gate", gate), ("up", up))
    }

    /// `silu(x[..., :W]) · x[..., W:]` of `x [..., 2W]` → `[..., W]`: the SwiGLU middle straight from a stacked
    /// gate-and-up product (no copies of its two halves); `outputDType` as for `rmsNorm`. O(n).
    public static func swiglu(halves x: DeviceTensor, outputDType: DType? = nil) throws -> DeviceTensor {
        try float(x, "x")
        let width = x.shape.last ?? 0
        try OpCheck.value("x", x.rank >= 1 && width % 2 == 0, "a last axis of even length (gate, then up)", "\(x.shape)")
        let out = try DeviceTensor.uninitialized(Array(x.shape.dropLast()) + [width / 2], dtype: try narrowing(x, to: outputDType), on: x.device)
        try run(.swigluHalves, ["x": x], out)
        return out
    }

    /// `a + b` (the residual add, a per-head bias); `b` broadcasts to `a`'s shape (numpy's rules, its axes other than 1
    /// adjacent: `[H]` or `[H, 1]` over `[B, T, H, P]`). O(n).
    public static func add(_ a: DeviceTensor, _ b: DeviceTensor) throws -> DeviceTensor {
        try broadcasting(.add, a, b)
    }

    /// `a · b` element by element (an output gate, a per-head scale); `b` broadcasts to `a`'s shape as in `add`. O(n).
    public static func mul(_ a: DeviceTensor, _ b: DeviceTensor) throws -> DeviceTensor {
        try broadcasting(.mul, a, b)
    }

    /// `a / b` element by element (a normalizer), `b` broadcast to `a`'s shape as in `add`. O(n).
    public static func div(_ a: DeviceTensor, _ b: DeviceTensor) throws -> DeviceTensor {
        try broadcasting(.div, a, b)
    }

    /// `e^x`. O(n).
    public static func exp(_ x: DeviceTensor) throws -> DeviceTensor { try unary(.exp, x) }

    /// `x` clamped to `[min, max]` (either bound infinite for none). O(n).
    public static func clamp(_ x: DeviceTensor, min: Float, max: Float) throws -> DeviceTensor {
        guard !min.isNaN, !max.isNaN, min <= max else {
            throw LineaError.invalidArgument(argument: "min", expected: "min <= max, neither NaN", actual: "min \(min), max \(max)")
        }
        return try unary(.clamp(min: min, max: max), x)
    }

    /// `x [..., R, C]` as `[..., C, R]` (the last two axes swapped), packed: channels-last activations to the
    /// channels-first layout a scan reads, and back. O(n).
    public static func transposeLastTwo(_ x: DeviceTensor) throws -> DeviceTensor {
        try float(x, "x")
        guard x.rank >= 2 else { throw LineaError.shapeMismatch(argument: "x", expected: "[..., R, C] (rank >= 2)", actual: "\(x.shape)") }
        let out = try DeviceTensor.uninitialized(Array(x.shape.dropLast(2)) + [x.shape[x.rank - 1], x.shape[x.rank - 2]], dtype: x.dtype,
                                                 on: x.device)
        try run(.transposeLastTwo, ["x": x], out)
        return out
    }

    /// `x` converted to the float `dtype` (round to nearest even); `x` itself when already so. O(n).
    public static func cast(_ x: DeviceTensor, to dtype: DType) throws -> DeviceTensor {
        try float(x, "x")
        guard dtype.isFloatingPoint else {
            throw LineaError.invalidArgument(argument: "dtype", expected: "f32, bf16 or f16", actual: dtype.shortName)
        }
        if x.dtype == dtype { return x }
        let out = try DeviceTensor.uninitialized(x.shape, dtype: dtype, on: x.device)
        try run(.cast, ["x": x], out)
        return out
    }

    /// How `b` repeats over `a` when it broadcasts to `a`'s shape: `a`'s element `i` reads `b[(i / inner) % b.count]`,
    /// where `inner` is the product of `a`'s axes after `b`'s last axis other than 1; nil when `b` does not broadcast
    /// that way (an axis that is neither 1 nor `a`'s, more axes than `a`, or a 1 between its other axes). O(rank).
    package static func broadcastInner(_ a: [Int], _ b: [Int]) -> Int? {
        guard b.count <= a.count else { return nil }
        let aligned = [Int](repeating: 1, count: a.count - b.count) + b
        let kept = aligned.indices.filter { aligned[$0] != 1 }
        guard let first = kept.first, let last = kept.last else { return a.reduce(1, *) }  // b is one element
        for axis in first...last where aligned[axis] != a[axis] { return nil }
        return a[(last + 1)...].reduce(1, *)
    }

    /// Rotary embedding of `x [..., T, H, D]` at integer `positions` (one per token row: `[T]` or `[B, T]`): the
    /// first `rotaryDim` dims (default D; partial rotary below) turn by `position · theta^(-2i/rotaryDim)` in the
    /// half-split (`rotate_half`) or interleaved layout, the rest pass through; `scaling`: Llama 3's frequency scaling. O(n).
    public static func rotary(_ x: DeviceTensor, positions: DeviceTensor, theta: Float = 10_000, rotaryDim: Int? = nil,
                              layout: RotaryLayout = .halfSplit, scaling: RotaryScaling? = nil) throws -> DeviceTensor {
        try float(x, "x")
        guard x.rank >= 3 else { throw LineaError.shapeMismatch(argument: "x", expected: "[..., T, H, D]", actual: "\(x.shape)") }
        try positions.expectDType([.int32, .int64], "positions")
        let tokens = x.count / max(1, x.shape[x.rank - 1] * x.shape[x.rank - 2])
        guard positions.count == tokens else {
            throw LineaError.shapeMismatch(argument: "positions", expected: "\(tokens) positions (one per token row of x \(x.shape))",
                                           actual: "\(positions.shape)")
        }
        let dims = rotaryDim ?? x.shape[x.rank - 1]
        return try elementwise(.rotary(theta: theta, rotaryDim: dims, layout: layout, scaling: scaling), ["x": x, "positions": positions])
    }

    /// Causal depthwise conv1d over `x [B, T, C]` with `weight [C, W]` (W in 2...4), optional `bias [C]` and SiLU;
    /// `state [B, C, W-1]` (the last W-1 inputs, zeros for a fresh sequence) is read and replaced, so a prefill
    /// followed by one-token steps equals one call. O(B·T·C·W).
    public static func causalConv1d(_ x: DeviceTensor, weight: DeviceTensor, bias: DeviceTensor? = nil, state: DeviceTensor? = nil,
                                    silu: Bool = false) throws -> DeviceTensor {
        try causalConv1d(x, weight: weight, bias: bias, state: state, silu: silu, parts: x.rank == 3 ? [x.shape[2]] : [])[0]
    }

    /// The same conv with its output channels split, in order, into packed tensors `[B, T, parts[i]]` (1 to 3 parts
    /// summing to C): a fused q, k, v convolution whose parts the mixer reads without copying columns out. O(B·T·C·W).
    public static func causalConv1d(_ x: DeviceTensor, weight: DeviceTensor, bias: DeviceTensor? = nil, state: DeviceTensor? = nil,
                                    silu: Bool = false, parts: [Int]) throws -> [DeviceTensor] {
        try float(x, "x")
        try x.expectRank(3, "x", layout: "[B, T, C]")
        let (b, t, c) = (x.shape[0], x.shape[1], x.shape[2])
        try weight.expectRank(2, "weight", layout: "[C, W]")
        guard weight.shape[0] == c, (2...4).contains(weight.shape[1]) else {
            throw LineaError.shapeMismatch(argument: "weight", expected: "[\(c), W] with W in 2...4", actual: "\(weight.shape)")
        }
        guard (1...3).contains(parts.count), parts.allSatisfy({ $0 >= 0 }), parts.reduce(0, +) == c else {
            throw LineaError.invalidArgument(argument: "parts", expected: "1 to 3 widths >= 0 summing to C = \(c)", actual: "\(parts)")
        }
        if let bias { try bias.expectShape([c], "bias") }
        if let state {
            try state.expectShape([b, c, weight.shape[1] - 1], "state")
            guard state.storage.isWritable else {
                throw LineaError.invalidArgument(argument: "state", expected: "writable memory", actual: "a read-only mapping")
            }
        }
        // One allocation holding the parts one after another, each packed [B, T, width].
        let out = try DeviceTensor.uninitialized([b * t * c], dtype: x.dtype, on: x.device)
        try run(.causalConv1d(silu: silu, parts: parts), ["x": x, "weight": weight, "bias": bias, "state": state], out)
        var start = 0
        return try parts.map { width in
            defer { start += b * t * width }
            return try out.narrowed(axis: 0, start..<(start + b * t * width)).reshaped([b, t, width])
        }
    }

    /// `target[rows[i]] += weights[i] · values[i]` for each row i of `values [n, D]` (torch's `index_add_` with a weight
    /// per row; `weights` nil: 1), in place on `target [R, D]`; all f32, `rows [n]` i32 (or i64 on the CPU). A mixture of
    /// experts adds each expert's outputs into the rows routed to it. A row id outside `0..<R` is an error naming it
    /// (what was added before it stays). O(n·D).
    public static func indexAdd(_ target: DeviceTensor, rows: DeviceTensor, values: DeviceTensor, weights: DeviceTensor? = nil) throws {
        try target.expectDType([.float32], "target")
        try values.expectDType([.float32], "values")
        try target.expectRank(2, "target", layout: "[R, D]")
        try values.expectShape([rows.count, target.shape[1]], "values")
        try rows.expectDType([.int32, .int64], "rows")
        try rows.expectRank(1, "rows", layout: "[n]")
        if let weights {
            try weights.expectDType([.float32], "weights")
            try weights.expectShape([rows.count], "weights")
        }
        guard target.isContiguous, target.storage.isWritable else {
            throw LineaError.invalidArgument(argument: "target", expected: "a packed writable tensor (updated in place)", actual: "a view or a read-only mapping")
        }
        try Backends.run(ModelOpCall(kind: .indexAdd, inputs: [("values", values), ("rows", rows)] + (weights.map { [("weights", $0)] } ?? []),
                                     outputs: [("out", target)]))
    }

    /// Mixture-of-experts routing: softmax over `logits [R, E]`, the `k` largest (ties to the lower index), their
    /// weights renormalized to sum 1 when `normalize` (`norm_topk_prob`); `weights [R, k]` f32, `indices [R, k]` i32.
    /// O(R·E·k).
    public static func topKRouting(_ logits: DeviceTensor, k: Int, normalize: Bool) throws -> (weights: DeviceTensor, indices: DeviceTensor) {
        try float(logits, "logits")
        try logits.expectRank(2, "logits", layout: "[rows, experts]")
        guard k >= 1, k <= logits.shape[1] else {
            throw LineaError.invalidArgument(argument: "k", expected: "1...\(logits.shape[1]) (the experts)", actual: "\(k)")
        }
        let weights = try DeviceTensor.zeros([logits.shape[0], k], on: logits.device)
        let indices = try DeviceTensor.zeros([logits.shape[0], k], dtype: .int32, on: logits.device)
        try Backends.run(ModelOpCall(kind: .topKRouting(k: k, normalize: normalize), inputs: [("x", logits)],
                                     outputs: [("weights", weights), ("indices", indices)]))
        return (weights, indices)
    }

    /// The index of the largest value of each row of `x [R, N]` (the first on ties), `[R]` i32. O(R·N).
    public static func argmax(_ x: DeviceTensor) throws -> DeviceTensor {
        try float(x, "x")
        try x.expectRank(2, "x", layout: "[rows, N]")
        let out = try DeviceTensor.zeros([x.shape[0]], dtype: .int32, on: x.device)
        try run(.argmax, ["x": x], out)
        return out
    }

    /// One token per row of `logits [R, V]`, `[R]` i32: temperature (0: argmax), top-k (0: off; ties with the k-th
    /// kept) and top-p (1: off), one uniform draw per row from `random`, so a seed picks the same tokens on every
    /// device and machine. O(R·V·log V).
    public static func sample(_ logits: DeviceTensor, temperature: Float, topK: Int = 0, topP: Float = 1,
                              random: inout SeededRandom) throws -> DeviceTensor {
        try float(logits, "logits")
        try logits.expectRank(2, "logits", layout: "[rows, vocab]")
        try OpCheck.sampling(temperature: Double(temperature), topK: topK, topP: Double(topP))
        let rows = logits.shape[0]
        let draws = CPUOps.draws(rows: rows, temperature: temperature, random: &random)
        let uniforms = temperature == 0 ? nil : try DeviceTensor(Tensor(shape: [rows], scalars: draws), on: logits.device)
        let out = try DeviceTensor.zeros([rows], dtype: .int32, on: logits.device)
        try run(.sample(temperature: temperature, topK: topK, topP: topP), ["x": logits, "uniforms": uniforms], out)
        return out
    }

    // MARK: Shared checks

    private static func float(_ x: DeviceTensor, _ name: String) throws {
        try x.expectDType([.float32, .bfloat16, .float16], name)
    }

    private static func lastAxis(_ x: DeviceTensor, _ n: Int, _ name: String, _ layout: String) throws {
        guard x.rank >= 1, x.shape[x.rank - 1] == n else { throw LineaError.shapeMismatch(argument: name, expected: layout, actual: "\(x.shape)") }
    }

    private static func norm(_ kind: ModelOpCall.Kind, _ x: DeviceTensor, weight: DeviceTensor, gate: DeviceTensor?,
                             outputDType: DType?) throws -> DeviceTensor {
        try float(x, "x")
        try float(weight, "weight")
        try lastAxis(x, weight.count, "x", "[..., \(weight.count)] (the weight's length)")
        try weight.expectRank(1, "weight", layout: "[D]")
        if let gate { try gate.expectShape(x.shape, "gate") }
        let out = try DeviceTensor.uninitialized(x.shape, dtype: try narrowing(x, to: outputDType), on: x.device)
        try run(kind, ["x": x, "weight": weight, "gate": gate], out)
        return out
    }

    /// The output dtype of an op that may round f32 rows once into the 16-bit input of the next matmul: x's dtype when
    /// nil or equal, else bf16 or f16 from f32 x.
    private static func narrowing(_ x: DeviceTensor, to outputDType: DType?) throws -> DType {
        guard let outputDType, outputDType != x.dtype else { return x.dtype }
        guard x.dtype == .float32, outputDType == .bfloat16 || outputDType == .float16 else {
            throw LineaError.invalidArgument(argument: "outputDType", expected: "x's dtype (\(x.dtype.shortName)), or bf16 or f16 from f32 x",
                                             actual: outputDType.shortName)
        }
        return outputDType
    }

    private static func unary(_ kind: ModelOpCall.Kind, _ x: DeviceTensor) throws -> DeviceTensor {
        try float(x, "x")
        return try elementwise(kind, ["x": x])
    }

    private static func binary(_ kind: ModelOpCall.Kind, _ a: (String, DeviceTensor), _ b: (String, DeviceTensor)) throws -> DeviceTensor {
        try float(a.1, a.0)
        try float(b.1, b.0)
        try b.1.expectShape(a.1.shape, b.0)
        return try sameDType(kind, a, b)
    }

    private static func broadcasting(_ kind: ModelOpCall.Kind, _ a: DeviceTensor, _ b: DeviceTensor) throws -> DeviceTensor {
        try float(a, "a")
        try float(b, "b")
        guard broadcastInner(a.shape, b.shape) != nil else {
            throw LineaError.shapeMismatch(argument: "b", expected: "broadcastable to a's \(a.shape) (each axis 1 or a's, those not 1 adjacent)",
                                           actual: "\(b.shape)")
        }
        return try sameDType(kind, ("a", a), ("b", b))
    }

    private static func sameDType(_ kind: ModelOpCall.Kind, _ a: (String, DeviceTensor), _ b: (String, DeviceTensor)) throws -> DeviceTensor {
        guard b.1.dtype == a.1.dtype else {
            throw LineaError.invalidArgument(argument: b.0, expected: "dtype \(a.1.dtype.shortName) (as \(a.0))", actual: b.1.dtype.shortName)
        }
        return try elementwise(kind, [a.0: a.1, b.0: b.1])
    }

    /// Runs `kind` with an output shaped and typed as the first input (left unfilled: the op writes every element).
    /// O(1) plus the op.
    private static func elementwise(_ kind: ModelOpCall.Kind, _ inputs: KeyValuePairs<String, DeviceTensor?>) throws -> DeviceTensor {
        let x = inputs.first!.value!
        let out = try DeviceTensor.uninitialized(x.shape, dtype: x.dtype, on: x.device)
        try run(kind, inputs, out)
        return out
    }

    private static func run(_ kind: ModelOpCall.Kind, _ inputs: KeyValuePairs<String, DeviceTensor?>, _ out: DeviceTensor) throws {
        try Backends.run(ModelOpCall(kind: kind, inputs: inputs.compactMap { entry in entry.value.map { (entry.key, $0) } },
                                     outputs: [("out", out)]))
    }
}
