import Foundation

// The recurrences on device tensors: one entry point for every device, run by the backend where the inputs live.

/// Sizes of a recurrence call on device tensors: `H` query/key heads, `HV` value (state) heads, a multiple of `H`.
public struct RecurrenceShape: Sendable, Equatable {
    /// Batch, tokens, query/key heads, value heads, key dim, value dim.
    public let B: Int, T: Int, H: Int, HV: Int, K: Int, V: Int

    /// Checks the shapes of a call in fla's layout (`q, k [B,T,H,K]`, `v [B,T,HV,V]`, `g [B,T,HV]` or `[B,T,HV,K]`
    /// for gla, `beta [B,T,HV]`, state `[B,HV,K,V]`) and returns the sizes; every error names the argument. O(1).
    public init(_ mechanism: RecurrentMechanism, q: [Int], k: [Int], v: [Int], g: [Int]?, beta: [Int]?, state: [Int]?) throws {
        guard q.count == 4, q[3] >= 1 else {
            throw LineaError.shapeMismatch(argument: "q", expected: "[B,T,H,K] with K >= 1", actual: "\(q)")
        }
        let (B, T, H, K) = (q[0], q[1], q[2], q[3])
        guard k == q else { throw LineaError.shapeMismatch(argument: "k", expected: "\(q)", actual: "\(k)") }
        guard v.count == 4, v[0] == B, v[1] == T, (H == 0 && v[2] == 0) || (H > 0 && v[2] >= H && v[2] % H == 0) else {
            throw LineaError.shapeMismatch(argument: "v", expected: "[\(B),\(T),HV,V] with HV a multiple of H = \(H)", actual: "\(v)")
        }
        let (HV, V) = (v[2], v[3])
        let name = mechanism.rawValue
        switch mechanism.gateKind {
        case .scalar, .vector:
            let want = mechanism.gateKind == .vector ? [B, T, HV, K] : [B, T, HV]
            guard let g else { throw LineaError.invalidArgument(argument: "g", expected: "a log gate \(want) for \(name)", actual: "none") }
            guard g == want else { throw LineaError.shapeMismatch(argument: "g", expected: "\(want)", actual: "\(g)") }
        case .none, .perHead:
            if let g { throw LineaError.invalidArgument(argument: "g", expected: "none (\(name) takes no gate)", actual: "shape \(g)") }
        }
        if mechanism.isDelta {
            guard let beta else {
                throw LineaError.invalidArgument(argument: "beta", expected: "write strengths [\(B),\(T),\(HV)] for \(name)", actual: "none")
            }
            guard beta == [B, T, HV] else { throw LineaError.shapeMismatch(argument: "beta", expected: "[\(B),\(T),\(HV)]", actual: "\(beta)") }
        } else if let beta {
            throw LineaError.invalidArgument(argument: "beta", expected: "none (\(name) is not a delta rule)", actual: "shape \(beta)")
        }
        if let state, state != [B, HV, K, V] {
            throw LineaError.shapeMismatch(argument: "initial_state", expected: "[\(B),\(HV),\(K),\(V)]", actual: "\(state)")
        }
        (self.B, self.T, self.H, self.HV, self.K, self.V) = (B, T, H, HV, K, V)
    }
}

/// A whole-sequence recurrence as a backend receives it: inputs in fla's layout, `o [B,T,HV,V]` and
/// `finalState [B,HV,K,V]` (f32) preallocated on the inputs' device.
public struct RecurrenceCall: OpCall {
    /// The mechanism and its sizes.
    public let mechanism: RecurrentMechanism, shape: RecurrenceShape
    /// Inputs (f32, bf16 or f16; the state f32).
    public let q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, g: DeviceTensor?, beta: DeviceTensor?, initialState: DeviceTensor?
    /// Outputs, written by the call.
    public let o: DeviceTensor, finalState: DeviceTensor
    /// The form asked for (`nil`: the backend's fastest for the shape).
    public let form: RecurrenceForm?
    /// Query scale, `1/sqrt(K)` when nil; qk L2 normalization; input/output checks (see `RecurrenceInputs`).
    public let scale: Float?, useQKL2Norm: Bool, validate: Bool, allowNonFiniteOutputs: Bool

    public var name: String { mechanism.rawValue }
    public var tensors: [(name: String, tensor: DeviceTensor?)] {
        [("q", q), ("k", k), ("v", v), ("g", g), ("beta", beta), ("initial_state", initialState), ("o", o), ("final_state", finalState)]
    }
}

/// One decode step as a backend receives it: `q, k [B,H,K]`, `v [B,HV,V]`, `g [B,HV]` (`[B,HV,K]` for gla),
/// `beta [B,HV]`, the f32 `state [B,HV,K,V]` updated in place and `o [B,HV,V]` (f32) written.
public struct RecurrentStepCall: OpCall {
    /// The mechanism and its sizes (T = 1).
    public let mechanism: RecurrentMechanism, shape: RecurrenceShape
    /// Inputs of the token.
    public let q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, g: DeviceTensor?, beta: DeviceTensor?
    /// The state, read and written in place, and the output.
    public let state: DeviceTensor, o: DeviceTensor
    /// Query scale, `1/sqrt(K)` when nil; qk L2 normalization inside.
    public let scale: Float?, useQKL2Norm: Bool

