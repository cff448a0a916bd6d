import Foundation

// Gated linear recurrences: every mechanism here is an instance of
//
//     S_t = Diag(a_t) S_{t-1} (I - b_t k_t k_t^T) + b_t k_t v_t^T,    o_t = (scale * q_t)^T S_t
//
// with S a K x V state per (batch, head), decay applied first, then the (delta) write, and the output read
// from the updated state S_t (fla's fused_recurrent order). Three forms give the same numbers:
// `reference` (Float64 loop, the oracle), `recurrent` (Float32 scan, O(K*V) memory) and `chunked` (GEMMs).

/// The seven recurrences of the `S_t = Diag(a_t) S_{t-1} (I - b_t k_t k_t^T) + b_t k_t v_t^T` family (fla names).
public enum RecurrentMechanism: String, CaseIterable, Sendable {
    /// `a = 1`, plain `k v^T` add; optional normalizer (`RecurrenceInputs.normalize`).
    case linearAttention = "linear_attn"
    /// Fixed decay per head `gamma_h = 1 - 2^(-5-h)` (fla's chunk_retention).
    case retention
    /// Scalar log gate `g [B,T,HV]`: `S_t = exp(g_t) S_{t-1} + k v^T` (Mamba-2 SSD core).
    case simpleGLA = "simple_gla"
    /// Vector log gate `g [B,T,HV,K]`: `S_t = Diag(exp(g_t)) S_{t-1} + k v^T`.
    case gla
    /// `S_t = S_{t-1} - beta_t k_t (k_t^T S_{t-1}) + beta_t k_t v_t^T` (DeltaNet), `beta [B,T,HV]`.
    case deltaRule = "delta_rule"
    /// `S_t = exp(g_t) S_{t-1}`, then the delta update (Gated DeltaNet), `g, beta [B,T,HV]`.
    case gatedDeltaRule = "gated_delta_rule"
    /// `S_t = Diag(exp(g_t)) S_{t-1}`, then the delta update (Kimi Delta Attention), `g [B,T,HV,K]`, `beta [B,T,HV]`.
    case kda
}

/// Which algorithm computes a recurrence; all give the same numbers up to rounding.
public enum RecurrenceForm: Sendable, Equatable {
    /// Per-token loop with Float64 accumulation: the oracle. O(T*K*V) time per (b,h).
    case reference
    /// Float32 scan over T with O(K*V) memory per (b,h). O(T*K*V) time.
    case recurrent
    /// Chunks of `size` tokens: masked decay-weighted GEMMs inside a chunk, the state carried between chunks.
    /// O(T*(K*V + size*(K+V))) time per (b,h).
    case chunked(size: Int)
    /// The chunk size used when a caller does not choose one.
    public static let defaultChunkSize = 64
}

/// Inputs of one recurrence call, in fla's layout (sequence-major, heads inside). Value heads `HV` are a multiple of
/// the query/key heads `H` (grouped value heads, fla's GVA): value head `hv` reads q/k head `hv / (HV/H)`.
public struct RecurrenceInputs: Sendable {
    /// Queries `[B,T,H,K]`, keys `[B,T,H,K]`, values `[B,T,HV,V]`.
    public var q: Tensor, k: Tensor, v: Tensor
    /// Log-space gate (`<= 0`): `[B,T,HV]` for simple_gla and gated_delta_rule, `[B,T,HV,K]` for gla; nil otherwise.
    public var g: Tensor?
    /// Delta-rule write strength in `[0,2]` (above 1: fla's `allow_neg_eigval`), `[B,T,HV]`; nil for the non-delta mechanisms.
    public var beta: Tensor?
    /// State before the first token, `[B,HV,K,V]`; zeros when nil.
    public var initialState: Tensor?
    /// Query scale; `1/sqrt(K)` when nil.
    public var scale: Float?
    /// linear_attn only: divide `o_t` by `(scale*q_t)·z_t + 1e-10` with `z_t = sum_{s<=t} k_s` (fla's
    /// `normalize=True`). `z` starts at zero in every call (no carried normalizer state), so a split
    /// sequence equals one call only without `normalize`.
    public var normalize: Bool = false
    /// L2-normalize q and k per token inside (`x / sqrt(sum x^2 + 1e-6)`, fla's use_qk_l2norm_in_kernel),
    /// before `scale`. Meant for the delta rules; accepted by every mechanism.
    public var useQKL2Norm: Bool = false
    /// kda: fla's in-kernel activations of a raw `g` and `beta` (use_gate_in_kernel, use_beta_sigmoid_in_kernel...).
    public var activations = InKernelActivations()
    /// kda with `activations.gateInKernel`: fla's `A_log [HV]` (optional with a lower bound) and `dt_bias [HV*K]`.
    public var aLog: Tensor?, dtBias: Tensor?
    /// Check `g <= 0`, `beta` in `[0,2]` and that every input is finite, and after the call that `o` and the final
    /// state are (O(inputs + outputs)); off only for trusted inputs.
    public var validate: Bool = true
    /// With `validate`, return NaN or infinite outputs instead of throwing `LineaError.nonFinite`.
    public var allowNonFiniteOutputs: Bool = false

