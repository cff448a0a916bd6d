import Foundation

/// How exact softmax attention is computed; every form gives the same numbers.
public enum AttentionForm: Sendable, Equatable, CustomStringConvertible {
    /// Materialized `T x S` scores per head, Float64 accumulation: the oracle. O(T·S) memory per head.
    case reference
    /// Tiled with online softmax on GEMM tiles; O(T) extra memory. O(T·S·D) time.
    case flash
    /// Split-KV decode (flash-decoding / Lean Attention): the keys are cut into `partitions` ranges run in
    /// parallel, partial results merged through their log-sum-exp. `nil` picks enough to fill the cores; at most
    /// one partition per 16 keys is used.
    case splitKV(partitions: Int?)

    /// All forms, for listings and verification grids.
    public static let all: [AttentionForm] = [.reference, .flash, .splitKV(partitions: nil)]

    /// Parses `reference`, `flash`, `split_kv` or `split_kv:N`.
    public init?(name: String) {
        switch name {
        case "reference": self = .reference
        case "flash", "auto": self = .flash
        case "split_kv", "splitkv": self = .splitKV(partitions: nil)
        default:
            let parts = name.split(separator: ":")
            guard parts.count == 2, parts[0] == "split_kv", let n = Int(parts[1]) else { return nil }
            self = .splitKV(partitions: n)
        }
    }

    public var description: String {
        switch self {
        case .reference: return "reference"
        case .flash: return "flash"
        case .splitKV(nil): return "split_kv"
        case .splitKV(let n?): return "split_kv:\(n)"
        }
    }
}

/// Masking and scaling options of exact attention.
public struct AttentionOptions: Sendable, Equatable {
    /// Query scale; `nil` means `1/sqrt(D)`.
    public var scale: Float?
    /// Causal masking. With `S != T` the mask is aligned bottom-right: query `i` sits at position `i + S - T`.
    public var causal: Bool
    /// Sliding window `W` (causal only): query at position `p` sees keys `j` with `p - W < j <= p`.
    public var window: Int?
    /// Return NaN or +inf in `o`/`lse` instead of throwing `LineaError.nonFinite` (-inf in lse is always allowed).
    public var allowNonFiniteOutputs: Bool

    /// Creates options; defaults: scale `1/sqrt(D)`, causal, no window, non-finite outputs an error.
    public init(scale: Float? = nil, causal: Bool = true, window: Int? = nil, allowNonFiniteOutputs: Bool = false) {
        self.scale = scale
        self.causal = causal
        self.window = window
        self.allowNonFiniteOutputs = allowNonFiniteOutputs
    }
}

/// Output of exact attention.
public struct AttentionOutput: Sendable {
    /// Attention output `[B, T, Hq, Dv]`.
    public var o: Tensor
    /// Natural log of the sum of exp of scaled visible scores, `[B, T, Hq]`; `-inf` (and `o = 0`) where a query sees no key.
    public var lse: Tensor
}

/// Exact softmax attention: `o = softmax(scale · q kᵀ + mask) v`, with GQA/MQA, causal, sliding window.
public enum Attention {
    /// Largest per-head score matrix the reference form materializes (512 MiB of Float64).
    public static let referenceLimitBytes = 512 << 20

    /// Computes attention of `q [B,T,Hq,D]` over `k [B,S,Hkv,D]`, `v [B,S,Hkv,Dv]` (`Hkv` divides `Hq`).
    /// Time O(B·Hq·T·S·D) (about half with a causal mask, O(B·Hq·T·W·D) with a window).
    public static func forward(
        q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = AttentionOptions(), form: AttentionForm = .flash
    ) throws -> AttentionOutput {
        let problem = try AttentionProblem(q: q, k: k, v: v, options: options)
        if case .splitKV(let n?) = form, n < 1 {
            throw LineaError.invalidArgument(argument: "partitions", expected: ">= 1", actual: "\(n)")
        }
        let empty = problem.B * problem.T * problem.Hq == 0 || problem.S == 0
        try MemoryBudget.check(empty ? Array(problem.buffers(form).prefix(2)) : problem.buffers(form))
        if empty {
            // Nothing to attend to (or nobody asking): zero output, lse = -inf.
            return AttentionOutput(
                o: Tensor(uncheckedShape: [problem.B, problem.T, problem.Hq, problem.Dv],
                          scalars: [Float](repeating: 0, count: problem.B * problem.T * problem.Hq * problem.Dv)),
                lse: Tensor(uncheckedShape: [problem.B, problem.T, problem.Hq],
                            scalars: [Float](repeating: -.infinity, count: problem.B * problem.T * problem.Hq)))
        }
        let out: AttentionOutput
        switch form {
        case .reference: out = try reference(problem, q: q, k: k, v: v)
        case .flash:
            try checkFloat32Range(q: q, k: k, v: v, scale: problem.scale, form: form)
            out = flash(problem, q: q, k: k, v: v)
        case .splitKV(let partitions):
            try checkFloat32Range(q: q, k: k, v: v, scale: problem.scale, form: form)
            out = splitKV(problem, q: q, k: k, v: v, partitions: partitions)
        }
        if !options.allowNonFiniteOutputs { try out.checkFinite(form) }
        return out
    }

