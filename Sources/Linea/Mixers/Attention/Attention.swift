import Foundation

/// How exact softmax attention is computed; every form gives the same numbers.
public enum AttentionForm: Sendable, Equatable, CustomStringConvertible {
    /// Materialized `T x S` scores per head, Float64 accumulation: the oracle. O(T·S) memory per head.
    case reference
    /// Tiled with online softmax on GEMM tiles; O(T) extra memory. O(T·S·D) time.
    case flash
    /// Split-KV decode (flash-decoding / Lean Attention): the keys are cut into `partitions` ranges run in
    /// parallel, partial results merged through their log-sum-exp. `nil` picks enough to fill the cores.
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

    /// Creates options; defaults: scale `1/sqrt(D)`, causal, no window.
    public init(scale: Float? = nil, causal: Bool = true, window: Int? = nil) {
        self.scale = scale
        self.causal = causal
        self.window = window
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
        if problem.B * problem.T * problem.Hq == 0 || problem.S == 0 {
            // Nothing to attend to (or nobody asking): zero output, lse = -inf.
            return AttentionOutput(
                o: Tensor(uncheckedShape: [problem.B, problem.T, problem.Hq, problem.Dv],
                          scalars: [Float](repeating: 0, count: problem.B * problem.T * problem.Hq * problem.Dv)),
                lse: Tensor(uncheckedShape: [problem.B, problem.T, problem.Hq],
                            scalars: [Float](repeating: -.infinity, count: problem.B * problem.T * problem.Hq)))
        }
        switch form {
        case .reference: return try reference(problem, q: q, k: k, v: v)
        case .flash: return flash(problem, q: q, k: k, v: v)
        case .splitKV(let partitions):
            if let n = partitions, n < 1 {
                throw LineaError.invalidArgument(argument: "partitions", expected: ">= 1", actual: "\(n)")
            }
            return splitKV(problem, q: q, k: k, v: v, partitions: partitions)
        }
    }

    /// FLOPs counted for throughput: `4·B·Hq·D·(visible query-key pairs)` (QKᵀ and PV), e.g. `2·T²·D·H` causal.
    public static func flops(B: Int, T: Int, S: Int, H: Int, D: Int, causal: Bool, window: Int? = nil) -> Double {
        var pairs = 0.0
        if !causal {
            pairs = Double(T) * Double(S)
        } else {
            let offset = S - T
            // Sum over queries of their visible keys: O(T), simpler than a clipped closed form.
            for i in 0..<T {
                let pos = i + offset
                let hi = min(S, pos + 1)
                let lo = window.map { max(0, pos - $0 + 1) } ?? 0
                pairs += Double(max(0, hi - lo))
            }
        }
        return 4 * Double(B * H) * pairs * Double(D)
    }
}

/// Validated shapes and options of one attention call.
struct AttentionProblem: Sendable {
    let B: Int, T: Int, S: Int, Hq: Int, Hkv: Int, D: Int, Dv: Int
    let scale: Float
    let causal: Bool
    let window: Int?

    init(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions) throws {
        try q.expectRank(4, "q", layout: "[B, T, Hq, D]")
        try k.expectRank(4, "k", layout: "[B, S, Hkv, D]")
        try v.expectRank(4, "v", layout: "[B, S, Hkv, Dv]")
        (B, T, Hq, D) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        (S, Hkv, Dv) = (k.shape[1], k.shape[2], v.shape[3])
        guard k.shape[0] == B, k.shape[3] == D else {
            throw LineaError.shapeMismatch(argument: "k", expected: "[\(B), S, Hkv, \(D)] (batch and head dim of q)", actual: "\(k.shape)")
        }
        guard v.shape[0] == B, v.shape[1] == S, v.shape[2] == Hkv else {
            throw LineaError.shapeMismatch(argument: "v", expected: "[\(B), \(S), \(Hkv), Dv] (batch, length and heads of k)", actual: "\(v.shape)")
        }
        guard Hkv > 0, Hq % Hkv == 0 else {
            throw LineaError.invalidArgument(argument: "k heads (Hkv)", expected: "a divisor of the \(Hq) query heads", actual: "\(Hkv)")
        }
        guard D > 0 else {
            throw LineaError.shapeMismatch(argument: "q", expected: "head dim D >= 1", actual: "\(q.shape)")
        }
        guard Dv > 0 else {
            throw LineaError.shapeMismatch(argument: "v", expected: "value dim Dv >= 1", actual: "\(v.shape)")
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
        try q.expectFinite("q")
        try k.expectFinite("k")
        try v.expectFinite("v")
        self.scale = scale
        self.causal = options.causal
        self.window = options.window
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
