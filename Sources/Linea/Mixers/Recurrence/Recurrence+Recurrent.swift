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
    /// `beta` nil means the plain `k v^T` write. `u` is V floats of scratch; `o` receives V floats. O(K*V).
    @inline(__always)
    static func recurrentToken(
        S: UnsafeMutablePointer<Float>, K: Int, V: Int,
        q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
        decay: TokenDecay, beta: Float?, scale: Float,
        u: UnsafeMutablePointer<Float>, o: UnsafeMutablePointer<Float>
    ) {
        var write = v
        if let beta {
            // u = beta (v - (Diag(a) S)^T k), read from the decayed state.
            u.update(repeating: 0, count: V)
            for i in 0..<K { RecurrenceSIMD.axpy(u, k[i] * decay.multiplier(i), S + i * V, V) }
            for j in 0..<V { u[j] = beta * (v[j] - u[j]) }
            write = UnsafePointer(u)
        }
        o.update(repeating: 0, count: V)
        for i in 0..<K {
            // row <- a_i row + k_i write;  o += (scale q_i) row
            let row = S + i * V
            let a = decay.multiplier(i), ki = k[i], qi = scale * q[i]
            let a8 = SIMD8<Float>(repeating: a), k8 = SIMD8<Float>(repeating: ki), q8 = SIMD8<Float>(repeating: qi)
            var j = 0
            while j + 8 <= V {
                let rp = UnsafeMutableRawPointer(row + j), op = UnsafeMutableRawPointer(o + j)
                let r = a8 * rp.loadUnaligned(as: SIMD8<Float>.self) + k8 * UnsafeRawPointer(write + j).loadUnaligned(as: SIMD8<Float>.self)
                rp.storeBytes(of: r, as: SIMD8<Float>.self)
                op.storeBytes(of: op.loadUnaligned(as: SIMD8<Float>.self) + q8 * r, as: SIMD8<Float>.self)
                j += 8
            }
            while j < V {
                let r = a * row[j] + ki * write[j]
                row[j] = r
                o[j] += qi * r
                j += 1
            }
        }
    }

    /// Recurrent form: a Float32 scan over T, parallel over B*H. O(B*H*T*K*V) time, O(K*V) state per (b,h).
    static func recurrentForward(_ p: FastProblem) -> RecurrenceOutput {
        let d = p.dims
        var o = [Float](repeating: 0, count: d.B * d.T * d.H * d.V)
        var state = p.startingState()
        o.withUnsafeMutableBufferPointer { oBuf in state.withUnsafeMutableBufferPointer { sBuf in
            let outP = SendablePointer(oBuf.baseAddress!), stateP = SendablePointer(sBuf.baseAddress!)
            Parallel.forEach(d.B * d.H) { bh in
                let b = bh / d.H, h = bh % d.H
                let S = stateP.base + bh * d.K * d.V
                let u = UnsafeMutablePointer<Float>.allocate(capacity: d.V + d.K)
                defer { u.deallocate() }
                let gateExp = u + d.V  // K floats for vector gates
                let headDecay = Float(exp(retentionLogDecay(head: h)))
                p.q.withUnsafeBufferPointer { q in p.k.withUnsafeBufferPointer { k in p.v.withUnsafeBufferPointer { v in
                    for t in 0..<d.T {
                        let row = (b * d.T + t) * d.H + h
                        let decay: TokenDecay
                        switch p.mechanism.gateKind {
                        case .none: decay = .none
                        case .perHead: decay = .scalar(headDecay)
                        case .scalar: decay = .scalar(exp(p.g![row]))
                        case .vector:
                            p.g!.withUnsafeBufferPointer { RecurrenceSIMD.expInto(gateExp, $0.baseAddress! + row * d.K, d.K) }
                            decay = .vector(gateExp)
                        }
                        recurrentToken(
                            S: S, K: d.K, V: d.V,
                            q: q.baseAddress! + row * d.K, k: k.baseAddress! + row * d.K, v: v.baseAddress! + row * d.V,
                            decay: decay, beta: p.beta?[row], scale: p.scale,
                            u: u, o: outP.base + row * d.V)
                    }
                } } }
            }
        } }
        if p.normalize { p.applyNormalizer(&o) }
        return RecurrenceOutput(
            o: Tensor(uncheckedShape: [d.B, d.T, d.H, d.V], scalars: o),
            finalState: Tensor(uncheckedShape: [d.B, d.H, d.K, d.V], scalars: state))
    }
}

/// Decode state for one-token steps: the recurrent form, the state `[B,H,K,V]` updated in place.
public struct RecurrentState: Sendable {
    /// The recurrent state `[B,H,K,V]`, Float32.
    public var state: Tensor

    /// A zero state `[batch, heads, keyDim, valueDim]`; throws for negative sizes or `keyDim < 1`.
    public init(batch: Int, heads: Int, keyDim: Int, valueDim: Int) throws {
        guard keyDim >= 1 else {
            throw LineaError.invalidArgument(argument: "keyDim", expected: ">= 1", actual: "\(keyDim)")
        }
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

    /// Advances every (b,h) by one token and returns `o [B,H,V]`. `q, k [B,H,K]`, `v [B,H,V]`, `g [B,H]`
    /// (`[B,H,K]` for gla), `beta [B,H]`; the same checks and arithmetic as the recurrent form. Keys are taken
    /// as given (no L2 normalization, no linear_attn normalizer). O(B*H*K*V).
    public mutating func step(
        _ mechanism: RecurrentMechanism, q: Tensor, k: Tensor, v: Tensor,
        g: Tensor? = nil, beta: Tensor? = nil, scale: Float? = nil
    ) throws -> Tensor {
        try state.expectRank(4, "state", layout: "[B,H,K,V]")
        let (B, H, K, V) = (state.shape[0], state.shape[1], state.shape[2], state.shape[3])
        // Reuse the sequence checks with T = 1: [B,H,X] is [B,1,H,X] with the same elements.
        try q.expectShape([B, H, K], "q")
        try k.expectShape([B, H, K], "k")
        try v.expectShape([B, H, V], "v")
        var inputs = RecurrenceInputs(
            q: try q.reshaped([B, 1, H, K]), k: try k.reshaped([B, 1, H, K]), v: try v.reshaped([B, 1, H, V]),
            scale: scale)
        if let g {
            let gla = mechanism.gateKind == .vector
            try g.expectShape(gla ? [B, H, K] : [B, H], "g")
            inputs.g = try g.reshaped(gla ? [B, 1, H, K] : [B, 1, H])
        }
        if let beta {
            try beta.expectShape([B, H], "beta")
            inputs.beta = try beta.reshaped([B, 1, H])
        }
        inputs.initialState = state
        let dims = try Recurrence.validate(mechanism, inputs)
        let problem = FastProblem(mechanism, inputs, dims, scale: scale ?? 1 / Float(K).squareRoot())
        if B * H * V == 0 { return try Tensor(zeros: [B, H, V]) }
        let result = Recurrence.recurrentForward(problem)
        state = result.finalState
        return try result.o.reshaped([B, H, V])
    }
}