    /// Gathers the inputs; options (`normalize`, `useQKL2Norm`, `activations`, `validate`) are set on the value afterwards.
    public init(q: Tensor, k: Tensor, v: Tensor, g: Tensor? = nil, beta: Tensor? = nil, initialState: Tensor? = nil, scale: Float? = nil) {
        self.q = q
        self.k = k
        self.v = v
        self.g = g
        self.beta = beta
        self.initialState = initialState
        self.scale = scale
    }
}

extension RecurrenceInputs {
    /// These inputs with q and k L2-normalized per token (`x / sqrt(sum x^2 + 1e-6)`, what `useQKL2Norm` asks the
    /// forms to do inside) and `useQKL2Norm` off. O(B·T·H·K).
    public func qkL2Normalized() throws -> RecurrenceInputs {
        var x = self
        let K = q.shape.last ?? 1
        x.q = try Tensor(shape: q.shape, scalars: FastProblem.l2Normalized(q.scalars, rowLength: K))
        x.k = try Tensor(shape: k.shape, scalars: FastProblem.l2Normalized(k.scalars, rowLength: K))
        x.useQKL2Norm = false
        return x
    }

    /// Random inputs in the ranges real models use: unit-norm keys for the delta rules, gates in `gateRange`,
    /// beta in [0, 1], a random initial state (N(0, 0.1²)); `HV` value heads (H when nil). Same numbers on every
    /// machine for a `seed`. O(B·T·(H·K + HV·V)).
    public static func random(_ r: RecurrentMechanism, B: Int, T: Int, H: Int, HV: Int? = nil, K: Int, V: Int, seed: UInt64,
                             gateRange: ClosedRange<Float> = -1...(-1e-4), initialState: Bool = true) throws -> RecurrenceInputs {
        guard K >= 1 else { throw LineaError.invalidArgument(argument: "K", expected: ">= 1", actual: "\(K)") }
        let HV = HV ?? H
        let q = try Tensor.randomNormal([B, T, H, K], seed: seed)
        var k = try Tensor.randomNormal([B, T, H, K], seed: seed &+ 1)
        if r.isDelta {
            // The delta rules take L2-normalized keys.
            for row in stride(from: 0, to: k.count, by: K) {
                let norm = (k.scalars[row..<row + K].reduce(0) { $0 + $1 * $1 }).squareRoot()
                for i in row..<row + K { k.scalars[i] /= max(norm, 1e-6) }
            }
        }
        var inputs = RecurrenceInputs(q: q, k: k, v: try Tensor.randomNormal([B, T, HV, V], seed: seed &+ 2))
        switch r {
        case .simpleGLA, .gatedDeltaRule: inputs.g = try Tensor.randomUniform([B, T, HV], seed: seed &+ 3, in: gateRange)
        case .gla, .kda: inputs.g = try Tensor.randomUniform([B, T, HV, K], seed: seed &+ 3, in: gateRange)
        default: break
        }
        if r.isDelta { inputs.beta = try Tensor.randomUniform([B, T, HV], seed: seed &+ 4) }
        if initialState { inputs.initialState = try Tensor.randomNormal([B, HV, K, V], seed: seed &+ 5, scale: 0.1) }
        return inputs
    }
}

