import Foundation

// Context parallelism over the sequence (the idea of LASP-2, Sun et al. 2025): rank r holds the contiguous tokens of slice
// r. Every mechanism here updates the state affinely, S_t = A_t S_{t-1} + (write_t), with A_t = (I - b_t k_t k_tᵀ)
// Diag(a_t) a K x K matrix acting on the left (diagonal without the delta rule). So a slice maps its initial state S to
//     S_end = M S + E,     o_i = o⁰_i + R_i S,
// where E and o⁰ are the slice run from a zero state, M = A_L ... A_1 its transition and R_i = scale q_iᵀ A_i ... A_1.
// Each rank runs its slice once, exchanges (M, E) in one all-gather, folds the ranks before it into its true initial
// state, and adds R_i S to its outputs: one pass over the slice plus a T x K x V product, no second pass.
//
// M and R come out of the existing forms exactly, with no new kernel: the delta rules run the slice on the values
// widened to [v | 0] from the initial state [0 | I] (K more columns): the right K columns carry I through the same
// updates with nothing written, so they end as M, and their outputs are R (the forms are linear in the state, so the two
// column blocks do not mix). Chaining the chunks' WY transitions (Diag(e^{G_L}) - Krᵀ W, then K x K products) would cost
// the same order, O(T·K²) per head, and need new code in every form and backend. The diagonal mechanisms need no wider pass: M = exp(sum of log gates) per channel and
// R_i = scale q_i ∘ exp(G_i), G_i the slice's cumulative log gate through token i. Rank 0 runs from the caller's initial
// state, so its end state already carries it and nobody else needs it.

extension Recurrence {
    /// This rank's slice of a context-parallel forward over `communicator`'s ranks (slice r holds the r-th contiguous
    /// tokens; lengths may differ, each >= 1): returns this slice's outputs `o [B,T_r,HV,V]` and the state after the
    /// whole sequence (the same on every rank). Rank 0's `initialState` starts the sequence; the others must have none.
    /// Every rank must call it with the same mechanism, sizes and options, or every rank throws naming the difference.
    /// Time O(T_r·K·V·B·HV) (delta rules: the slice runs at width V + K) plus O(ranks·B·HV·K·K·V) for the fold;
    /// exchanges ranks·B·HV·(K·K + K·V) floats (K + K·V without the delta rule; K more for linear_attn's normalizer).
    public static func contextParallelForward(_ mechanism: RecurrentMechanism, _ slice: RecurrenceInputs, form: RecurrenceForm,
                                              communicator: any Communicator) throws -> RecurrenceOutput {
        do {
            return try contextParallelRank(mechanism, slice, form: form, communicator)
        } catch {
            // A rank that stops fails the group, so the others' collectives throw instead of waiting out the timeout.
            communicator.abort(reason: "rank \(communicator.rank) failed: \(error)")
            throw error
        }
    }

    /// `forward(mechanism, inputs, form:)` computed by `ranks` in-process ranks, one thread each, on contiguous slices of
    /// `lengths` tokens (T split as evenly as possible when nil); a collective waits at most `timeout` seconds. Same
    /// outputs and final state up to rounding. O(forward) time over the ranks plus the fold.
    public static func contextParallelForward(_ mechanism: RecurrentMechanism, _ inputs: RecurrenceInputs, form: RecurrenceForm,
                                              ranks: Int, lengths: [Int]? = nil, timeout: Double = 3600) throws -> RecurrenceOutput {
        let d = try validate(mechanism, inputs)
        let outs = try contextParallelRun(mechanism, contextParallelSlices(inputs, ranks: ranks, lengths: lengths), form: form, timeout: timeout)
        // The slices' outputs back in one [B,T,HV,V] tensor.
        let row = d.HV * d.V
        var o = Allocation.zeros(d.B * d.T * row)
        var start = 0
        for out in outs {
            let n = out.o.shape[1]
            for b in 0..<d.B {
                o.replaceSubrange((b * d.T + start) * row..<(b * d.T + start + n) * row, with: out.o.scalars[b * n * row..<(b + 1) * n * row])
            }
            start += n
        }
        return RecurrenceOutput(o: Tensor(uncheckedShape: [d.B, d.T, d.HV, d.V], scalars: o), finalState: outs[0].finalState)
    }

