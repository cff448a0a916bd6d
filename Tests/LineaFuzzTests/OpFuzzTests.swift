import Foundation
import Linea
import Testing

/// Random inputs for the op entry points: mostly small shapes, sometimes a zero-length axis next to a huge one,
/// sometimes a wrong shape; values normal or full of NaN, Inf, 1e19 and subnormals.
struct OpInputs {
    var rng: SeededRandom
    /// What was built, for the reproducer.
    var log: [String] = []

    /// An extent: mostly 1...4, sometimes 0 or up to 40.
    mutating func dim() -> Int {
        switch rng.below(20) {
        case 0: return 0
        case 1...14: return 1 + rng.below(4)
        case 15...18: return 1 + rng.below(24)
        default: return 1 + rng.below(40)
        }
    }

    /// An extent far beyond memory, only used where another axis of the same tensor is 0.
    mutating func huge() -> Int { rng.pick([1 << 20, 1 << 31, 1 << 40, Int.max / 8, Int.max]) }

    /// A tensor of `shape` (perturbed with probability `wrong`), filled per a random value mode; nil if Tensor
    /// refuses the shape (too large).
    mutating func tensor(_ name: String, _ shape: [Int], wrong: Double = 0.03, fill: ClosedRange<Float> = -2...2) -> Tensor? {
        var shape = shape
        if rng.chance(wrong) && shape.allSatisfy({ $0 < 1 << 16 }) {  // a huge extent next to 1 is a legitimately huge tensor
            switch rng.below(3) {
            case 0: shape.removeLast()
            case 1: shape.append(1 + rng.below(3))
            default: shape[rng.below(shape.count)] &+= rng.chance(0.5) ? 1 : -1
            }
        }
        let mode = rng.below(10)
        let specials: [Float] = [.nan, .infinity, -.infinity, 1e19, -1e19, .leastNonzeroMagnitude, .greatestFiniteMagnitude, 0, -0.0]
        log.append("\(name) \(shape) values mode \(mode)")
        guard var t = try? Tensor(zeros: shape.map { max($0, 0) }) else { return nil }
        for i in 0..<t.count {
            switch mode {
            case 0: t.scalars[i] = 0
            case 1: t.scalars[i] = rng.chance(0.1) ? rng.pick(specials) : fill.lowerBound + Float(rng.nextUnit()) * (fill.upperBound - fill.lowerBound)
            case 2: t.scalars[i] = rng.pick(specials)
            case 3: t.scalars[i] = Float(rng.nextNormal()) * 1e19
            default: t.scalars[i] = fill.lowerBound + Float(rng.nextUnit()) * (fill.upperBound - fill.lowerBound)
            }
        }
        return t
    }

    /// A query scale: nil (the default) most of the time, else an edge value.
    mutating func scale() -> Float? {
        rng.chance(0.6) ? nil : rng.pick([0, -1, 1, 1e-30, 1e30, .nan, .infinity, -.infinity, .greatestFiniteMagnitude, .leastNonzeroMagnitude])
    }
}

/// One op call: a name for the reproducer, the call, and which of its outputs must be finite (nil: any values).
typealias OpCall = (name: String, call: () throws -> [Tensor], finite: [Bool]?)