/// Result of a recurrence call: outputs `o [B,T,HV,V]` and the state after the last token `finalState [B,HV,K,V]`.
public struct RecurrenceOutput: Sendable {
    /// Outputs `[B,T,HV,V]`.
    public var o: Tensor
    /// State after the last token, `[B,HV,K,V]` (the initial state when T = 0).
    public var finalState: Tensor

    /// Wraps outputs and final state (shapes are the caller's responsibility).
    public init(o: Tensor, finalState: Tensor) {
        self.o = o
        self.finalState = finalState
    }
}

/// Entry point for the gated linear recurrences.
public enum Recurrence {
    /// Runs `mechanism` over the whole sequence in the chosen `form`; throws `LineaError` naming the bad argument.
    /// Time O(B*HV*T*K*V) for every form (chunked adds O(B*HV*T*C*(K+V))); memory O(inputs + B*HV*K*V).
    public static func forward(_ mechanism: RecurrentMechanism, _ inputs: RecurrenceInputs, form: RecurrenceForm) throws -> RecurrenceOutput {
        let dims = try validate(mechanism, inputs)
        try checkForm(form)
        let scale = inputs.scale ?? 1 / Float(dims.K).squareRoot()
        let empty = dims.B * dims.T * dims.HV * dims.V == 0
        try MemoryBudget.check(buffers(mechanism, inputs, dims, form: empty ? .recurrent : form))
        if empty {
            // Nothing to compute (T, B, HV or V is 0): outputs are empty, the state passes through.
            let state = try inputs.initialState ?? Tensor(zeros: [dims.B, dims.HV, dims.K, dims.V])
            return RecurrenceOutput(o: try Tensor(zeros: [dims.B, dims.T, dims.HV, dims.V]), finalState: state)
        }
        let out: RecurrenceOutput
        if form == .reference {
            out = referenceForward(mechanism, inputs, dims, scale: Double(scale))
        } else {
            let d = dims
            var o = Allocation.zeros(d.B * d.T * d.HV * d.V)
            var state = inputs.initialState?.scalars ?? [Float](repeating: 0, count: d.B * d.HV * d.K * d.V)
            o.withUnsafeMutableBufferPointer { o in state.withUnsafeMutableBufferPointer { state in
                FastProblem.with(mechanism, inputs, dims, scale: scale) { run($0, form: form, o: o.baseAddress!, state: state.baseAddress!) }
            } }
            out = RecurrenceOutput(o: Tensor(uncheckedShape: [d.B, d.T, d.HV, d.V], scalars: o),
                                   finalState: Tensor(uncheckedShape: [d.B, d.HV, d.K, d.V], scalars: state))
        }
        if inputs.validate && !inputs.allowNonFiniteOutputs {
            let hint = nonFiniteHint(mechanism, l2Normalized: inputs.useQKL2Norm)
            try out.o.checkFiniteOutput("o", hint: hint)
            try out.finalState.checkFiniteOutput("final_state", hint: hint)
        }
        return out
    }

    /// A fast form (recurrent or chunked) of `p`: writes `o [B,T,HV,V]` (zeroed by the caller) and advances `state
    /// [B,HV,K,V]` (the initial state, or zeros) in place, applying linear_attn's normalizer when asked.
    /// O(B·HV·T·K·V).
    static func run(_ p: FastProblem, form: RecurrenceForm, o: UnsafeMutablePointer<Float>, state: UnsafeMutablePointer<Float>) {
        let d = p.dims
        guard d.B * d.T * d.HV * d.V > 0 else { return }
        if case .chunked(let size) = form {
            let buffers = ChunkBuffers(q: p.q, k: p.k, v: p.v, g: p.g, beta: p.beta, o: o, state: state)
            let C = min(size, d.T)  // a chunk longer than the sequence needs no larger workspace
            BLAS.singleThreaded {
                if p.mechanism.isDelta {
                    walkHeads(count: d.B * d.HV, T: d.T, chunk: C) { bh in DeltaHeadWalk(p, buffers, bh: bh, chunk: C) }
                } else {
                    walkHeads(count: d.B * d.HV, T: d.T, chunk: C) { bh in GatedHeadWalk(p, buffers, bh: bh, chunk: C) }
                }
            }
        } else {
            recurrentScan(p, state: SendablePointer(state), o: SendablePointer(o))
        }
        if p.normalize { p.applyNormalizer(o) }
    }