    /// `inputs` cut into `ranks` contiguous slices of `lengths` tokens (as evenly as possible when nil): q, k, v, g and
    /// beta sliced, the initial state on slice 0 only. O(inputs).
    public static func contextParallelSlices(_ inputs: RecurrenceInputs, ranks: Int, lengths: [Int]? = nil) throws -> [RecurrenceInputs] {
        guard inputs.q.rank == 4 else { throw LineaError.shapeMismatch(argument: "q", expected: "[B,T,H,K]", actual: "\(inputs.q.shape)") }
        let lengths = try contextParallelLengths(T: inputs.q.shape[1], ranks: ranks, lengths: lengths)
        var start = 0
        return try lengths.enumerated().map { r, n in
            let range = start..<(start + n)
            start += n
            var x = inputs
            (x.q, x.k, x.v) = (try sliceTokens(inputs.q, range), try sliceTokens(inputs.k, range), try sliceTokens(inputs.v, range))
            x.g = try inputs.g.map { try sliceTokens($0, range) }
            x.beta = try inputs.beta.map { try sliceTokens($0, range) }
            if r > 0 { x.initialState = nil }
            return x
        }
    }

    /// Runs `contextParallelForward` on `slices` (one per rank, as `contextParallelSlices` cuts them) over an in-process
    /// group, one thread per rank; returns each rank's output, or throws the first rank's error. O(forward) over the ranks.
    public static func contextParallelRun(_ mechanism: RecurrentMechanism, _ slices: [RecurrenceInputs], form: RecurrenceForm,
                                          timeout: Double = 3600) throws -> [RecurrenceOutput] {
        try InProcessGroup(size: slices.count, timeout: timeout).run { c in
            try contextParallelForward(mechanism, slices[c.rank], form: form, communicator: c)
        }.map { try $0.get() }
    }

    /// The slice lengths of `ranks` ranks over `T` tokens: `lengths` checked (one per rank, each >= 1, summing to T),
    /// or T split as evenly as possible. O(ranks).
    public static func contextParallelLengths(T: Int, ranks: Int, lengths: [Int]? = nil) throws -> [Int] {
        guard ranks >= 1, ranks <= max(T, 1) else {
            throw LineaError.invalidArgument(argument: "ranks", expected: "1...\(max(T, 1)) (each rank needs at least one of the T = \(T) tokens)",
                                             actual: "\(ranks)")
        }
        guard let lengths else { return (0..<ranks).map { T * ($0 + 1) / ranks - T * $0 / ranks } }
        guard lengths.count == ranks, lengths.allSatisfy({ $0 >= 1 }), lengths.reduce(0, +) == T else {
            throw LineaError.invalidArgument(argument: "slice lengths", expected: "\(ranks) lengths >= 1 summing to T = \(T)", actual: "\(lengths)")
        }
        return lengths
    }

    /// Tokens `range` of a `[B,T,...]` tensor (the tensor itself for the whole range). O(B·range·inner).
    static func sliceTokens(_ x: Tensor, _ range: Range<Int>) throws -> Tensor {
        let (B, T) = (x.shape[0], x.shape[1])
        guard range != 0..<T else { return x }
        guard range.lowerBound >= 0, range.upperBound <= T else {
            throw LineaError.invalidArgument(argument: "token range", expected: "within 0..<\(T)", actual: "\(range)")
        }
        let inner = x.shape.dropFirst(2).reduce(1, *), n = range.count * inner
        var out = Allocation.zeros(B * n)
        out.withUnsafeMutableBufferPointer { out in x.withUnsafeBufferPointer { x in
            for b in 0..<B where n > 0 { (out.baseAddress! + b * n).update(from: x.baseAddress! + (b * T + range.lowerBound) * inner, count: n) }
        } }
        return Tensor(uncheckedShape: [B, range.count] + Array(x.shape.dropFirst(2)), scalars: out)
    }