@Suite struct OpFuzzTests {
    /// Attention (every form), block-sparse attention, every recurrence in every form and the decode step, on random
    /// and absurd shapes, options and values: each call returns outputs of consistent sizes or throws a LineaError.
    @Test func opEntryPointsReturnOrThrowLineaError() throws {
        var outcomes: [String: Int] = [:]
        try Fuzz.run("opEntryPointsReturnOrThrowLineaError", slot: 1) { rng, fuzzCase in
            var x = OpInputs(rng: SeededRandom(seed: rng.next()))
            let op = rng.below(13)
            let c: OpCall
            switch op {
            case 0...2: c = attentionCase(&x, blockSparse: false)
            case 3: c = attentionCase(&x, blockSparse: true)
            case 4...7: c = recurrenceCase(&x)
            case 8...9: c = stepCase(&x)
            default: c = deviceCase(&x)
            }
            fuzzCase.describe("\(c.name); " + x.log.joined(separator: "; "))
            do {
                let outputs = try c.call()
                for t in outputs where t.scalars.count != t.shape.reduce(1, *) || t.shape.contains(where: { $0 < 0 }) {
                    fuzzCase.fail("output of \(t.scalars.count) scalars for shape \(t.shape)")
                }
                // Without allowNonFiniteOutputs a result is finite (lse may be -inf: a query that sees no key).
                for (t, finite) in zip(outputs, c.finite ?? []) where finite {
                    if let bad = t.scalars.first(where: { $0.isNaN || $0 == .infinity }) {
                        fuzzCase.fail("returned \(bad) in an output of shape \(t.shape) without allowNonFiniteOutputs")
                    }
                }
                outcomes["ok", default: 0] += 1
            } catch is LineaError {
                outcomes["LineaError", default: 0] += 1
            } catch {
                fuzzCase.fail("threw \(type(of: error)), not LineaError: \(error)")
            }
        }
        print("fuzz ops: \(outcomes)")
    }

    /// Attention or block-sparse attention with random GQA shapes, mask, window, scale and form.
    private func attentionCase(_ x: inout OpInputs, blockSparse: Bool) -> OpCall {
        var (B, T, S, Hkv, D, Dv) = (x.dim(), x.dim(), x.dim(), x.dim(), x.dim(), x.dim())
        var Hq = Hkv * (1 + x.rng.below(3))
        if x.rng.chance(0.05) { Hq += 1 }  // not a multiple of Hkv
        if x.rng.chance(0.08) {  // huge axes next to a zero-length one: every input and output is empty
            // Block-sparse keeps S small: its reference allocates S scores even for an empty problem (issue 15 report).
            switch x.rng.below(blockSparse ? 1 : 3) {
            case 0: (B, T, S) = (0, x.huge(), blockSparse ? S : x.huge())
            case 1: (T, S, B) = (0, 0, x.huge())
            default: (Hkv, Hq, S, D) = (0, 0, x.huge(), x.huge())
            }
        }
        let window: Int? = x.rng.chance(0.6) ? nil : x.rng.pick([0, -1, 1, 2, 3, 17, 1 << 30, Int.max, Int.min])
        let options = AttentionOptions(scale: x.scale(), causal: x.rng.chance(0.7), window: window,
                                       allowNonFiniteOutputs: x.rng.chance(0.3))
        let finite = options.allowNonFiniteOutputs ? nil : [true, true]
        let form = x.rng.pick([AttentionForm.reference, .flash, .splitKV(partitions: nil), .splitKV(partitions: 1 + x.rng.below(9)),
                               .splitKV(partitions: x.rng.pick([0, -1, 1000, 1 << 20, Int.max]))])
        let q = x.tensor("q", [B, T, Hq, D]), k = x.tensor("k", [B, S, Hkv, D]), v = x.tensor("v", [B, S, Hkv, Dv])
        guard let q, let k, let v else { return ("attention: inputs refused by Tensor", { [] }, nil) }
        if !blockSparse {
            return ("Attention.forward form \(form) options \(options)", {
                let out = try Attention.forward(q: q, k: k, v: v, options: options, form: form)
                return [out.o, out.lse]
            }, finite)
        }
        let (bm, bn) = (x.rng.pick([1, 2, 3, 16, 64, 0, -1, 1 << 40, Int.max]), x.rng.pick([1, 2, 5, 16, 128, 0, Int.max]))
        func blocks(_ n: Int, _ size: Int) -> Int { n == 0 || size < 1 ? 1 : (n - 1) / size + 1 }
        let maskShape = [x.rng.chance(0.5) ? 1 : B, x.rng.chance(0.5) ? 1 : Hq,
                         x.rng.chance(0.05) ? 0 : blocks(T, bm), blocks(S, bn)]
        x.log.append("mask \(maskShape) blocks \(bm) x \(bn)")
        // As many values as the shape needs when that is small, else a few (the mask must refuse them).
        let needed = maskShape.reduce((1, false)) { acc, n in
            let (p, o) = acc.0.multipliedReportingOverflow(by: n)
            return (p, acc.1 || o)
        }
        let maskValues = (0..<(needed.1 || needed.0 > 1 << 16 ? 4 : needed.0)).map { _ in UInt8(x.rng.below(2)) }
        return ("BlockSparseAttention.reference options \(options)", {
            let mask = try BlockMask(shape: maskShape, blockRows: bm, blockKeys: bn, values: maskValues)
            let out = try BlockSparseAttention.reference(q: q, k: k, v: v, mask: mask, options: options)
            return [out.o, out.lse]
        }, nil)  // the oracle form: it returns what the arithmetic gives
    }