    /// Throws for a chunk size below 1. O(1).
    static func checkForm(_ form: RecurrenceForm) throws {
        if case let .chunked(size) = form, size < 1 {
            throw LineaError.invalidArgument(argument: "chunk size", expected: ">= 1", actual: "\(size)")
        }
    }

    /// Why outputs of `mechanism` went NaN or infinite, for `LineaError.nonFinite`. O(1).
    static func nonFiniteHint(_ mechanism: RecurrentMechanism, l2Normalized: Bool) -> String {
        mechanism.isDelta && !l2Normalized
            ? "the delta rules need keys of L2 norm <= 1 (normalize them, or use qk L2 normalization: --qk-l2-norm)"
            : "the Float32 state overflowed (the reference form computes in Float64)"
    }

    /// What a call allocates besides its inputs: `o`, the final state, L2-normalized copies of q and k, the
    /// reference's Float64 state and the chunked form's workspace per live head walk (for chunk C at most
    /// `(3C+1)·(C+5K)` floats of C x C and C x K blocks, and the `(K+C) x V` state-and-values block). O(1).
    static func buffers(_ mechanism: RecurrentMechanism, _ x: RecurrenceInputs, _ d: RecurrenceDims, form: RecurrenceForm)
        -> [MemoryBudget.Buffer] {
        let threads = max(1, min(Parallel.threadCount, d.B * d.HV))
        var result = [MemoryBudget.Buffer("o", [d.B, d.T, d.HV, d.V]), .init("final_state", [d.B, d.HV, d.K, d.V])]
        if x.useQKL2Norm { result.append(.init("normalized q and k", [2, d.B, d.T, d.H, d.K])) }
        if x.activations.gateInKernel && form != .reference { result.append(.init("activated g", [d.B, d.T, d.HV, d.K])) }
        if x.activations.betaSigmoid && form != .reference { result.append(.init("activated beta", [d.B, d.T, d.HV])) }
        switch form {
        case .reference: result.append(.init("reference state", [threads, d.K, d.V], elementBytes: 8))
        case .recurrent: break
        case .chunked(let size):
            let (C, live) = (min(size, d.T), liveHeadWalks(d.B * d.HV))
            result += [.init("chunk workspace", [live, 3 * C + 1, C + 5 * d.K]), .init("chunk state", [live, d.K + C, d.V])]
        }
        return result
    }

    /// Names of the inputs `mechanism` needs, e.g. `["q","k","v","g","beta"]` for gated_delta_rule. O(1).
    public static func requiredInputs(_ mechanism: RecurrentMechanism) -> [String] {
        var names = ["q", "k", "v"]
        if mechanism.gateKind.readsGate { names.append("g") }
        if mechanism.isDelta { names.append("beta") }
        return names
    }

    /// Approximate floating-point operations of the chunked form (GEMMs as computed, full C x C blocks), for GFLOP/s;
    /// the work is per value head (`HV`, H when nil: q and k are read, not repeated). O(1).
    public static func chunkedFLOPs(_ mechanism: RecurrentMechanism, B: Int, T: Int, H: Int, HV: Int? = nil, K: Int, V: Int,
                                    chunkSize: Int) -> Double {
        let l = Double(max(1, min(chunkSize, T)))
        let k = Double(K), v = Double(V)
        let perToken: Double
        if mechanism.isDelta {
            // K K^T, W = T K, U = T V, U -= W S, Q S, Q K^T, P U, state update; plus the triangular inverse.
            perToken = l * (6 * k + 4 * v) + 6 * k * v + l * l / 3
        } else {
            // Q S, Q K^T, A V, state update.
            perToken = 2 * l * (k + v) + 4 * k * v
        }
        return Double(B) * Double(HV ?? H) * Double(T) * perToken
    }
}

// MARK: - Mechanism properties (internal)

