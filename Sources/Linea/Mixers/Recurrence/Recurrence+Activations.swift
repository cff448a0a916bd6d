import Foundation

// fla's in-kernel activations of kda (chunk_kda, fused_recurrent_kda): the gate and beta arrive before their
// activation, with the per-head parameters A_log [HV] and dt_bias [HV*K]. The reference applies them in Float64 token
// by token; the fast forms and the step apply them in Float32 (vectorized) before the recurrence, as they do the
// qk L2 normalization.

/// fla's in-kernel activations of kda's raw gate and beta (`use_gate_in_kernel`, `lower_bound`,
/// `use_beta_sigmoid_in_kernel`, `allow_neg_eigval`); all off by default.
public struct InKernelActivations: Sendable, Equatable {
    /// `use_gate_in_kernel`: g is the raw gate and the log decay is `-exp(A_log[hv]) · softplus(g + dt_bias[hv·K + c])`
    /// (torch's softplus: x above 20), or `lowerBound · sigmoid(exp(A_log[hv]) · (g + dt_bias))` with `lowerBound`.
    public var gateInKernel = false
    /// fla's `lower_bound` (finite, < 0; needs `gateInKernel`): the sigmoid gate above, in `(lowerBound, 0)`; A_log
    /// may then be absent (a factor of 1).
    public var lowerBound: Float?
    /// `use_beta_sigmoid_in_kernel`: beta is given as logits, `beta = sigmoid(beta)`.
    public var betaSigmoid = false
    /// `allow_neg_eigval` (needs `betaSigmoid`): `beta = 2 · sigmoid(beta)`.
    public var allowNegEigval = false

    /// The options; see the properties. O(1).
    public init(gateInKernel: Bool = false, lowerBound: Float? = nil, betaSigmoid: Bool = false, allowNegEigval: Bool = false) {
        (self.gateInKernel, self.lowerBound, self.betaSigmoid, self.allowNegEigval) = (gateInKernel, lowerBound, betaSigmoid, allowNegEigval)
    }

    /// Whether every option is off (the inputs are taken as activated). O(1).
    public var isEmpty: Bool { self == InKernelActivations() }

    /// Throws for a lower bound that is not finite and < 0 or comes without the gate, and for allow_neg_eigval without
    /// the beta sigmoid (fla's chunk_kda checks). O(1).
    public func check() throws {
        if let bound = lowerBound {
            if !gateInKernel { throw LineaError.invalidArgument(argument: "lower_bound", expected: "use_gate_in_kernel", actual: "\(bound) without it") }
            if !(bound.isFinite && bound < 0) { throw LineaError.invalidArgument(argument: "lower_bound", expected: "a finite number < 0", actual: "\(bound)") }
        }
        if allowNegEigval && !betaSigmoid {
            throw LineaError.invalidArgument(argument: "allow_neg_eigval", expected: "use_beta_sigmoid_in_kernel", actual: "without it")
        }
    }

    /// The log gate of raw `x` in Float64 (the reference): `a` is `exp(A_log)` (1 without A_log), `bias` dt_bias's entry.
    func gate(_ x: Double, a: Double, bias: Double) -> Double {
        if let lowerBound { return Double(lowerBound) * ReferenceOps.sigmoid(a * (x + bias)) }
        return -a * ReferenceOps.softplus(x + bias)
    }

    /// Beta from logit `x` in Float64 (the reference).
    func beta(_ x: Double) -> Double { (allowNegEigval ? 2 : 1) * ReferenceOps.sigmoid(x) }

    /// Log gates of the raw `g` (rows of K per token and value head, value heads cycling every HV rows) written to
    /// `out`, split over the cores; `aLog [HV]` and `dtBias [HV·K]` optional. O(count).
    package func activateGates(_ g: UnsafePointer<Float>, count: Int, HV: Int, K: Int, aLog: UnsafePointer<Float>?,
                               dtBias: UnsafePointer<Float>?, into out: UnsafeMutablePointer<Float>) {
        let p = CPUOps.Unchecked(value: (g, aLog, dtBias, out))
        CPUOps.forRows(count / K, width: K) { rows in
            let (g, aLog, dtBias, out) = p.value
            for row in rows { activateGateRow(g + row * K, head: row % HV, K: K, aLog: aLog, dtBias: dtBias, into: out + row * K) }
        }
    }

