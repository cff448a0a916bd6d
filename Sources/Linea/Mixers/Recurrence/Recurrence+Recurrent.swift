import Foundation

/// How one token decays the state: multipliers already exponentiated (`exp(g)`), never above 1.
enum TokenDecay {
    /// `a = 1`.
    case none
    /// One multiplier for the whole state.
    case scalar(Float)
    /// One multiplier per state row (K of them).
    case vector(UnsafePointer<Float>)

    @inline(__always)
    func multiplier(_ i: Int) -> Float {
        switch self {
        case .none: return 1
        case let .scalar(a): return a
        case let .vector(a): return a[i]
        }
    }
}

extension Recurrence {
    /// One token on a Float32 K x V state `S` (row-major): decay, (delta) write, then `o = S^T (scale q)`.
    /// `beta` nil means the plain `k v^T` write. `o` receives V floats. O(K*V).
    /// Works on column blocks of 32 (then 8, then 1) so the write vector and the output stay in registers
    /// while the block's K rows are swept (twice for the delta rules: read S^T k, then update).
    @inline(__always)
    static func recurrentToken(
        S: UnsafeMutablePointer<Float>, K: Int, V: Int,
        q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
        decay: TokenDecay, beta: Float?, scale: Float,
        o: UnsafeMutablePointer<Float>
    ) {
        var j = 0
        while j + 32 <= V {
            tokenColumns32(j, S: S, K: K, V: V, q: q, k: k, v: v, decay: decay, beta: beta, scale: scale, o: o)
            j += 32
        }
        while j + 8 <= V {
            tokenColumns8(j, S: S, K: K, V: V, q: q, k: k, v: v, decay: decay, beta: beta, scale: scale, o: o)
            j += 8
        }
        while j < V {
            var write = v[j]
            if let beta {
                var kS: Float = 0
                for i in 0..<K { kS += k[i] * decay.multiplier(i) * S[i * V + j] }
                write = beta * (write - kS)
            }
            var acc: Float = 0
            for i in 0..<K {
                let r = decay.multiplier(i) * S[i * V + j] + k[i] * write
                S[i * V + j] = r
                acc += scale * q[i] * r
            }
            o[j] = acc
            j += 1
        }
    }