/// How a mechanism decays its state.
package enum GateKind: Sendable, Equatable {
    /// No decay (a = 1).
    case none
    /// A fixed log decay per head (retention).
    case perHead
    /// A scalar log gate per (b,t,h).
    case scalar
    /// A log gate per (b,t,h,k), decaying the rows of the state.
    case vector

    /// The gate mode the CUDA kernels take as an argument: 0 none, 1 per head, 2 scalar, 3 vector.
    package var kernelCode: Int32 {
        switch self {
        case .none: return 0
        case .perHead: return 1
        case .scalar: return 2
        case .vector: return 3
        }
    }

    /// Whether a log gate `g` is an input (scalar or vector).
    package var readsGate: Bool { self == .scalar || self == .vector }
}

extension RecurrentMechanism {
    /// How the state decays.
    package var gateKind: GateKind {
        switch self {
        case .linearAttention, .deltaRule: return .none
        case .retention: return .perHead
        case .simpleGLA, .gatedDeltaRule: return .scalar
        case .gla, .kda: return .vector
        }
    }

    /// Whether the write is the delta rule (delta_rule, gated_delta_rule: needs beta). O(1).
    public var isDelta: Bool { self == .deltaRule || self == .gatedDeltaRule || self == .kda }
}

/// Problem sizes after validation: `H` query/key heads, `HV` value (and state) heads, a multiple of H.
struct RecurrenceDims: Sendable {
    let B: Int, T: Int, H: Int, HV: Int, K: Int, V: Int
    /// Value heads per query/key head (`HV/H`, 1 when H = 0): value head `hv` reads q/k head `hv / group`.
    var group: Int { H == 0 ? 1 : HV / H }
}

extension Recurrence {
    /// Retention's log decay for state head `h` (a value head): `log(1 - 2^(-5-h))` (fla's chunk_retention). O(1).
    static func retentionLogDecay(head h: Int) -> Double {
        log1p(-pow(2, Double(-5 - h)))
    }

    /// Checks shapes, presence and ranges of `inputs` for `mechanism` as every form (and the CUDA kernels) does, and
    /// returns the sizes (`H` query/key heads, `HV` value heads). O(inputs) when `inputs.validate`, else O(1).
    public static func checkInputs(_ mechanism: RecurrentMechanism, _ inputs: RecurrenceInputs) throws
        -> (B: Int, T: Int, H: Int, HV: Int, K: Int, V: Int) {
        let d = try validate(mechanism, inputs)
        return (d.B, d.T, d.H, d.HV, d.K, d.V)
    }

    /// Checks shapes, presence and ranges of the inputs for `mechanism`; returns the sizes. O(inputs) when validating.
    static func validate(_ mechanism: RecurrentMechanism, _ x: RecurrenceInputs) throws -> RecurrenceDims {
        let name = mechanism.rawValue
        let s = try RecurrenceShape(mechanism, q: x.q.shape, k: x.k.shape, v: x.v.shape, g: x.g?.shape, beta: x.beta?.shape,
                                    state: x.initialState?.shape)
        if let scale = x.scale, !scale.isFinite {
            throw LineaError.invalidArgument(argument: "scale", expected: "a finite number", actual: "\(scale)")
        }
        if x.normalize && mechanism != .linearAttention {
            throw LineaError.invalidArgument(argument: "normalize", expected: "false (only linear_attn has a normalizer)", actual: "true for \(name)")
        }
        try checkActivations(mechanism, x.activations, aLog: x.aLog?.shape, dtBias: x.dtBias?.shape, HV: s.HV, K: s.K)
        if x.validate {
            let (rawG, rawBeta) = (x.activations.gateInKernel, x.activations.betaSigmoid)
            for (tensor, argument, raw) in [(x.q, "q", false), (x.k, "k", false), (x.v, "v", false), (x.g, "g", rawG), (x.beta, "beta", rawBeta),
                                            (x.initialState, "initial_state", false), (x.aLog, "A_log", true), (x.dtBias, "dt_bias", true)] {
                try tensor?.withUnsafeBufferPointer { try checkValues($0, argument, finiteOnly: raw) }
            }
        }
        return RecurrenceDims(B: s.B, T: s.T, H: s.H, HV: s.HV, K: s.K, V: s.V)
    }