    /// The K log gates of value head `hv` from the raw row `g`, vectorized. Kept finite: a gate that overflows Float32
    /// becomes `-Float.greatestFiniteMagnitude` (a decay of 0 either way). O(K).
    @inline(__always)
    func activateGateRow(_ g: UnsafePointer<Float>, head hv: Int, K: Int, aLog: UnsafePointer<Float>?, dtBias: UnsafePointer<Float>?,
                         into out: UnsafeMutablePointer<Float>) {
        let a = aLog.map { Foundation.exp($0[hv]) } ?? 1
        CPUOps.forVectors(K) { c, n in
            let x = CPUOps.load8(g + c, n) + (dtBias.map { CPUOps.load8($0 + hv * K + c, n) } ?? SIMD8())
            CPUOps.store8(gate8(x, a: a), out + c, n)
        }
    }

    /// `gate` on 8 lanes in Float32 (`x` already biased).
    @inline(__always)
    func gate8(_ x: SIMD8<Float>, a: Float) -> SIMD8<Float> {
        if let lowerBound { return lowerBound * CPUOps.sigmoid8(a * x) }
        let s = Self.softplus8(x)
        var r = -(a * s)
        r.replace(with: 0, where: s .== 0)  // exp(A_log) = inf times a softplus of 0: no NaN
        r.replace(with: -.greatestFiniteMagnitude, where: r .< -.greatestFiniteMagnitude)
        return r
    }

    /// Betas from the logits `beta` written to `out`. O(count).
    package func activateBetas(_ beta: UnsafePointer<Float>, count: Int, into out: UnsafeMutablePointer<Float>) {
        let p = CPUOps.Unchecked(value: (beta, out))
        CPUOps.forRows((count + 7) / 8, width: 8) { blocks in
            CPUOps.forVectors(min(count, blocks.upperBound * 8) - blocks.lowerBound * 8) { j, n in
                let i = blocks.lowerBound * 8 + j
                CPUOps.store8(beta8(CPUOps.load8(p.value.0 + i, n)), p.value.1 + i, n)
            }
        }
    }

    /// `beta` on 8 lanes in Float32 (the step takes lane 0 of a splat, so every form sees one formula).
    @inline(__always)
    func beta8(_ x: SIMD8<Float>) -> SIMD8<Float> { (allowNegEigval ? 2 : 1) * CPUOps.sigmoid8(x) }