    /// A recurrence of a random mechanism and form, with gates, strengths, initial state and flags at random.
    private func recurrenceCase(_ x: inout OpInputs) -> OpCall {
        let mechanism = x.rng.pick(RecurrentMechanism.allCases)
        var (B, T, H, K, V) = (x.dim(), x.dim(), x.dim(), x.dim(), x.dim())
        if x.rng.chance(0.08) {  // huge axes next to a zero-length one: every input, output and state is empty
            switch x.rng.below(3) {
            case 0: (B, T) = (0, x.huge())
            case 1: (B, H, V) = (0, x.huge(), x.huge())
            default: (T, V, H) = (0, 0, x.huge())
            }
        }
        let form = x.rng.pick([RecurrenceForm.reference, .recurrent, .chunked(size: x.rng.pick([1, 2, 3, 7, 16, 64])),
                               .chunked(size: x.rng.pick([0, -1, 1000, 1 << 20, Int.max]))])
        let gates = Recurrence.requiredInputs(mechanism)
        let needsG = gates.contains("g") || x.rng.chance(0.03), needsBeta = gates.contains("beta") || x.rng.chance(0.03)
        let q = x.tensor("q", [B, T, H, K]), k = x.tensor("k", [B, T, H, K]), v = x.tensor("v", [B, T, H, V])
        let g = needsG ? x.tensor("g", mechanism == .gla ? [B, T, H, K] : [B, T, H], fill: -3...0) : nil
        let beta = needsBeta ? x.tensor("beta", [B, T, H], fill: 0...1) : nil
        let state = x.rng.chance(0.3) ? x.tensor("initial_state", [B, H, K, V]) : nil
        guard let q, let k, let v, !needsG || g != nil, !needsBeta || beta != nil else {
            return ("recurrence: inputs refused by Tensor", { [] }, nil)
        }
        var inputs = RecurrenceInputs(q: q, k: k, v: v, g: g, beta: beta, initialState: state, scale: x.scale())
        inputs.normalize = x.rng.chance(0.2)
        inputs.useQKL2Norm = x.rng.chance(0.2)
        inputs.validate = x.rng.chance(0.9)
        inputs.allowNonFiniteOutputs = x.rng.chance(0.3)
        let name = "Recurrence.forward \(mechanism.rawValue) \(form) scale \(String(describing: inputs.scale)) normalize "
            + "\(inputs.normalize) qkL2 \(inputs.useQKL2Norm) validate \(inputs.validate) allowNonFinite \(inputs.allowNonFiniteOutputs)"
        return (name, {
            let out = try Recurrence.forward(mechanism, inputs, form: form)
            return [out.o, out.finalState]
        }, inputs.validate && !inputs.allowNonFiniteOutputs ? [true, true] : nil)
    }