    /// Throws naming `argument` at its first NaN or infinity, or, unless `finiteOnly` (a raw gate or beta logits), for
    /// `g` a log gate above 0 and for `beta` a value outside [0, 2] (with its flat index and value); a SIMD pass first,
    /// the element-wise scan only to name it. O(n).
    static func checkValues(_ values: UnsafeBufferPointer<Float>, _ argument: String, finiteOnly: Bool = false) throws {
        if !RecurrenceSIMD.allFinite(values), let i = values.firstIndex(where: { !$0.isFinite }) {
            throw LineaError.invalidArgument(argument: argument, expected: "finite values", actual: "\(values[i]) at flat index \(i)")
        }
        if finiteOnly { return }
        if argument == "g", !RecurrenceSIMD.allWithin(values, -Float.infinity, 0), let i = values.firstIndex(where: { $0 > 0 }) {
            throw LineaError.invalidArgument(argument: "g", expected: "log gates <= 0", actual: "\(values[i]) at flat index \(i)")
        }
        // Up to 2, not 1: fla's allow_neg_eigval doubles beta so that I - beta k kᵀ (unit k) has eigenvalues in [-1, 1];
        // every form computes the same recurrence for such betas (the chunked solve stays unit lower triangular).
        if argument == "beta", !RecurrenceSIMD.allWithin(values, 0, 2), let i = values.firstIndex(where: { !(0...2).contains($0) }) {
            throw LineaError.invalidArgument(argument: "beta", expected: "values in [0, 2]", actual: "\(values[i]) at flat index \(i)")
        }
    }
}

// MARK: - Float32 problem shared by the recurrent and chunked forms

/// The fast forms' view of validated Float32 inputs: packed `[B,T,H,K]` q and k, `[B,T,HV,V]` v, gates and betas,
/// as raw pointers valid for one call (host arrays through `with`, or a CPU device tensor's memory).
struct FastProblem: @unchecked Sendable {
    let mechanism: RecurrentMechanism
    let dims: RecurrenceDims
    let scale: Float
    let q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>
    let g: UnsafePointer<Float>?
    let beta: UnsafePointer<Float>?
    let normalize: Bool

    /// Runs `body` on the arrays of `x` (q and k L2-normalized, g and beta activated first when asked). O(inputs) when
    /// normalizing or activating, else O(1).
    static func with<R>(_ mechanism: RecurrentMechanism, _ x: RecurrenceInputs, _ dims: RecurrenceDims, scale: Float,
                        _ body: (FastProblem) -> R) -> R {
        let q = x.useQKL2Norm ? l2Normalized(x.q.scalars, rowLength: dims.K) : x.q.scalars
        let k = x.useQKL2Norm ? l2Normalized(x.k.scalars, rowLength: dims.K) : x.k.scalars
        let (gates, betas) = x.activations.activated(g: x.g?.scalars, beta: x.beta?.scalars, HV: dims.HV, K: dims.K, aLog: x.aLog, dtBias: x.dtBias)
        return q.withUnsafeBufferPointer { q in k.withUnsafeBufferPointer { k in x.v.scalars.withUnsafeBufferPointer { v in
            (gates ?? []).withUnsafeBufferPointer { g in (betas ?? []).withUnsafeBufferPointer { beta in
                body(FastProblem(mechanism: mechanism, dims: dims, scale: scale, q: base(q), k: base(k), v: base(v),
                                 g: x.g == nil ? nil : base(g), beta: x.beta == nil ? nil : base(beta), normalize: x.normalize))
            } }
        } } }
    }

    /// A buffer's first element; an empty buffer (which no form reads) gives a pointer to a dummy element.
    static func base(_ buffer: UnsafeBufferPointer<Float>) -> UnsafePointer<Float> {
        buffer.baseAddress ?? UnsafePointer(empty)
    }
    nonisolated(unsafe) private static let empty = UnsafeMutablePointer<Float>.allocate(capacity: 1)

    /// `x / sqrt(sum x^2 + 1e-6)` for each row of `rowLength` elements. O(count).
    static func l2Normalized(_ x: [Float], rowLength n: Int) -> [Float] {
        var out = x
        out.withUnsafeMutableBufferPointer { p in
            var start = 0
            while start < p.count {
                var sum: Float = 0
                for i in start..<(start + n) { sum += p[i] * p[i] }
                let inv = 1 / (sum + 1e-6).squareRoot()
                for i in start..<(start + n) { p[i] *= inv }
                start += n
            }
        }
        return out
    }