    /// `g` and `beta` (`[B,T,HV,K]`, `[B,T,HV]`) activated as asked, or as given; the fast host forms' pre-pass. O(inputs).
    func activated(g: [Float]?, beta: [Float]?, HV: Int, K: Int, aLog: Tensor?, dtBias: Tensor?) -> (g: [Float]?, beta: [Float]?) {
        func apply(_ x: [Float]?, _ on: Bool, _ body: (UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void) -> [Float]? {
            guard on, let x, !x.isEmpty else { return x }
            return [Float](unsafeUninitializedCapacity: x.count) { out, n in
                x.withUnsafeBufferPointer { if let base = $0.baseAddress { body(base, out.baseAddress!) } }
                n = x.count
            }
        }
        let g = apply(g, gateInKernel) { x, out in
            (aLog?.scalars ?? []).withUnsafeBufferPointer { a in (dtBias?.scalars ?? []).withUnsafeBufferPointer { b in
                activateGates(x, count: g!.count, HV: HV, K: K, aLog: aLog == nil ? nil : a.baseAddress, dtBias: dtBias == nil ? nil : b.baseAddress,
                              into: out)
            } }
        }
        return (g, apply(beta, betaSigmoid) { x, out in activateBetas(x, count: beta!.count, into: out) })
    }

    /// torch's softplus on 8 lanes: `x` above 20, else `max(x, 0) + log1p(e^-|x|)`, with `log1p(t) = 2 atanh(t / (2 + t))`
    /// as its series (t in (0, 1], so s = t/(2+t) <= 1/3: eight terms reach Float32's precision, also for tiny t).
    @inline(__always)
    static func softplus8(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let negative = x .< 0
        let t = VectorMath.exp(x.replacing(with: -x, where: .!negative))
        let s = t / (2 + t), s2 = s * s
        var p = SIMD8<Float>(repeating: 1.0 / 13).addingProduct(s2, 1.0 / 15)  // sum_k s^2k / (2k+1), k <= 7, by Horner
        for c: Float in [1.0 / 11, 1.0 / 9, 1.0 / 7, 1.0 / 5, 1.0 / 3, 1] { p = SIMD8(repeating: c).addingProduct(p, s2) }
        var r = (2 * s * p) + x.replacing(with: 0, where: negative)
        r.replace(with: x, where: x .> 20)
        return r
    }
}

extension Recurrence {
    /// Checks the in-kernel activations of a call with `HV` value heads of `K` keys: only kda takes them; A_log `[HV]`
    /// and dt_bias `[HV·K]` only with `gateInKernel`, A_log required unless a lower bound is set; then the options
    /// themselves (`InKernelActivations.check`). Allocation-free when nothing is set. O(1).
    static func checkActivations(_ mechanism: RecurrentMechanism, _ a: InKernelActivations, aLog: [Int]?, dtBias: [Int]?,
                                 HV: Int, K: Int) throws {
        guard !a.isEmpty || aLog != nil || dtBias != nil else { return }
        if mechanism != .kda {
            throw LineaError.invalidArgument(argument: "use_gate_in_kernel", expected: "kda (the in-kernel gate, beta sigmoid, A_log and dt_bias are kda's)",
                                             actual: mechanism.rawValue)
        }
        for (name, shape, want) in [("A_log", aLog, [HV]), ("dt_bias", dtBias, [HV * K])] {
            guard let shape else { continue }
            if !a.gateInKernel {
                throw LineaError.invalidArgument(argument: name, expected: "none without use_gate_in_kernel", actual: "shape \(shape)")
            }
            if shape != want {
                throw LineaError.shapeMismatch(argument: name, expected: name == "A_log" ? "[HV] = \(want)" : "[HV*K] = \(want)", actual: "\(shape)")
            }
        }
        if a.gateInKernel && aLog == nil && a.lowerBound == nil {
            throw LineaError.invalidArgument(argument: "A_log", expected: "[HV] = [\(HV)] for use_gate_in_kernel (optional only with a lower_bound)",
                                             actual: "none")
        }
        try a.check()
    }
}

extension RecurrenceInputs {
    /// Random kda inputs for the in-kernel `activations`: with the gate inside, a raw gate N(0, 1), `A_log = log U(1, 16)`
    /// and `dt_bias` uniform in `[-6.9, -2.25] + gateShift` (fla's KimiDeltaAttention initialization: softplus⁻¹ of dt
    /// in [1e-3, 0.1]; a shift of 8 gives steep gates, -1 to -100 per token), A_log left out when `aLog` is false and a
    /// lower bound allows it; with the beta sigmoid, beta logits N(0, 2²). Same numbers on every machine for a `seed`.
    /// O(B·T·HV·(K+V)).
    package static func randomKDA(B: Int, T: Int, H: Int, HV: Int, K: Int, V: Int, seed: UInt64, activations: InKernelActivations,
                                  gateShift: Float = 0, aLog: Bool = true) throws -> RecurrenceInputs {
        var x = try random(.kda, B: B, T: T, H: H, HV: HV, K: K, V: V, seed: seed)
        x.activations = activations
        if activations.gateInKernel {
            x.g = try .randomNormal([B, T, HV, K], seed: seed &+ 6)
            if aLog || activations.lowerBound == nil {
                x.aLog = try Tensor(shape: [HV], scalars: Tensor.randomUniform([HV], seed: seed &+ 7, in: 1...16).scalars.map { Foundation.log($0) })
            }
            x.dtBias = try .randomUniform([HV * K], seed: seed &+ 8, in: (-6.9 + gateShift)...(-2.25 + gateShift))
        }
        if activations.betaSigmoid { x.beta = try .randomNormal([B, T, HV], seed: seed &+ 9, scale: 2) }
        return x
    }
}