    public var name: String { "\(mechanism.rawValue) step" }
    public var tensors: [(name: String, tensor: DeviceTensor?)] {
        [("q", q), ("k", k), ("v", v), ("g", g), ("beta", beta), ("state", state), ("o", o)]
    }
}

extension RecurrenceForm {
    /// What `form: nil` runs for `tokens` tokens: the recurrent scan for up to 64 tokens, chunks of 64 beyond, as
    /// fla's layers switch to `fused_recurrent` for short inputs. O(1).
    public static func automatic(tokens: Int) -> RecurrenceForm {
        tokens <= 64 ? .recurrent : .chunked(size: defaultChunkSize)
    }
}

extension Recurrence {
    /// Runs `mechanism` over whole sequences where the inputs live (all on one device), in fla's layout with grouped
    /// value heads (`v [B,T,HV,V]`, HV a multiple of H); returns `o [B,T,HV,V]` f32 and the final state
    /// `[B,HV,K,V]` f32 on that device. `form` nil picks per shape (`RecurrenceForm.automatic`). O(B·HV·T·K·V).
    public static func forward(
        _ mechanism: RecurrentMechanism, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, g: DeviceTensor? = nil,
        beta: DeviceTensor? = nil, initialState: DeviceTensor? = nil, scale: Float? = nil, form: RecurrenceForm? = nil,
        useQKL2Norm: Bool = false, validate: Bool = true, allowNonFiniteOutputs: Bool = false
    ) throws -> (o: DeviceTensor, finalState: DeviceTensor) {
        let s = try RecurrenceShape(mechanism, q: q.shape, k: k.shape, v: v.shape, g: g?.shape, beta: beta?.shape, state: initialState?.shape)
        try initialState?.expectDType([.float32], "initial_state")
        try MemoryBudget.check([.init("o", [s.B, s.T, s.HV, s.V]), .init("final_state", [s.B, s.HV, s.K, s.V])])
        let o = try DeviceTensor.zeros([s.B, s.T, s.HV, s.V], on: q.device)
        let finalState = try DeviceTensor.zeros([s.B, s.HV, s.K, s.V], on: q.device)
        try Backends.run(RecurrenceCall(
            mechanism: mechanism, shape: s, q: q, k: k, v: v, g: g, beta: beta, initialState: initialState, o: o,
            finalState: finalState, form: form, scale: scale, useQKL2Norm: useQKL2Norm, validate: validate,
            allowNonFiniteOutputs: allowNonFiniteOutputs))
        return (o, finalState)
    }

    /// One decode step of `mechanism` where the inputs live: `q, k [B,H,K]`, `v [B,HV,V]`, `g [B,HV]` (`[B,HV,K]`
    /// for gla), `beta [B,HV]`; the f32 `state [B,HV,K,V]` is updated in place on its device and `o [B,HV,V]` f32 is
    /// written (allocated when nil; pass one to keep a decode loop free of allocations). Returns `o`. O(B·HV·K·V).
    @discardableResult
    public static func step(
        _ mechanism: RecurrentMechanism, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, g: DeviceTensor? = nil,
        beta: DeviceTensor? = nil, state: DeviceTensor, o: DeviceTensor? = nil, scale: Float? = nil, useQKL2Norm: Bool = false
    ) throws -> DeviceTensor {
        func token(_ x: DeviceTensor?, _ name: String) throws -> [Int]? {
            guard let x else { return nil }
            guard x.rank >= 2 else { throw LineaError.shapeMismatch(argument: name, expected: "[B,H,...]", actual: "\(x.shape)") }
            return [x.shape[0], 1] + x.shape.dropFirst()  // [B,H,X] as [B,1,H,X]
        }
        let s = try RecurrenceShape(mechanism, q: token(q, "q")!, k: token(k, "k")!, v: token(v, "v")!, g: token(g, "g"),
                                    beta: token(beta, "beta"), state: state.shape)
        try state.expectDType([.float32], "state")
        guard state.storage.isWritable else {
            throw LineaError.invalidArgument(argument: "state", expected: "writable memory", actual: "a read-only mapping")
        }
        let out = try o ?? DeviceTensor.zeros([s.B, s.HV, s.V], on: q.device)
        try out.expectShape([s.B, s.HV, s.V], "o")
        try out.expectDType([.float32], "o")
        try Backends.run(RecurrentStepCall(mechanism: mechanism, shape: s, q: q, k: k, v: v, g: g, beta: beta, state: state, o: out,
                                           scale: scale, useQKL2Norm: useQKL2Norm))
        return out
    }
}

extension Recurrence {
    /// Writes `x / sqrt(sum x² + 1e-6)` (fla's in-kernel qk L2 normalization) of `count` floats to `out`. O(count).
    static func l2Normalize(_ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int) {
        var sum: Float = 0
        for i in 0..<count { sum += x[i] * x[i] }
        let r = 1 / (sum + 1e-6).squareRoot()
        for i in 0..<count { out[i] = x[i] * r }
    }
}