    /// The steps of `contextParallelForward` on one rank (see the comment at the top of the file).
    private static func contextParallelRank(_ mechanism: RecurrentMechanism, _ slice: RecurrenceInputs, form: RecurrenceForm,
                                            _ c: any Communicator) throws -> RecurrenceOutput {
        let d = try validate(mechanism, slice)
        try checkForm(form)
        let scale = slice.scale ?? 1 / Float(d.K).squareRoot()
        // 1. Agree on the problem: every rank sees every rank's header and throws the same error on a difference.
        let header = ContextParallelHeader(mechanism, slice, d, scale: scale)
        try ContextParallelHeader.check(try c.allGather(header.encoded), size: c.size)
        let (B, T, HV, K, V) = (d.B, d.T, d.HV, d.K, d.V)
        let heads = B * HV
        if heads * V == 0 {
            return RecurrenceOutput(o: try Tensor(zeros: [B, T, HV, V]), finalState: try Tensor(zeros: [B, HV, K, V]))
        }
        // 2. The slice from rank 0's initial state or from zero: outputs o⁰, end state E, transition M (K x K per head for
        // the delta rules, a diagonal of K otherwise), and for the delta rules the readout R (K columns of `widened`).
        let full = mechanism.isDelta
        let width = full ? K * K : K
        var x = slice
        (x.validate, x.allowNonFiniteOutputs, x.normalize) = (false, true, false)
        var transition = [Float](repeating: 0, count: heads * width)
        var widened: Tensor?, diagonal: [Float] = []
        var o: [Float], end: [Float]
        if c.rank > 0 && full {
            let wide = try forward(mechanism, widenedForTransition(x, d), form: form)
            o = columns(wide.o.scalars, width: V + K, 0..<V)
            (end, transition) = (columns(wide.finalState.scalars, width: V + K, 0..<V), columns(wide.finalState.scalars, width: V + K, V..<V + K))
            widened = wide.o
        } else {
            if c.rank > 0 { x.initialState = nil }
            let out = try forward(mechanism, x, form: form)
            (o, end) = (out.o.scalars, out.finalState.scalars)
            if c.rank > 0 { (diagonal, transition) = diagonalReadout(mechanism, x, d, scale: scale) }
        }
        // 3. Exchange (M, E) (and linear_attn's key sums for its normalizer), then fold: S = E_0, S <- M_j S + E_j for each
        // later rank j; this rank's initial state is S before its own step, the final state S after the last.
        let keys = slice.normalize ? keySums(x, d) : []
        let all = try c.allGather(transition + end + keys)
        let (per, e, z) = (transition.count + end.count + keys.count, transition.count, transition.count + end.count)
        var state = Array(all[e..<z])
        var initial: [Float]?
        var keysBefore = [Float](repeating: 0, count: keys.count)
        for j in 1..<c.size {
            if j == c.rank { initial = state }
            state = foldStep(all[(j * per)..<(j * per + e)], all[(j * per + e)..<(j * per + z)], state, full: full, heads: heads, K: K, V: V)
        }
        for j in 0..<c.rank {
            for i in keysBefore.indices { keysBefore[i] += all[j * per + z + i] }
        }
        // 4. o_i += R_i S_initial.
        if let initial {
            if let widened {
                addReadout(widened.scalars, offset: V, ld: HV * (V + K), initial, &o, d)
            } else {
                addReadout(diagonal, offset: 0, ld: HV * K, initial, &o, d)
            }
        }
        if slice.normalize { normalize(&o, x, d, scale: scale, keysBefore: keysBefore) }
        let out = RecurrenceOutput(o: Tensor(uncheckedShape: [B, T, HV, V], scalars: o), finalState: Tensor(uncheckedShape: [B, HV, K, V], scalars: state))
        if slice.validate && !slice.allowNonFiniteOutputs {
            let hint = nonFiniteHint(mechanism, l2Normalized: slice.useQKL2Norm)
            try out.o.checkFiniteOutput("o", hint: hint)
            try out.finalState.checkFiniteOutput("final_state", hint: hint)
        }
        return out
    }

    /// Columns `range` of every row of a row-major array whose rows are `width` floats. O(rows·range).
    private static func columns(_ x: [Float], width: Int, _ range: Range<Int>) -> [Float] {
        let rows = x.count / width
        var out = Allocation.zeros(rows * range.count)
        out.withUnsafeMutableBufferPointer { out in x.withUnsafeBufferPointer { x in
            for row in 0..<rows { (out.baseAddress! + row * range.count).update(from: x.baseAddress! + row * width + range.lowerBound, count: range.count) }
        } }
        return out
    }