    /// Offset of token `t` of value head (b, hv) in a `[B,T,HV,width]` array (v, o, g, beta).
    @inline(__always)
    func offset(_ b: Int, _ t: Int, _ hv: Int, width: Int) -> Int {
        ((b * dims.T + t) * dims.HV + hv) * width
    }

    /// The q/k head value head `hv` reads: `hv / (HV/H)`.
    func keyHead(_ hv: Int) -> Int { hv / dims.group }

    /// Offset of token `t` of q/k head (b, `keyHead`) in a `[B,T,H,K]` array.
    @inline(__always)
    func keyOffset(_ b: Int, _ t: Int, _ keyHead: Int) -> Int {
        ((b * dims.T + t) * dims.H + keyHead) * dims.K
    }

    /// Divides each output row by `(scale*q_t)·z_t + 1e-10`, `z_t = sum_{s<=t} k_s` (linear_attn normalizer).
    /// O(B*T*HV*(K+V)).
    func applyNormalizer(_ o: UnsafeMutablePointer<Float>) {
        Recurrence.normalizeLinearAttention(o, q: q, k: k, dims: dims, scale: scale, keysBefore: nil)
    }
}

extension Recurrence {
    /// linear_attn's normalizer: divides each row of `o [B,T,HV,V]` by `(scale q_t)·z_t + 1e-10`, `z_t` the sum of the
    /// keys `k [B,T,H,K]` through t plus `keysBefore [B,HV,K]` (earlier tokens' key sums, e.g. other ranks'; zero when
    /// nil). Value heads in parallel. O(B·T·HV·(K+V)).
    static func normalizeLinearAttention(_ o: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                         dims d: RecurrenceDims, scale: Float, keysBefore: UnsafePointer<Float>?) {
        let (outP, qP, kP) = (SendablePointer(o), SendableConstPointer(q), SendableConstPointer(k))
        let before = keysBefore.map { SendableConstPointer($0) }
        Parallel.forEach(d.B * d.HV) { bh in
            let (b, hv) = (bh / d.HV, bh % d.HV)
            var z = [Float](repeating: 0, count: d.K)
            if let before { for i in 0..<d.K { z[i] = before.base[bh * d.K + i] } }
            for t in 0..<d.T {
                let key = ((b * d.T + t) * d.H + hv / d.group) * d.K
                var den: Float = 0
                for i in 0..<d.K {
                    z[i] += kP.base[key + i]
                    den += qP.base[key + i] * z[i]
                }
                VectorMath.scale(outP.base + ((b * d.T + t) * d.HV + hv) * d.V, count: d.V, by: 1 / (scale * den + 1e-10))
            }
        }
    }
}

// MARK: - SIMD helpers on raw pointers

enum RecurrenceSIMD {
    /// Whether every element is finite: `x * 0` is NaN exactly for NaN and infinities. Four independent 16-lane sums
    /// (one chain waits on the add latency: a decode step checks each layer's state, about 1 MiB, twice). O(n).
    static func allFinite(_ x: UnsafeBufferPointer<Float>) -> Bool {
        guard let base = x.baseAddress else { return true }
        func load(_ i: Int) -> SIMD16<Float> { UnsafeRawPointer(base + i).loadUnaligned(as: SIMD16<Float>.self) * 0 }
        var (a0, a1, a2, a3) = (SIMD16<Float>(), SIMD16<Float>(), SIMD16<Float>(), SIMD16<Float>())
        var i = 0
        while i + 64 <= x.count {
            (a0, a1, a2, a3) = (a0 + load(i), a1 + load(i + 16), a2 + load(i + 32), a3 + load(i + 48))
            i += 64
        }
        var acc = ((a0 + a1) + (a2 + a3)).sum()
        while i < x.count {
            acc += base[i] * 0
            i += 1
        }
        return acc == 0
    }