    /// `recurrentToken` on the 32 columns `j ..< j + 32`, as four SIMD8 lanes kept in registers
    /// (a `SIMD32<Float>` compiles to stack spills here).
    @inline(__always)
    static func tokenColumns32(
        _ j: Int, S: UnsafeMutablePointer<Float>, K: Int, V: Int,
        q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
        decay: TokenDecay, beta: Float?, scale: Float, o: UnsafeMutablePointer<Float>
    ) {
        typealias Vec = SIMD8<Float>
        @inline(__always) func load(_ p: UnsafePointer<Float>) -> Vec { UnsafeRawPointer(p).loadUnaligned(as: Vec.self) }
        @inline(__always) func store(_ x: Vec, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: x, as: Vec.self) }
        var (w0, w1, w2, w3) = (load(v + j), load(v + j + 8), load(v + j + 16), load(v + j + 24))
        if let beta {
            var (s0, s1, s2, s3) = (Vec(), Vec(), Vec(), Vec())
            for i in 0..<K {
                let c = Vec(repeating: k[i] * decay.multiplier(i)), row = S + i * V + j
                s0 = s0.addingProduct(c, load(row))
                s1 = s1.addingProduct(c, load(row + 8))
                s2 = s2.addingProduct(c, load(row + 16))
                s3 = s3.addingProduct(c, load(row + 24))
            }
            let b = Vec(repeating: beta)
            (w0, w1, w2, w3) = (b * (w0 - s0), b * (w1 - s1), b * (w2 - s2), b * (w3 - s3))
        }
        var (a0, a1, a2, a3) = (Vec(), Vec(), Vec(), Vec())
        for i in 0..<K {
            let row = S + i * V + j
            let a = Vec(repeating: decay.multiplier(i)), ki = Vec(repeating: k[i]), qi = Vec(repeating: scale * q[i])
            // `addingProduct` is one FMA; Swift does not contract `a * x + y` by itself.
            let r0 = (ki * w0).addingProduct(a, load(row)), r1 = (ki * w1).addingProduct(a, load(row + 8))
            let r2 = (ki * w2).addingProduct(a, load(row + 16)), r3 = (ki * w3).addingProduct(a, load(row + 24))
            store(r0, row)
            store(r1, row + 8)
            store(r2, row + 16)
            store(r3, row + 24)
            a0 = a0.addingProduct(qi, r0)
            a1 = a1.addingProduct(qi, r1)
            a2 = a2.addingProduct(qi, r2)
            a3 = a3.addingProduct(qi, r3)
        }
        store(a0, o + j)
        store(a1, o + j + 8)
        store(a2, o + j + 16)
        store(a3, o + j + 24)
    }

    /// `recurrentToken` on the 8 columns `j ..< j + 8`.
    @inline(__always)
    static func tokenColumns8(
        _ j: Int, S: UnsafeMutablePointer<Float>, K: Int, V: Int,
        q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
        decay: TokenDecay, beta: Float?, scale: Float, o: UnsafeMutablePointer<Float>
    ) {
        typealias Vec = SIMD8<Float>
        var write = UnsafeRawPointer(v + j).loadUnaligned(as: Vec.self)
        if let beta {
            var kS = Vec()
            for i in 0..<K {
                kS = kS.addingProduct(Vec(repeating: k[i] * decay.multiplier(i)), UnsafeRawPointer(S + i * V + j).loadUnaligned(as: Vec.self))
            }
            write = Vec(repeating: beta) * (write - kS)
        }
        var acc = Vec()
        for i in 0..<K {
            let row = UnsafeMutableRawPointer(S + i * V + j)
            let r = (Vec(repeating: k[i]) * write).addingProduct(Vec(repeating: decay.multiplier(i)), row.loadUnaligned(as: Vec.self))
            row.storeBytes(of: r, as: Vec.self)
            acc = acc.addingProduct(Vec(repeating: scale * q[i]), r)
        }
        UnsafeMutableRawPointer(o + j).storeBytes(of: acc, as: Vec.self)
    }

    /// Runs the tokens of `p` on `stateP` (`[B,HV,K,V]`) in place, writing the raw outputs `[B,T,HV,V]` to `outP`
    /// (no normalizer). Parallel over B*HV. O(B*HV*T*K*V).
    static func recurrentScan(_ p: FastProblem, state stateP: SendablePointer<Float>, o outP: SendablePointer<Float>) {
        let d = p.dims
        Parallel.forEach(d.B * d.HV) { bh in
            let b = bh / d.HV, h = bh % d.HV, kh = p.keyHead(h)
            let S = stateP.base + bh * d.K * d.V
            let gateExp = UnsafeMutablePointer<Float>.allocate(capacity: d.K)  // exp(g_t) for vector gates
            defer { gateExp.deallocate() }
            let headDecay = Float(exp(retentionLogDecay(head: h)))
            do {
                let (q, k, v) = (p.q, p.k, p.v)
                for t in 0..<d.T {
                    let row = (b * d.T + t) * d.HV + h, key = p.keyOffset(b, t, kh)
                    let decay: TokenDecay
                    switch p.mechanism.gateKind {
                    case .none: decay = .none
                    case .perHead: decay = .scalar(headDecay)
                    case .scalar: decay = .scalar(exp(p.g![row]))
                    case .vector:
                        RecurrenceSIMD.expInto(gateExp, p.g! + row * d.K, d.K)
                        decay = .vector(gateExp)
                    }
                    recurrentToken(
                        S: S, K: d.K, V: d.V,
                        q: q + key, k: k + key, v: v + row * d.V,
                        decay: decay, beta: p.beta?[row], scale: p.scale,
                        o: outP.base + row * d.V)
                }
            }
        }
    }
}

/// Decode state for one-token steps: the recurrent form, the state `[B,HV,K,V]` updated in place.
public struct RecurrentState: Sendable {
    /// The recurrent state `[B,HV,K,V]` (HV value heads), Float32.
    public var state: Tensor