    /// The checks `forward` makes before computing, for other backends' callers: shapes, options, finite inputs
    /// and, for a Float32 form, `checkFloat32Range`. O(q + k + v).
    package static func checkInputs(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions, form: AttentionForm) throws {
        let problem = try AttentionProblem(q: q, k: k, v: v, options: options)
        if form != .reference { try checkFloat32Range(q: q, k: k, v: v, scale: problem.scale, form: form) }
    }

    /// Throws unless the Float32 forms (flash, split-KV, the CUDA kernels) can hold this problem's numbers:
    /// a score `scale·q·k` is at most `max|q|·max|k|·D·|scale|`, and an unnormalized `P·V` row sum at most
    /// `max|v|·S`; either beyond Float32's range turns the output into 0 or NaN where the Float64 reference is
    /// finite. Assumes q, k, v [B, *, heads, D] already validated. O(q + k + v).
    package static func checkFloat32Range(q: Tensor, k: Tensor, v: Tensor, scale: Float, form: AttentionForm) throws {
        try checkFloat32Range(maxQ: q.maxMagnitude, maxK: k.maxMagnitude, maxV: v.maxMagnitude, D: q.shape.last ?? 1,
                              S: k.shape.count > 1 ? k.shape[1] : 1, scale: scale, form: form)
    }

    /// `checkFloat32Range` from the inputs' largest magnitudes. O(1).
    static func checkFloat32Range(maxQ mq: Float, maxK mk: Float, maxV mv: Float, D d: Int, S s: Int, scale: Float, form: AttentionForm) throws {
        let (D, S) = (Double(d), Double(s))
        // Flash scales q by log2(e) and subtracts running maxima: a score difference reaches 2·log2(e) times the bound.
        let ceiling = Double(Float.greatestFiniteMagnitude) / 4
        let score = Double(mq) * Double(mk) * D * Double(abs(scale))
        guard score < ceiling else {
            throw LineaError.invalidArgument(
                argument: "q, k", expected: "max|q|·max|k|·D·|scale| below \(Float(ceiling)) so the \(form) form's Float32 scores stay finite (use form reference)",
                actual: "max|q| = \(mq), max|k| = \(mk), D = \(Int(D)), scale = \(scale): " + String(format: "%.3g", score))
        }
        guard Double(mv) * S < ceiling else {
            throw LineaError.invalidArgument(
                argument: "v", expected: "max|v|·S below \(Float(ceiling)) so the \(form) form's Float32 sums stay finite (use form reference)",
                actual: "max|v| = \(mv), S = \(Int(S))")
        }
    }

    /// FLOPs counted for throughput: `4·B·Hq·D·(visible query-key pairs)` (QKᵀ and PV), e.g. `2·T²·D·H` causal.
    public static func flops(B: Int, T: Int, S: Int, H: Int, D: Int, causal: Bool, window: Int? = nil) -> Double {
        guard B > 0, T > 0, S > 0, H > 0, D > 0 else { return 0 }
        var pairs = 0.0
        if !causal {
            pairs = Double(T) * Double(S)
        } else {
            let offset = S - T
            // Sum over queries of their visible keys: O(T), simpler than a clipped closed form.
            for i in 0..<T {
                let pos = i + offset
                let hi = min(S, pos + 1)
                let lo = window.map { max(0, pos - min(max($0, 1), S) + 1) } ?? 0  // W >= S sees every key: no overflow
                pairs += Double(max(0, hi - lo))
            }
        }
        return 4 * Double(B) * Double(H) * pairs * Double(D)
    }
}

extension AttentionOutput {
    /// Throws `LineaError.nonFinite` for NaN or an infinity in `o`, or NaN or +inf in `lse`. O(o + lse).
    func checkFinite(_ form: AttentionForm) throws {
        let hint = form == .reference ? "the result exceeds Float32's range" : "Float32 cannot hold this result (try form reference)"
        try o.checkFiniteOutput("o", hint: hint)
        try lse.checkFiniteOutput("lse", allowNegativeInfinity: true, hint: hint)
    }
}