    /// Whether every element of `x` is finite, copying it to `target` on the way when given; split over the worker
    /// threads past 64K elements (a decode step copies and checks each layer's state, about 1 MiB, on every token).
    /// O(n).
    static func allFiniteParallel(_ x: UnsafeBufferPointer<Float>, copyTo target: UnsafeMutablePointer<Float>? = nil) -> Bool {
        guard let base = x.baseAddress else { return true }
        let parts = min(4 * Parallel.threadCount, max(1, x.count >> 16))
        return withUnsafeTemporaryAllocation(of: Bool.self, capacity: parts) { finite in
            Parallel.forEachStatic(parts, FiniteParts(x: base, count: x.count, parts: parts, target: target, finite: finite.baseAddress!))
            return finite.allSatisfy { $0 }
        }
    }

    /// The parts of `allFiniteParallel`: part `i` copies and checks its range and writes its own flag.
    private struct FiniteParts: ParallelItems, @unchecked Sendable {
        let x: UnsafePointer<Float>, count: Int, parts: Int, target: UnsafeMutablePointer<Float>?, finite: UnsafeMutablePointer<Bool>

        func run(_ i: Int) {
            let range = count * i / parts..<count * (i + 1) / parts
            target?.advanced(by: range.lowerBound).update(from: x + range.lowerBound, count: range.count)
            finite[i] = allFinite(UnsafeBufferPointer(start: x + range.lowerBound, count: range.count))
        }
    }

    /// Whether every (finite) element lies in `[low, high]`. O(n).
    static func allWithin(_ x: UnsafeBufferPointer<Float>, _ low: Float, _ high: Float) -> Bool {
        guard let base = x.baseAddress else { return true }
        var bad = SIMDMask<SIMD8<Int32>>(repeating: false)
        var i = 0
        while i + 8 <= x.count {
            let v = UnsafeRawPointer(base + i).loadUnaligned(as: SIMD8<Float>.self)
            bad .|= (v .< low) .| (v .> high)
            i += 8
        }
        var ok = !any(bad)
        while i < x.count {
            ok = ok && base[i] >= low && base[i] <= high
            i += 1
        }
        return ok
    }

    /// Float64 -> Float32 on 8 lanes, written lane by lane so it compiles to `vcvtpd2ps` (the generic
    /// `SIMD8<Float>(SIMD8<Double>)` initializer is an out-of-line call).
    @inline(__always)
    static func narrow(_ d: SIMD8<Double>) -> SIMD8<Float> {
        SIMD8<Float>(Float(d[0]), Float(d[1]), Float(d[2]), Float(d[3]), Float(d[4]), Float(d[5]), Float(d[6]), Float(d[7]))
    }

    /// Float32 -> Float64 on 8 lanes (`vcvtps2pd`).
    @inline(__always)
    static func widen(_ f: SIMD8<Float>) -> SIMD8<Double> {
        SIMD8<Double>(Double(f[0]), Double(f[1]), Double(f[2]), Double(f[3]), Double(f[4]), Double(f[5]), Double(f[6]), Double(f[7]))
    }

    /// `y[i] = a[i] + Double(x[i])` for `i < n`: one step of a Float64 cumulative sum of Float32 gates. O(n).
    @inline(__always)
    static func accumulate(_ y: UnsafeMutablePointer<Double>, _ a: UnsafePointer<Double>, _ x: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        while i + 8 <= n {
            let sum = UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Double>.self) + widen(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self))
            UnsafeMutableRawPointer(y + i).storeBytes(of: sum, as: SIMD8<Double>.self)
            i += 8
        }
        while i < n {
            y[i] = a[i] + Double(x[i])
            i += 1
        }
    }

    /// `y[i] += a * x[i]` for `i < n`. O(n).
    @inline(__always)
    static func axpy(_ y: UnsafeMutablePointer<Float>, _ a: Float, _ x: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        let a8 = SIMD8<Float>(repeating: a)
        while i + 8 <= n {
            let yr = UnsafeMutableRawPointer(y + i)
            let r = yr.loadUnaligned(as: SIMD8<Float>.self) + a8 * UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
            yr.storeBytes(of: r, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n {
            y[i] += a * x[i]
            i += 1
        }
    }

    /// `y[i] = exp(x[i])` for `i < n` via the vector exp. O(n).
    @inline(__always)
    static func expInto(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) {
        var i = 0
        while i + 8 <= n {
            let e = VectorMath.exp(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self))
            UnsafeMutableRawPointer(y + i).storeBytes(of: e, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n {
            y[i] = VectorMath.exp(x[i])
            i += 1
        }
    }
}
