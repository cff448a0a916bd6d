import Foundation
import Linea

/// Plain CPU loops (Float64 accumulation) that the CUDA kernels are checked against.
package enum CUDAReference {
    /// Softmax attention, same conventions as `CUDAAttention.forward`: q `[B,T,Hq,D]`, k/v `[B,S,Hkv,D]`;
    /// returns o `[B,T,Hq,D]` and lse `[B,T,Hq]` (-inf, o = 0 for rows with no visible key). O(B·Hq·T·S·D).
    public static func attention(
        q: Tensor, k: Tensor, v: Tensor, scale: Float? = nil, causal: Bool, window: Int? = nil
    ) throws -> (o: Tensor, lse: Tensor) {
        let (b, t, hq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let (s, hkv) = (k.shape[1], k.shape[2])
        let sc = Double(scale ?? 1 / Float(d).squareRoot())
        var o = try Tensor(zeros: [b, t, hq, d])
        var lse = try Tensor(zeros: [b, t, hq])
        var scores = [Double](repeating: 0, count: s)
        for bi in 0..<b {
            for h in 0..<hq {
                let hk = h / (hq / hkv)
                for i in 0..<t {
                    let pos = i + s - t
                    var m = -Double.infinity
                    for j in 0..<s {
                        let visible = (!causal || j <= pos) && (window.map { j > pos - $0 } ?? true)
                        guard visible else { scores[j] = -.infinity; continue }
                        var dot = 0.0
                        let qo = ((bi * t + i) * hq + h) * d, ko = ((bi * s + j) * hkv + hk) * d
                        for x in 0..<d { dot += Double(q.scalars[qo + x]) * Double(k.scalars[ko + x]) }
                        scores[j] = dot * sc
                        m = max(m, scores[j])
                    }
                    let lo = (bi * t + i) * hq + h
                    guard m > -.infinity else { lse.scalars[lo] = -.infinity; continue }
                    var sum = 0.0
                    var acc = [Double](repeating: 0, count: d)
                    for j in 0..<s where scores[j] > -.infinity {
                        let p = Foundation.exp(scores[j] - m)
                        sum += p
                        let vo = ((bi * s + j) * hkv + hk) * d
                        for x in 0..<d { acc[x] += p * Double(v.scalars[vo + x]) }
                    }
                    for x in 0..<d { o.scalars[lo * d + x] = Float(acc[x] / sum) }
                    lse.scalars[lo] = Float(m + Foundation.log(sum))
                }
            }
        }
        return (o, lse)
    }

    /// One gated-delta-rule step per (b, h): `S = exp(g) S; S += beta k (v - k^T S)^T; o = (scale q)^T S`.
    /// q, k `[B,H,K]`, v `[B,H,V]`, g, beta `[B,H]`, state `[B,H,K,V]`; returns o `[B,H,V]` and the new state. O(B·H·K·V).
    public static func gatedDeltaRuleStep(
        q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, state: Tensor, scale: Float? = nil
    ) throws -> (o: Tensor, state: Tensor) {
        let (b, h, kd, vd) = (q.shape[0], q.shape[1], q.shape[2], v.shape[2])
        let sc = Double(scale ?? 1 / Float(kd).squareRoot())
        var o = try Tensor(zeros: [b, h, vd])
        var out = state
        for bh in 0..<(b * h) {
            let decay = Foundation.exp(Double(g.scalars[bh])), bt = Double(beta.scalars[bh])
            var st = (0..<(kd * vd)).map { Double(state.scalars[bh * kd * vd + $0]) * decay }
            for c in 0..<vd {
                var u = 0.0
                for r in 0..<kd { u += Double(k.scalars[bh * kd + r]) * st[r * vd + c] }
                let delta = bt * (Double(v.scalars[bh * vd + c]) - u)
                var acc = 0.0
                for r in 0..<kd {
                    st[r * vd + c] += Double(k.scalars[bh * kd + r]) * delta
                    acc += sc * Double(q.scalars[bh * kd + r]) * st[r * vd + c]
                }
                o.scalars[bh * vd + c] = Float(acc)
            }
            for x in 0..<(kd * vd) { out.scalars[bh * kd * vd + x] = Float(st[x]) }
        }
        return (o, out)
    }
}

/// GPU-vs-CPU comparisons shared by the test suite and the `linea-cuda-check` tool.
package enum CUDASelfCheck {
    /// One comparison's outcome: the case, the kernel, errors of each output and the tolerance on relative RMS.
    public struct Outcome: Sendable, CustomStringConvertible {
        /// Case and kernel, e.g. `attention B=1 ... causal BF16 tensorCore`.
        public let name: String
        /// Error statistics of each output against the reference.
        public let errors: [(output: String, stats: ErrorStats)]
        /// Largest relative RMS error accepted.
        public let tolerance: Double
        /// True when every output's relative RMS is within `tolerance` (NaN fails).
        public var passed: Bool { errors.allSatisfy { $0.stats.relativeRMS <= tolerance } }
        public var description: String {
            let parts = errors.map { "\($0.output): \($0.stats)" }.joined(separator: "; ")
            return "\(passed ? "ok  " : "FAIL") \(name) — \(parts) (tolerance \(tolerance))"
        }
    }

    /// An attention case: shape, masking.
    public struct AttentionCase: Sendable {
        /// Sizes.
        public let shape: CUDAAttentionShape
        /// Causal (bottom-right aligned) masking.
        public let causal: Bool
        /// Sliding window (with causal), or nil.
        public let window: Int?
        /// Creates a case.
        public init(_ shape: CUDAAttentionShape, causal: Bool, window: Int? = nil) {
            self.shape = shape; self.causal = causal; self.window = window
        }
    }

    /// The attention grid: causal, non-causal, sliding window, GQA, T != S, awkward T (1, 63, 65, 200), D 64/128 (+ 40, 96 portable).
    public static let attentionCases: [AttentionCase] = {
        func s(_ b: Int, _ t: Int, _ sk: Int, _ hq: Int, _ hkv: Int, _ d: Int) -> CUDAAttentionShape {
            CUDAAttentionShape(batch: b, queryLength: t, keyLength: sk, queryHeads: hq, kvHeads: hkv, headDim: d)
        }
        return [
            AttentionCase(s(2, 63, 63, 4, 4, 64), causal: true),
            AttentionCase(s(1, 65, 65, 4, 2, 128), causal: true),
            AttentionCase(s(2, 200, 200, 6, 2, 64), causal: false),
            AttentionCase(s(1, 1, 200, 4, 1, 128), causal: true),
            AttentionCase(s(1, 1, 1, 2, 2, 64), causal: false),
            AttentionCase(s(1, 200, 200, 2, 1, 128), causal: true, window: 37),
            AttentionCase(s(1, 100, 60, 2, 2, 64), causal: true),
            AttentionCase(s(1, 63, 150, 2, 2, 64), causal: true, window: 50),
            AttentionCase(s(1, 300, 300, 2, 2, 128), causal: true),
            AttentionCase(s(1, 65, 90, 3, 1, 128), causal: false),
            AttentionCase(s(1, 65, 65, 2, 2, 96), causal: false),
            AttentionCase(s(1, 70, 70, 2, 1, 40), causal: true),
            // D = 128 across several 128-key tiles (the wgmma kernel's tile): T != S with GQA, window across tiles, non-causal.
            AttentionCase(s(2, 257, 400, 2, 1, 128), causal: true),
            AttentionCase(s(1, 500, 500, 2, 2, 128), causal: true, window: 150),
            AttentionCase(s(1, 130, 300, 2, 2, 128), causal: false),
        ]
    }()

    /// Runs `c` with every kernel that takes it (fp32 portable; bf16 and fp16 portable, mma.sync tensor cores and,
    /// on sm_90 with D = 128, wgmma) against `CUDAReference.attention` on the same (rounded) inputs.
    /// Tolerances: 1e-5 fp32, 2e-3 bf16/fp16.
    public static func attention(_ c: AttentionCase, seed: UInt64 = 1, context: CUDAContext) throws -> [Outcome] {
        let s = c.shape
        let q = try Tensor.randomNormal([s.batch, s.queryLength, s.queryHeads, s.headDim], seed: seed)
        let k = try Tensor.randomNormal([s.batch, s.keyLength, s.kvHeads, s.headDim], seed: seed &+ 1)
        let v = try Tensor.randomNormal([s.batch, s.keyLength, s.kvHeads, s.headDim], seed: seed &+ 2)
        var variants: [(DType, CUDAAttention.Kernel)] = [(.float32, .portable), (.bfloat16, .portable), (.float16, .portable)]
        if (s.headDim == 64 || s.headDim == 128) && context.computeCapability.major >= 8 {
            variants += [(.bfloat16, .tensorCore), (.float16, .tensorCore)]
        }
        if s.headDim == 128 && context.computeCapability.major == 9 {
            variants += [(.bfloat16, .wgmma), (.float16, .wgmma)]
        }
        let mask = c.causal ? (c.window.map { "causal window \($0)" } ?? "causal") : "non-causal"
        var outcomes: [Outcome] = []
        var references: [DType: (o: Tensor, lse: Tensor)] = [:]
        for (dtype, kernel) in variants {
            let round = { (t: Tensor) in
                dtype == .bfloat16 ? HalfPrecision.roundedToBFloat16(t) : dtype == .float16 ? HalfPrecision.roundedToFloat16(t) : t
            }
            if references[dtype] == nil {
                references[dtype] = try CUDAReference.attention(q: round(q), k: round(k), v: round(v), causal: c.causal, window: c.window)
            }
            let want = references[dtype]!
            let got = try CUDAAttention.forward(
                q: q, k: k, v: v, causal: c.causal, window: c.window, dtype: dtype, kernel: kernel, context: context)
            outcomes.append(Outcome(
                name: "attention \(s) \(mask) \(dtype.rawValue) \(kernel.rawValue)",
                errors: [("o", ErrorStats(got.o, want.o)), ("lse", ErrorStats(got.lse, want.lse))],
                tolerance: dtype == .float32 ? 1e-5 : 2e-3))
        }
        return outcomes
    }

    /// Gated-delta-rule step cases (B, H, K, V).
    public static let recurrentCases: [(b: Int, h: Int, k: Int, v: Int)] = [
        (2, 3, 128, 128), (1, 2, 64, 100), (1, 2, 256, 64), (3, 1, 100, 33),
    ]

    /// Runs one gated-delta-rule step on the GPU (fp32 and bf16 inputs) against `CUDAReference.gatedDeltaRuleStep`;
    /// gates in [-3, -1e-4], beta in [0, 1], L2-normalized keys.
    public static func gatedDeltaRule(b: Int, h: Int, k kd: Int, v vd: Int, seed: UInt64 = 7, context: CUDAContext) throws -> [Outcome] {
        let q = try Tensor.randomNormal([b, h, kd], seed: seed)
        var k = try Tensor.randomNormal([b, h, kd], seed: seed &+ 1)
        for row in 0..<(b * h) {
            let norm = (0..<kd).reduce(Float(0)) { $0 + k.scalars[row * kd + $1] * k.scalars[row * kd + $1] }.squareRoot()
            for x in 0..<kd { k.scalars[row * kd + x] /= norm }
        }
        let v = try Tensor.randomNormal([b, h, vd], seed: seed &+ 2)
        let g = try Tensor.randomUniform([b, h], seed: seed &+ 3, in: -3 ... -1e-4)
        let beta = try Tensor.randomUniform([b, h], seed: seed &+ 4, in: 0...1)
        let state = try Tensor.randomNormal([b, h, kd, vd], seed: seed &+ 5)
        var outcomes: [Outcome] = []
        for dtype in [DType.float32, .bfloat16] {
            let round = { (t: Tensor) in dtype == .bfloat16 ? HalfPrecision.roundedToBFloat16(t) : t }
            let want = try CUDAReference.gatedDeltaRuleStep(q: round(q), k: round(k), v: round(v), g: round(g), beta: round(beta), state: state)
            let got = try CUDARecurrentStep.gatedDeltaRule(q: q, k: k, v: v, g: g, beta: beta, state: state, dtype: dtype, context: context)
            outcomes.append(Outcome(
                name: "gated_delta_rule step B=\(b) H=\(h) K=\(kd) V=\(vd) \(dtype.rawValue)",
                errors: [("o", ErrorStats(got.o, want.o)), ("state", ErrorStats(got.state, want.state))],
                tolerance: dtype == .float32 ? 1e-5 : 2e-3))
        }
        return outcomes
    }

    /// Every comparison above, in order.
    public static func runAll(context: CUDAContext) throws -> [Outcome] {
        var all: [Outcome] = []
        for c in attentionCases { all += try attention(c, context: context) }
        for r in recurrentCases { all += try gatedDeltaRule(b: r.b, h: r.h, k: r.k, v: r.v, context: context) }
        return all
    }
}
