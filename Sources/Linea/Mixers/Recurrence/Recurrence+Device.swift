import Foundation

// The recurrences on device tensors: one entry point for every device, run by the backend where the inputs live.

/// Sizes of a recurrence call on device tensors: `H` query/key heads, `HV` value (state) heads, a multiple of `H`.
public struct RecurrenceShape: Sendable, Equatable {
    /// Batch, tokens, query/key heads, value heads, key dim, value dim.
    public let B: Int, T: Int, H: Int, HV: Int, K: Int, V: Int

    /// Checks the shapes of a call in fla's layout (`q, k [B,T,H,K]`, `v [B,T,HV,V]`, `g [B,T,HV]` or `[B,T,HV,K]`
    /// for gla, `beta [B,T,HV]`, state `[B,HV,K,V]`; with `step`, one token without the T axis: `q [B,H,K]`...) and
    /// returns the sizes; every error names the argument. Allocation-free when the shapes are right (decode loops). O(1).
    public init(_ mechanism: RecurrentMechanism, q: [Int], k: [Int], v: [Int], g: [Int]?, beta: [Int]?, state: [Int]?,
                step: Bool = false) throws {
        let axis = step ? 1 : 2  // the heads axis
        let lead = step ? "[B," : "[B,T,"
        func rank(_ shape: [Int], _ argument: String, _ layout: @autoclosure () -> String) throws {
            guard shape.count == axis + 2 else {
                throw LineaError.shapeMismatch(argument: argument, expected: layout(), actual: "\(shape) (rank \(shape.count))")
            }
        }
        try rank(q, "q", lead + "H,K]")
        guard q[axis + 1] >= 1 else { throw LineaError.shapeMismatch(argument: "q", expected: lead + "H,K] with K >= 1", actual: "\(q)") }
        let (B, T, H, K) = (q[0], step ? 1 : q[1], q[axis], q[axis + 1])
        // Built on the error paths only: the checks themselves compare extents, so a decode loop allocates nothing.
        func expected(_ heads: Int, _ last: Int?) -> [Int] { [B] + (step ? [] : [T]) + [heads] + (last.map { [$0] } ?? []) }
        func layout(_ heads: String, _ last: String?) -> String {
            "[" + ([String(B)] + (step ? [] : [String(T)]) + [heads] + (last.map { [$0] } ?? [])).joined(separator: ",") + "]"
        }
        func same(_ s: [Int], _ heads: Int, _ last: Int?) -> Bool {
            guard s.count == axis + (last == nil ? 1 : 2), s[0] == B, step || s[1] == T, s[axis] == heads else { return false }
            return last.map { s[axis + 1] == $0 } ?? true
        }
        guard k == q else { throw LineaError.shapeMismatch(argument: "k", expected: "\(q)", actual: "\(k)") }
        try rank(v, "v", lead + "HV,V]")
        guard v[0] == B, step || v[1] == T, (H == 0 && v[axis] == 0) || (H > 0 && v[axis] >= H && v[axis] % H == 0) else {
            throw LineaError.shapeMismatch(argument: "v", expected: "\(layout("HV", "V")) with HV a multiple of H = \(H)", actual: "\(v)")
        }
        let (HV, V) = (v[axis], v[axis + 1])
        let name = mechanism.rawValue
        switch mechanism.gateKind {
        case .scalar, .vector:
            let last = mechanism.gateKind == .vector ? K : nil
            guard let g else {
                throw LineaError.invalidArgument(argument: "g", expected: "a log gate \(layout(String(HV), last.map(String.init))) for \(name)", actual: "none")
            }
            guard same(g, HV, last) else { throw LineaError.shapeMismatch(argument: "g", expected: "\(expected(HV, last))", actual: "\(g)") }
        case .none, .perHead:
            if let g { throw LineaError.invalidArgument(argument: "g", expected: "none (\(name) takes no gate)", actual: "shape \(g)") }
        }
        if mechanism.isDelta {
            guard let beta else {
                throw LineaError.invalidArgument(argument: "beta", expected: "write strengths \(layout(String(HV), nil)) for \(name)", actual: "none")
            }
            guard same(beta, HV, nil) else { throw LineaError.shapeMismatch(argument: "beta", expected: "\(expected(HV, nil))", actual: "\(beta)") }
        } else if let beta {
            throw LineaError.invalidArgument(argument: "beta", expected: "none (\(name) is not a delta rule)", actual: "shape \(beta)")
        }
        if let state, state.count != 4 || state[0] != B || state[1] != HV || state[2] != K || state[3] != V {
            throw LineaError.shapeMismatch(argument: step ? "state" : "initial_state", expected: "\([B, HV, K, V])", actual: "\(state)")
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
    /// kda's in-kernel activations of a raw g and beta, with `A_log [HV]` and `dt_bias [HV*K]` (f32).
    public let activations: InKernelActivations, aLog: DeviceTensor?, dtBias: DeviceTensor?

    public var name: String { mechanism.rawValue }
    public func forEachTensor(_ body: (_ name: String, _ tensor: DeviceTensor) throws -> Void) rethrows {
        try body("q", q)
        try body("k", k)
        try body("v", v)
        if let g { try body("g", g) }
        if let beta { try body("beta", beta) }
        if let initialState { try body("initial_state", initialState) }
        if let aLog { try body("A_log", aLog) }
        if let dtBias { try body("dt_bias", dtBias) }
        try body("o", o)
        try body("final_state", finalState)
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
    /// kda's in-kernel activations of a raw g and beta, with `A_log [HV]` and `dt_bias [HV*K]` (f32).
    public let activations: InKernelActivations, aLog: DeviceTensor?, dtBias: DeviceTensor?

    public var name: String { "\(mechanism.rawValue) step" }
    public func forEachTensor(_ body: (_ name: String, _ tensor: DeviceTensor) throws -> Void) rethrows {
        try body("q", q)
        try body("k", k)
        try body("v", v)
        if let g { try body("g", g) }
        if let beta { try body("beta", beta) }
        if let aLog { try body("A_log", aLog) }
        if let dtBias { try body("dt_bias", dtBias) }
        try body("state", state)
        try body("o", o)
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
    /// `[B,HV,K,V]` f32 on that device. `form` nil picks per shape (`RecurrenceForm.automatic`). kda takes fla's
    /// in-kernel activations with f32 `aLog [HV]` and `dtBias [HV*K]`. O(B·HV·T·K·V).
    public static func forward(
        _ mechanism: RecurrentMechanism, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, g: DeviceTensor? = nil,
        beta: DeviceTensor? = nil, initialState: DeviceTensor? = nil, scale: Float? = nil, form: RecurrenceForm? = nil,
        useQKL2Norm: Bool = false, activations: InKernelActivations = .init(), aLog: DeviceTensor? = nil, dtBias: DeviceTensor? = nil,
        validate: Bool = true, allowNonFiniteOutputs: Bool = false, outputDType: DType = .float32
    ) throws -> (o: DeviceTensor, finalState: DeviceTensor) {
        let s = try RecurrenceShape(mechanism, q: q.shape, k: k.shape, v: v.shape, g: g?.shape, beta: beta?.shape, state: initialState?.shape)
        try checkActivations(mechanism, activations, aLog: aLog?.shape, dtBias: dtBias?.shape, HV: s.HV, K: s.K)
        try initialState?.expectDType([.float32], "initial_state")
        try aLog?.expectDType([.float32], "A_log")
        try dtBias?.expectDType([.float32], "dt_bias")
        try DeviceTensor.expectOutputDType(outputDType)
        try MemoryBudget.check([.init("o", [s.B, s.T, s.HV, s.V]), .init("final_state", [s.B, s.HV, s.K, s.V])])
        // Both are written whole by the op.
        let o = try DeviceTensor.uninitialized([s.B, s.T, s.HV, s.V], dtype: outputDType, on: q.device)
        let finalState = try DeviceTensor.uninitialized([s.B, s.HV, s.K, s.V], on: q.device)
        try Backends.run(RecurrenceCall(
            mechanism: mechanism, shape: s, q: q, k: k, v: v, g: g, beta: beta, initialState: initialState, o: o,
            finalState: finalState, form: form, scale: scale, useQKL2Norm: useQKL2Norm, validate: validate,
            allowNonFiniteOutputs: allowNonFiniteOutputs, activations: activations, aLog: aLog, dtBias: dtBias))
        return (o, finalState)
    }

    /// One decode step of `mechanism` where the inputs live: `q, k [B,H,K]`, `v [B,HV,V]`, `g [B,HV]` (`[B,HV,K]`
    /// for gla), `beta [B,HV]`; the f32 `state [B,HV,K,V]` is updated in place on its device and `o [B,HV,V]` f32 is
    /// written (allocated when nil; pass one to keep a decode loop free of allocations). kda takes fla's in-kernel
    /// activations with f32 `aLog [HV]` and `dtBias [HV*K]`. Returns `o`. O(B·HV·K·V).
    @discardableResult
    public static func step(
        _ mechanism: RecurrentMechanism, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, g: DeviceTensor? = nil,
        beta: DeviceTensor? = nil, state: DeviceTensor, o: DeviceTensor? = nil, scale: Float? = nil, useQKL2Norm: Bool = false,
        activations: InKernelActivations = .init(), aLog: DeviceTensor? = nil, dtBias: DeviceTensor? = nil
    ) throws -> DeviceTensor {
        let s = try RecurrenceShape(mechanism, q: q.shape, k: k.shape, v: v.shape, g: g?.shape, beta: beta?.shape, state: state.shape,
                                    step: true)
        try checkActivations(mechanism, activations, aLog: aLog?.shape, dtBias: dtBias?.shape, HV: s.HV, K: s.K)
        if let aLog, aLog.dtype != .float32 { try aLog.expectDType([.float32], "A_log") }
        if let dtBias, dtBias.dtype != .float32 { try dtBias.expectDType([.float32], "dt_bias") }
        // Checked without array literals: a decode loop calls this per layer and token and must not allocate.
        if state.dtype != .float32 { try state.expectDType([.float32], "state") }
        guard state.storage.isWritable else {
            throw LineaError.invalidArgument(argument: "state", expected: "writable memory", actual: "a read-only mapping")
        }
        let out = try o ?? DeviceTensor.zeros([s.B, s.HV, s.V], on: q.device)
        if out.rank != 3 || out.shape[0] != s.B || out.shape[1] != s.HV || out.shape[2] != s.V { try out.expectShape([s.B, s.HV, s.V], "o") }
        if out.dtype != .float32 { try out.expectDType([.float32], "o") }
        try Backends.run(RecurrentStepCall(mechanism: mechanism, shape: s, q: q, k: k, v: v, g: g, beta: beta, state: state, o: out,
                                           scale: scale, useQKL2Norm: useQKL2Norm, activations: activations, aLog: aLog, dtBias: dtBias))
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
