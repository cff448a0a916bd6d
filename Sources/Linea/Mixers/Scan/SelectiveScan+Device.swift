/// The selective scan as a backend receives it: the inputs, the outputs it writes (`o [B,D,L]` f32, `finalState
/// [B,D,N]` f32 holding the initial state on entry) and the options.
public struct SelectiveScanCall: OpCall {
    /// Inputs (see `SelectiveScan`).
    public let u: DeviceTensor, delta: DeviceTensor, A: DeviceTensor, B: DeviceTensor, C: DeviceTensor
    /// Optional inputs.
    public let D: DeviceTensor?, z: DeviceTensor?, deltaBias: DeviceTensor?
    /// softplus(delta + delta_bias) as mamba_ssm's `delta_softplus`.
    public let deltaSoftplus: Bool
    /// Outputs: o, and the state (initial on entry, final on return).
    public let o: DeviceTensor, state: DeviceTensor

    public var name: String { "selective_scan" }
    public func forEachTensor(_ body: (_ name: String, _ tensor: DeviceTensor) throws -> Void) rethrows {
        for (name, t) in [("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z), ("delta_bias", deltaBias),
                          ("o", o), ("final_state", state)] {
            if let t { try body(name, t) }
        }
    }

    /// Runs on the CPU: packed f32 inputs read in place (others converted once), o and the state written in place.
    /// O(B·D·L·N) over every core.
    func runOnCPU() throws {
        let s = try SelectiveScan.shape(u: u.shape, delta: delta.shape, A: A.shape, B: B.shape, C: C.shape, D: D?.shape, z: z?.shape,
                                        deltaBias: deltaBias?.shape, initialState: state.shape)
        var converted: [DeviceTensor] = []
        func pointer(_ t: DeviceTensor?) throws -> UnsafePointer<Float>? {
            guard let t else { return nil }
            if t.device == .cpu, t.dtype == .float32, t.isContiguous { return t.floats.baseAddress }
            converted.append(try DeviceTensor(t.host()))
            return converted[converted.count - 1].floats.baseAddress
        }
        let (pu, pd, pa, pb, pc) = (try pointer(u), try pointer(delta), try pointer(A), try pointer(B), try pointer(C))
        let (pD, pz, pBias) = (try pointer(D), try pointer(z), try pointer(deltaBias))
        guard s.batch * s.channels * s.length > 0, let pu, let pd, let pa, let pb, let pc else { return }
        SelectiveScan.scan(s, u: pu, delta: pd, A: pa, B: pb, C: pc, D: pD, z: pz, deltaBias: pBias, deltaSoftplus: deltaSoftplus,
                           state: state.mutableFloats.baseAddress!, o: o.mutableFloats.baseAddress!)
        withExtendedLifetime(converted) {}
    }
}

extension SelectiveScan {
    /// The scan where the inputs live (all on one device, float dtypes): returns `o [B,D,L]` and `finalState [B,D,N]`,
    /// f32, on that device. Decoding calls it with L = 1 and the previous final state. `validate` checks values
    /// (finite, A <= 0) on the host first. O(B·D·L·N); the CPU runs channels in parallel on every core.
    public static func forward(u: DeviceTensor, delta: DeviceTensor, A: DeviceTensor, B: DeviceTensor, C: DeviceTensor, D: DeviceTensor? = nil,
                               z: DeviceTensor? = nil, deltaBias: DeviceTensor? = nil, deltaSoftplus: Bool = false,
                               initialState: DeviceTensor? = nil, validate: Bool = false) throws -> (o: DeviceTensor, finalState: DeviceTensor) {
        let s = try shape(u: u.shape, delta: delta.shape, A: A.shape, B: B.shape, C: C.shape, D: D?.shape, z: z?.shape,
                          deltaBias: deltaBias?.shape, initialState: initialState?.shape)
        if validate {
            var host = ["u": try u.host(), "delta": try delta.host(), "A": try A.host(), "B": try B.host(), "C": try C.host()]
            for (name, t) in [("D", D), ("z", z), ("delta_bias", deltaBias), ("initial_state", initialState)] {
                if let t { host[name] = try t.host() }
            }
            try SelectiveScan.validate(host)
        }
        try MemoryBudget.check([.init("o", u.shape), .init("final_state", [s.batch, s.channels, s.state])])
        let o = try DeviceTensor.uninitialized(u.shape, on: u.device)
        let state = try DeviceTensor.zeros([s.batch, s.channels, s.state], on: u.device)
        if let initialState { try state.copy(from: initialState.dtype == .float32 ? initialState : DeviceTensor(initialState.host(), on: u.device)) }
        try Backends.run(SelectiveScanCall(u: u, delta: delta, A: A, B: B, C: C, D: D, z: z, deltaBias: deltaBias, deltaSoftplus: deltaSoftplus,
                                           o: o, state: state))
        return (o, state)
    }
}