    /// `x` with values `[v | 0]` (`[B,T,HV,V+K]`) from the initial state `[0 | I]` (`[B,HV,K,V+K]`): run forward, its
    /// right K columns give the transition (final state) and the readout (outputs). O(B·T·HV·(V+K) + B·HV·K·(V+K)).
    private static func widenedForTransition(_ x: RecurrenceInputs, _ d: RecurrenceDims) throws -> RecurrenceInputs {
        let (K, V, W) = (d.K, d.V, d.V + d.K)
        try MemoryBudget.check([.init("widened values", [d.B, d.T, d.HV, W]), .init("widened outputs", [d.B, d.T, d.HV, W])])
        var values = Allocation.zeros(d.B * d.T * d.HV * W)
        values.withUnsafeMutableBufferPointer { out in x.v.withUnsafeBufferPointer { v in
            for row in 0..<(d.B * d.T * d.HV) { (out.baseAddress! + row * W).update(from: v.baseAddress! + row * V, count: V) }
        } }
        var state = Allocation.zeros(d.B * d.HV * K * W)
        for head in 0..<(d.B * d.HV) {
            for i in 0..<K { state[(head * K + i) * W + V + i] = 1 }
        }
        var wide = x
        wide.v = Tensor(uncheckedShape: [d.B, d.T, d.HV, W], scalars: values)
        wide.initialState = Tensor(uncheckedShape: [d.B, d.HV, K, W], scalars: state)
        return wide
    }

    /// For a slice without the delta rule: the readout `R_i = scale q_i ∘ exp(G_i)` (`[B,T,HV,K]`, q L2-normalized when
    /// asked; G_i the cumulative log gate through token i, the decay coming before the read) and the diagonal transition
    /// `exp(G_T)` (`[B,HV,K]`). Cumulative gates in Float64; heads in parallel. O(B·T·HV·K).
    private static func diagonalReadout(_ m: RecurrentMechanism, _ x: RecurrenceInputs, _ d: RecurrenceDims, scale: Float)
        -> (readout: [Float], transition: [Float]) {
        let q = x.useQKL2Norm ? FastProblem.l2Normalized(x.q.scalars, rowLength: d.K) : x.q.scalars
        var readout = Allocation.zeros(d.B * d.T * d.HV * d.K), transition = [Float](repeating: 0, count: d.B * d.HV * d.K)
        let (K, vector) = (d.K, m.gateKind == .vector)
        let gates = x.g?.scalars ?? []
        q.withUnsafeBufferPointer { q in gates.withUnsafeBufferPointer { g in
        readout.withUnsafeMutableBufferPointer { r in transition.withUnsafeMutableBufferPointer { tr in
            let (q, g, r, tr) = (SendableConstPointer(q.baseAddress!), SendableConstPointer(g.baseAddress ?? q.baseAddress!),
                                 SendablePointer(r.baseAddress!), SendablePointer(tr.baseAddress!))
            Parallel.forEach(d.B * d.HV) { bh in
                let (b, hv) = (bh / d.HV, bh % d.HV)
                var G = [Double](repeating: 0, count: K), logDecay = [Float](repeating: 0, count: K), decay = [Float](repeating: 0, count: K)
                for t in 0..<d.T {
                    let row = (b * d.T + t) * d.HV + hv, keyRow = (b * d.T + t) * d.H + hv / d.group
                    switch m.gateKind {
                    case .none: break
                    case .perHead: G[0] += retentionLogDecay(head: hv)
                    case .scalar: G[0] += Double(g.base[row])
                    case .vector: G.withUnsafeMutableBufferPointer { RecurrenceSIMD.accumulate($0.baseAddress!, $0.baseAddress!, g.base + row * K, K) }
                    }
                    if vector {
                        for c in 0..<K { logDecay[c] = Float(G[c]) }
                        RecurrenceSIMD.expInto(&decay, logDecay, K)
                    } else {
                        decay.withUnsafeMutableBufferPointer { $0.update(repeating: Float(exp(G[0]))) }
                    }
                    for c in 0..<K { r.base[row * K + c] = scale * q.base[keyRow * K + c] * decay[c] }
                    if t == d.T - 1 { (tr.base + bh * K).update(from: decay, count: K) }
                }
            }
        } } } }
        return (readout, transition)
    }