    /// The device-tensor API on the CPU backend: the recurrences and attention through the dispatch, a model op, or a
    /// view, with random dtypes (integers where floats belong, too), shapes and arguments.
    private func deviceCase(_ x: inout OpInputs) -> OpCall {
        let dtypes: [DType] = [.float32, .float32, .bfloat16, .float16, .int32, .int64]
        func put(_ t: Tensor?, _ name: String, _ x: inout OpInputs) -> DeviceTensor? {
            guard let t else { return nil }
            let dtype = x.rng.chance(0.9) ? DType.float32 : x.rng.pick(dtypes)
            x.log.append("\(name) as \(dtype.shortName)")
            if dtype.isFloatingPoint { return try? DeviceTensor(t, dtype: dtype) }
            return try? DeviceTensor(integers: t.scalars.map { $0.isFinite ? Int(max(-1e9, min(1e9, $0))) : 0 }, shape: t.shape, dtype: dtype)
        }
        func floats(_ d: DeviceTensor) throws -> Tensor {
            d.dtype.isFloatingPoint ? try d.host() : try Tensor(shape: d.shape, scalars: d.hostIntegers().map(Float.init))
        }
        let (B, T, H, K, V) = (x.dim(), x.dim(), x.dim(), x.dim(), x.dim())
        let HV = H * (1 + x.rng.below(2)) + (x.rng.chance(0.05) ? 1 : 0)
        let mechanism = x.rng.pick(RecurrentMechanism.allCases)
        switch x.rng.below(5) {
        case 0, 1:
            let step = x.rng.chance(0.5)
            let lead = step ? [B] : [B, T]
            let q = put(x.tensor("q", lead + [H, K]), "q", &x), k = put(x.tensor("k", lead + [H, K]), "k", &x)
            let v = put(x.tensor("v", lead + [HV, V]), "v", &x)
            let g = put(x.tensor("g", lead + (mechanism == .gla ? [HV, K] : [HV]), fill: -3...0), "g", &x)
            let beta = put(x.tensor("beta", lead + [HV], fill: 0...1), "beta", &x)
            let state = put(x.tensor("state", [B, HV, K, V]), "state", &x)
            let gates = Recurrence.requiredInputs(mechanism)
            guard let q, let k, let v else { return ("device recurrence: inputs refused", { [] }, nil) }
            let (gIn, betaIn) = (gates.contains("g") || x.rng.chance(0.05) ? g : nil, gates.contains("beta") || x.rng.chance(0.05) ? beta : nil)
            let l2 = x.rng.chance(0.3)
            return ("Recurrence.\(step ? "step" : "forward") (device) \(mechanism.rawValue) l2 \(l2)", {
                if step {
                    guard let state else { return [] }
                    return [try floats(Recurrence.step(mechanism, q: q, k: k, v: v, g: gIn, beta: betaIn, state: state, useQKL2Norm: l2))]
                }
                let out = try Recurrence.forward(mechanism, q: q, k: k, v: v, g: gIn, beta: betaIn, initialState: state,
                                                 useQKL2Norm: l2, allowNonFiniteOutputs: true)
                return [try floats(out.o), try floats(out.finalState)]
            }, nil)
        case 2:
            let q = put(x.tensor("q", [B, T, H, K]), "q", &x), k = put(x.tensor("k", [B, V, H, K]), "k", &x)
            let v = put(x.tensor("v", [B, V, H, K]), "v", &x)
            guard let q, let k, let v else { return ("device attention: inputs refused", { [] }, nil) }
            let options = AttentionOptions(causal: x.rng.chance(0.5), window: x.rng.chance(0.7) ? nil : x.rng.pick([0, 1, 3, Int.max]),
                                           allowNonFiniteOutputs: true)
            return ("Attention.forward (device) \(options)", {
                let out = try Attention.forward(q: q, k: k, v: v, options: options)
                return [try floats(out.o), try floats(out.lse)]
            }, nil)
        case 3:
            let a = put(x.tensor("a", [B, T, K]), "a", &x), b = put(x.tensor("b", [B, T, K]), "b", &x)
            let w = put(x.tensor("w", x.rng.chance(0.5) ? [K] : [V, K]), "w", &x)
            let ids = put(x.tensor("ids", [B, T], fill: -1...Float(V + 1)), "ids", &x)
            let pos = put(x.tensor("positions", [B], fill: 0...100), "positions", &x)
            guard let a, let b, let w else { return ("device ops: inputs refused", { [] }, nil) }
            let which = x.rng.below(9), k = x.rng.pick([0, 1, 2, K, K + 1])
            var random = SeededRandom(seed: x.rng.next())
            return ("Ops #\(which) k \(k)", {
                let out: DeviceTensor
                switch which {
                case 0: out = try Ops.matmul(a, weight: w)
                case 1: out = try Ops.rmsNorm(a, weight: w, zeroCentered: true)
                case 2: out = try Ops.rmsNormGated(a, gate: b, weight: w)
                case 3: out = try Ops.swiglu(gate: a, up: b)
                case 4: out = try Ops.embedding(ids: ids ?? a, table: w)
                case 5: out = try Ops.rotary(a.reshaped([B, T, 1, K]), positions: pos ?? a, rotaryDim: k)
                case 6: out = try Ops.causalConv1d(a, weight: w, state: b)
                case 7: out = try Ops.topKRouting(a.reshaped([B * T, K]), k: k, normalize: true).weights
                default: out = try Ops.sample(a.reshaped([B * T, K]), temperature: Float(k) / 2, topK: k, topP: 0.9, random: &random)
                }
                return [try floats(out)]
            }, nil)
        default:
            guard let t = put(x.tensor("t", [B, T, K]), "t", &x) else { return ("views: input refused", { [] }, nil) }
            let (axis, lo, hi) = (x.rng.pick([0, 1, 2, 3, -1]), x.rng.pick([0, 1, 2, -1]), x.rng.pick([0, 1, 2, 5, Int.max]))
            return ("views axis \(axis) \(lo)..\(hi)", {
                guard lo <= hi else { return [] }
                let view = try t.narrowed(axis: axis, lo..<hi)
                try view.copy(from: view.contiguous())
                return [try floats(view.contiguous()), try floats(t.selected(axis: axis, lo)), try floats(view.reshaped([view.count]))]
            }, nil)
        }
    }