/// Validated shapes and options of one attention call.
struct AttentionProblem: Sendable {
    let B: Int, T: Int, S: Int, Hq: Int, Hkv: Int, D: Int, Dv: Int
    let scale: Float
    let causal: Bool
    let window: Int?

    /// Checks the shapes and options of `q [B,T,Hq,D]`, `k [B,S,Hkv,D]`, `v [B,S,Hkv,Dv]` and finite inputs.
    init(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions) throws {
        try self.init(q: q.shape, k: k.shape, v: v.shape, options: options)
        try q.expectFinite("q")
        try k.expectFinite("k")
        try v.expectFinite("v")
    }

    /// Checks shapes and options only (any device's tensors). O(1).
    init(q: [Int], k: [Int], v: [Int], options: AttentionOptions) throws {
        func rank4(_ shape: [Int], _ name: String, _ layout: String) throws {
            guard shape.count == 4 else { throw LineaError.shapeMismatch(argument: name, expected: layout, actual: "\(shape) (rank \(shape.count))") }
        }
        try rank4(q, "q", "[B, T, Hq, D]")
        try rank4(k, "k", "[B, S, Hkv, D]")
        try rank4(v, "v", "[B, S, Hkv, Dv]")
        (B, T, Hq, D) = (q[0], q[1], q[2], q[3])
        (S, Hkv, Dv) = (k[1], k[2], v[3])
        guard k[0] == B, k[3] == D else {
            throw LineaError.shapeMismatch(argument: "k", expected: "[\(B), S, Hkv, \(D)] (batch and head dim of q)", actual: "\(k)")
        }
        guard v[0] == B, v[1] == S, v[2] == Hkv else {
            throw LineaError.shapeMismatch(argument: "v", expected: "[\(B), \(S), \(Hkv), Dv] (batch, length and heads of k)", actual: "\(v)")
        }
        guard Hkv > 0, Hq % Hkv == 0 else {
            throw LineaError.invalidArgument(argument: "k heads (Hkv)", expected: "a divisor of the \(Hq) query heads", actual: "\(Hkv)")
        }
        guard D > 0 else {
            throw LineaError.shapeMismatch(argument: "q", expected: "head dim D >= 1", actual: "\(q)")
        }
        guard Dv > 0 else {
            throw LineaError.shapeMismatch(argument: "v", expected: "value dim Dv >= 1", actual: "\(v)")
        }
        let scale = options.scale ?? 1 / Float(D).squareRoot()
        guard scale.isFinite, scale != 0 else {
            throw LineaError.invalidArgument(argument: "scale", expected: "a finite non-zero number", actual: "\(scale)")
        }
        if let w = options.window {
            guard options.causal else {
                throw LineaError.invalidArgument(argument: "window", expected: "causal attention (a sliding window is causal)", actual: "window \(w) with causal = false")
            }
            guard w >= 1 else {
                throw LineaError.invalidArgument(argument: "window", expected: ">= 1", actual: "\(w)")
            }
        }
        self.scale = scale
        self.causal = options.causal
        // A window of S or more sees every key; clamping keeps `p - W + 1` far from Int.min for W near Int.max.
        let keys = max(S, 1)
        self.window = options.window.map { min($0, keys) }
    }

    /// Each flash worker's tiles and its packed copy of one head's keys and values.
    private var flashScratch: [MemoryBudget.Buffer] {
        [.init("flash tiles", [Parallel.threadCount, 300, D + Dv + 200]), .init("packed keys and values", [Parallel.threadCount, S, D + Dv])]
    }

    /// What `form` allocates: outputs, the reference's score matrix, split-KV's partials, flash's per-thread tiles.
    func buffers(_ form: AttentionForm) -> [MemoryBudget.Buffer] {
        var result = [MemoryBudget.Buffer("o", [B, T, Hq, Dv]), .init("lse", [B, T, Hq])]
        switch form {
        case .reference: result.append(.init("scores", [T, S], elementBytes: 8))
        case .flash: result += flashScratch
        case .splitKV(let requested):
            let parts = Attention.splitKVPartitions(self, requested: requested)
            result += [.init("split-KV partial o", [parts, B, T, Hq, Dv]), .init("split-KV partial lse", [parts, B, T, Hq])]
                + flashScratch
        }
        return result
    }

    /// Query `i`'s visible keys `[lo, hi)` (empty when `hi <= lo`).
    @inline(__always)
    func keyRange(query i: Int) -> (lo: Int, hi: Int) {
        guard causal else { return (0, S) }
        let pos = i + S - T
        let hi = min(S, pos + 1)
        let lo = window.map { max(0, pos - $0 + 1) } ?? 0
        return (lo, max(lo, hi))
    }
}