    /// linear_attn: the sum of the keys each value head reads over the slice, `[B,HV,K]` (L2-normalized keys when asked).
    /// O(B·T·HV·K).
    private static func keySums(_ x: RecurrenceInputs, _ d: RecurrenceDims) -> [Float] {
        let k = x.useQKL2Norm ? FastProblem.l2Normalized(x.k.scalars, rowLength: d.K) : x.k.scalars
        var sums = [Float](repeating: 0, count: d.B * d.HV * d.K)
        for b in 0..<d.B {
            for t in 0..<d.T {
                for hv in 0..<d.HV {
                    let (key, sum) = (((b * d.T + t) * d.H + hv / d.group) * d.K, (b * d.HV + hv) * d.K)
                    for c in 0..<d.K { sums[sum + c] += k[key + c] }
                }
            }
        }
        return sums
    }

    /// linear_attn's normalizer on a slice: `normalizeLinearAttention` with the earlier ranks' key sums
    /// `keysBefore [B,HV,K]` (q and k L2-normalized first with `useQKL2Norm`). O(B·T·HV·(K+V)).
    private static func normalize(_ o: inout [Float], _ x: RecurrenceInputs, _ d: RecurrenceDims, scale: Float, keysBefore: [Float]) {
        let q = x.useQKL2Norm ? FastProblem.l2Normalized(x.q.scalars, rowLength: d.K) : x.q.scalars
        let k = x.useQKL2Norm ? FastProblem.l2Normalized(x.k.scalars, rowLength: d.K) : x.k.scalars
        o.withUnsafeMutableBufferPointer { o in q.withUnsafeBufferPointer { q in k.withUnsafeBufferPointer { k in
            guard let ob = o.baseAddress, let qb = q.baseAddress, let kb = k.baseAddress else { return }
            keysBefore.withUnsafeBufferPointer { before in
                normalizeLinearAttention(ob, q: qb, k: kb, dims: d, scale: scale, keysBefore: before.baseAddress)
            }
        } } }
    }

    /// One fold step `S <- M S + E` over every head: M full K x K (`full`) or diagonal (K). O(heads·K·K·V) or O(heads·K·V).
    private static func foldStep(_ m: ArraySlice<Float>, _ e: ArraySlice<Float>, _ s: [Float], full: Bool, heads: Int, K: Int, V: Int) -> [Float] {
        var next = Array(e)
        m.withUnsafeBufferPointer { m in s.withUnsafeBufferPointer { s in next.withUnsafeMutableBufferPointer { n in
            let (m, s, n) = (m.baseAddress!, s.baseAddress!, n.baseAddress!)
            for head in 0..<heads {
                if full {
                    BLAS.sgemm(m: K, n: V, k: K, a: m + head * K * K, lda: K, b: s + head * K * V, ldb: V, beta: 1, c: n + head * K * V, ldc: V)
                } else {
                    for i in 0..<K { RecurrenceSIMD.axpy(n + (head * K + i) * V, m[head * K + i], s + (head * K + i) * V, V) }
                }
            }
        } } }
        return next
    }

    /// `o[b,t,hv,:] += R[b,t,hv,:] S[b,hv]` with R's rows K wide at `offset`, `ld` floats apart per token: one
    /// T x K x V product per head. O(B·HV·T·K·V).
    private static func addReadout(_ r: [Float], offset: Int, ld: Int, _ s: [Float], _ o: inout [Float], _ d: RecurrenceDims) {
        let rowStride = ld / d.HV  // floats per (token, head) row of R
        r.withUnsafeBufferPointer { r in s.withUnsafeBufferPointer { s in o.withUnsafeMutableBufferPointer { o in
            for b in 0..<d.B {
                for hv in 0..<d.HV {
                    let row = b * d.T * d.HV + hv
                    BLAS.sgemm(m: d.T, n: d.V, k: d.K, a: r.baseAddress! + row * rowStride + offset, lda: ld,
                               b: s.baseAddress! + (b * d.HV + hv) * d.K * d.V, ldb: d.V, beta: 1,
                               c: o.baseAddress! + row * d.V, ldc: d.HV * d.V)
                }
            }
        } } }
    }
}