    /// One to three decode steps of a random mechanism from a zero or given state.
    private func stepCase(_ x: inout OpInputs) -> OpCall {
        let mechanism = x.rng.pick(RecurrentMechanism.allCases)
        let (B, H, K, V) = (x.dim(), x.dim(), x.dim(), x.dim())
        let given = x.rng.chance(0.3) ? x.tensor("state", [B, H, K, V]) : nil
        let steps = 1 + x.rng.below(3)
        var tokens: [(Tensor?, Tensor?, Tensor?, Tensor?, Tensor?)] = []
        for _ in 0..<steps {
            tokens.append((x.tensor("q", [B, H, K]), x.tensor("k", [B, H, K]), x.tensor("v", [B, H, V]),
                           mechanism.isDelta || mechanism == .simpleGLA || mechanism == .gla || x.rng.chance(0.05)
                               ? x.tensor("g", mechanism == .gla ? [B, H, K] : [B, H], fill: -3...0) : nil,
                           mechanism.isDelta || x.rng.chance(0.05) ? x.tensor("beta", [B, H], fill: 0...1) : nil))
        }
        let scale = x.scale(), allow = x.rng.chance(0.3)
        return ("RecurrentState.step \(mechanism.rawValue) [B,H,K,V] = [\(B),\(H),\(K),\(V)] x \(steps) scale \(String(describing: scale)) allowNonFinite \(allow)", {
            var decode = try given.map { try RecurrentState(state: $0) } ?? RecurrentState(batch: B, heads: H, keyDim: K, valueDim: V)
            var outputs: [Tensor] = []
            for (q, k, v, g, beta) in tokens {
                guard let q, let k, let v else { continue }
                outputs.append(try decode.step(mechanism, q: q, k: k, v: v, g: g, beta: beta, scale: scale,
                                               allowNonFiniteOutputs: allow))
            }
            return outputs + [decode.state]
        }, allow ? nil : Array(repeating: true, count: tokens.filter { $0.0 != nil && $0.1 != nil && $0.2 != nil }.count))
    }
}