    /// A zero state `[batch, heads, keyDim, valueDim]`; throws for negative sizes or `keyDim < 1`.
    public init(batch: Int, heads: Int, keyDim: Int, valueDim: Int) throws {
        guard keyDim >= 1 else {
            throw LineaError.invalidArgument(argument: "keyDim", expected: ">= 1", actual: "\(keyDim)")
        }
        try MemoryBudget.check([.init("state", [batch, heads, keyDim, valueDim])])
        state = try Tensor(zeros: [batch, heads, keyDim, valueDim])
    }

    /// Wraps an existing state `[B,H,K,V]` (e.g. `RecurrenceOutput.finalState`); throws for another rank or K < 1.
    public init(state: Tensor) throws {
        try state.expectRank(4, "state", layout: "[B,H,K,V]")
        guard state.shape[2] >= 1 else {
            throw LineaError.shapeMismatch(argument: "state", expected: "[B,H,K,V] with K >= 1", actual: "\(state.shape)")
        }
        self.state = state
    }

    /// Advances every (b,hv) by one token and returns `o [B,HV,V]`. `q, k [B,H,K]` (HV a multiple of H; value head
    /// `hv` reads head `hv / (HV/H)`), `v [B,HV,V]`, `g [B,HV]` (`[B,HV,K]` for gla), `beta [B,HV]`; the same checks
    /// and arithmetic as the recurrent form. Keys are taken as given (no L2 normalization, no linear_attn
    /// normalizer); kda takes fla's in-kernel activations with `aLog [HV]` and `dtBias [HV*K]`. A NaN or infinite `o`
    /// throws `LineaError.nonFinite` (the state keeps the step) unless `allowNonFiniteOutputs`. O(B*HV*K*V).
    public mutating func step(
        _ mechanism: RecurrentMechanism, q: Tensor, k: Tensor, v: Tensor,
        g: Tensor? = nil, beta: Tensor? = nil, scale: Float? = nil, activations: InKernelActivations = .init(),
        aLog: Tensor? = nil, dtBias: Tensor? = nil, allowNonFiniteOutputs: Bool = false
    ) throws -> Tensor {
        try state.expectRank(4, "state", layout: "[B,H,K,V]")
        let (B, HV, K, V) = (state.shape[0], state.shape[1], state.shape[2], state.shape[3])
        // Reuse the sequence checks with T = 1: [B,H,X] is [B,1,H,X] with the same elements.
        try q.expectRank(3, "q", layout: "[B,H,K]")
        let H = q.shape[1]
        try q.expectShape([B, H, K], "q")
        try k.expectShape([B, H, K], "k")
        try v.expectShape([B, HV, V], "v")
        var inputs = RecurrenceInputs(
            q: try q.reshaped([B, 1, H, K]), k: try k.reshaped([B, 1, H, K]), v: try v.reshaped([B, 1, HV, V]),
            scale: scale)
        if let g {
            let gla = mechanism.gateKind == .vector
            try g.expectShape(gla ? [B, HV, K] : [B, HV], "g")
            inputs.g = try g.reshaped(gla ? [B, 1, HV, K] : [B, 1, HV])
        }
        if let beta {
            try beta.expectShape([B, HV], "beta")
            inputs.beta = try beta.reshaped([B, 1, HV])
        }
        (inputs.activations, inputs.aLog, inputs.dtBias) = (activations, aLog, dtBias)
        let dims = try Recurrence.validate(mechanism, inputs)
        var o = [Float](repeating: 0, count: B * HV * V)
        if B * HV * V > 0 {
            state.scalars.withUnsafeMutableBufferPointer { sBuf in o.withUnsafeMutableBufferPointer { oBuf in
                FastProblem.with(mechanism, inputs, dims, scale: scale ?? 1 / Float(K).squareRoot()) { problem in
                    Recurrence.recurrentScan(problem, state: SendablePointer(sBuf.baseAddress!), o: SendablePointer(oBuf.baseAddress!))
                }
            } }
        }
        let out = try Tensor(shape: [B, HV, V], scalars: o)
        if !allowNonFiniteOutputs { try out.checkFiniteOutput("o", hint: Recurrence.nonFiniteHint(mechanism, l2Normalized: false)) }
        return out
    }
}