/// What every rank of a context-parallel forward must agree on (and its slice length), sent as one small all-gather.
struct ContextParallelHeader {
    /// Field names, in the order sent; `T` and `initial_state` may differ between ranks (checked on their own).
    static let fields = ["mechanism", "B", "H", "HV", "K", "V", "T", "initial_state", "scale", "qk L2 norm", "in-kernel activations",
                         "lower_bound", "A_log", "dt_bias", "normalize"]
    /// The fields as integers (scale and lower_bound as their bit patterns).
    let values: [Int]

    init(_ m: RecurrentMechanism, _ x: RecurrenceInputs, _ d: RecurrenceDims, scale: Float) {
        let a = x.activations
        let activations = (a.gateInKernel ? 1 : 0) | (a.betaSigmoid ? 2 : 0) | (a.allowNegEigval ? 4 : 0)
        values = [RecurrentMechanism.allCases.firstIndex(of: m)!, d.B, d.H, d.HV, d.K, d.V, d.T, x.initialState == nil ? 0 : 1,
                  Int(scale.bitPattern), x.useQKL2Norm ? 1 : 0, activations, Int(a.lowerBound?.bitPattern ?? 0),
                  x.aLog == nil ? 0 : 1, x.dtBias == nil ? 0 : 1, x.normalize ? 1 : 0]
    }

    /// The values as floats carrying their 32 bits (sizes fit: a tensor has fewer than 2^32 rows). O(fields).
    var encoded: [Float] { values.map { Float(bitPattern: UInt32(truncatingIfNeeded: $0)) } }

    /// Throws, identically on every rank, for the first field a rank disagrees on with rank 0, a rank with no tokens, or
    /// an initial state past rank 0. O(size·fields).
    static func check(_ gathered: [Float], size: Int) throws {
        let n = fields.count
        func value(_ r: Int, _ f: Int) -> Int { Int(gathered[r * n + f].bitPattern) }
        func describe(_ r: Int, _ f: Int) -> String {
            switch fields[f] {
            case "mechanism": RecurrentMechanism.allCases[min(value(r, f), RecurrentMechanism.allCases.count - 1)].rawValue
            case "scale", "lower_bound": "\(Float(bitPattern: UInt32(value(r, f))))"
            default: "\(value(r, f))"
            }
        }
        for r in 1..<max(size, 1) {
            for f in 0..<n where !["T", "initial_state"].contains(fields[f]) && value(r, f) != value(0, f) {
                throw LineaError.invalidArgument(argument: "\(fields[f]) on rank \(r)", expected: "\(describe(0, f)) as on rank 0",
                                                 actual: describe(r, f))
            }
        }
        let (t, initial) = (fields.firstIndex(of: "T")!, fields.firstIndex(of: "initial_state")!)
        if let r = (0..<size).first(where: { value($0, t) == 0 }) {
            throw LineaError.invalidArgument(argument: "ranks", expected: "at most one rank per token (each slice >= 1 token)",
                                             actual: "\(size) ranks, rank \(r) with 0 tokens")
        }
        if let r = (1..<max(size, 1)).first(where: { value($0, initial) != 0 }) {
            throw LineaError.invalidArgument(argument: "initial_state on rank \(r)", expected: "none (rank 0's initial state starts the sequence)",
                                             actual: "a state")
        }
    }
}

extension RecurrenceFamily {
    /// `run(form, ...)` on host tensors over `ranks` in-process context-parallel ranks (`linea op --context-parallel`):
    /// o and final_state in f32. The step form is refused; `auto` runs chunked. O(forward).
    package func runContextParallel(_ form: String, _ x: [String: Tensor], options: OpOptions, ranks: Int) throws -> [String: Tensor] {
        try check(form: form, options: options)
        let (parsed, step) = try Self.parse(form)
        if step {
            throw LineaError.invalidArgument(argument: "--form", expected: "a whole-sequence form with --context-parallel", actual: "step")
        }
        let out = try Recurrence.contextParallelForward(mechanism, hostInputs(x, options: options),
                                                        form: parsed ?? .chunked(size: RecurrenceForm.defaultChunkSize), ranks: ranks)
        return ["o": out.o, "final_state": out.finalState]
    }
}
