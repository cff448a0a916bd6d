import Foundation

/// The host backend: always registered, takes every op in every float dtype (converting to Float32 where its
/// kernels need it: a slower path, never a refusal).
final class CPUBackend: Backend {
    let device = Device.cpu

    func allocate(byteCount: Int) throws -> TensorStorage {
        try TensorStorage.host(byteCount: byteCount)
    }

    /// Not zeroed: the op writes every element (a decode step's recurrent state is about 1 MiB a layer). Filled with
    /// 0xFF bytes (NaN in every float dtype) when `LINEA_POISON_UNINITIALIZED=1`, so a test run catches an element an
    /// op forgot to write.
    func allocateUninitialized(byteCount: Int) throws -> TensorStorage {
        let storage = try TensorStorage.host(byteCount: byteCount, zeroed: false)
        if Backends.poisonUninitialized, let p = storage.hostPointer { memset(p, 0xFF, byteCount) }
        return storage
    }

    /// Host-to-host copy of any two views: one memcpy when both are packed, else one per innermost run. O(bytes).
    func copy(_ source: DeviceTensor, into destination: DeviceTensor) throws {
        guard source.device == .cpu, destination.device == .cpu else {
            throw LineaError.unavailable(what: "copy \(source.device) -> \(destination.device)", reason: "the CPU backend copies host memory only")
        }
        guard let from = source.storage.hostPointer, let to = destination.storage.hostPointer, source.count > 0 else { return }
        let e = source.dtype.byteCount
        StridedRuns(source, destination).forEach { s, d, elements in
            (to + d * e).copyMemory(from: from + s * e, byteCount: elements * e)
        }
    }

    func supports<Call: OpCall>(_ call: Call) -> Support {
        if call is ModelOpCall { return .supported }  // dtypes checked by `Ops`: integer ids, positions and indices belong
        var refusal: String?
        call.forEachTensor { name, tensor in
            if refusal == nil, !tensor.dtype.isFloatingPoint, !(call is BlockSparseCall && name == "mask") {
                refusal = "\(name) has dtype \(tensor.dtype.shortName); \(call.name) takes float tensors"
            }
        }
        if let refusal { return .unsupported(refusal) }
        switch call {
        case is RecurrenceCall, is RecurrentStepCall, is AttentionCall, is BlockSparseCall, is SelectiveScanCall: return .supported
        case is NeighborhoodCall: return .supported
        case is LongConvCall: return .supported
        case is BlockScoresCall: return .supported
        default: return .unsupported("the CPU backend has no \(call.name)")
        }
    }

    func execute<Call: OpCall>(_ call: Call) throws {
        switch call {
        case let c as RecurrenceCall: try recurrence(c)
        case let c as RecurrentStepCall: try step(c)
        case let c as AttentionCall:
            if try attentionInPlace(c) { return }
            let out = try Attention.forward(q: c.q.host(), k: c.k.host(), v: c.v.host(), options: c.options, form: c.form ?? .flash)
            try c.o.copy(from: out.o)
            try c.lse.copy(from: out.lse)
        case let c as ModelOpCall: try modelOp(c)
        case let c as BlockSparseCall:
            let mask = try BlockMask(shape: c.mask.shape, blockRows: c.blockRows, blockKeys: c.blockKeys,
                                     values: c.mask.hostIntegers().map { $0 != 0 ? 1 : 0 })
            if try BlockSparseAttention.fusedInPlace(c, mask: mask) { return }
            let out = try BlockSparseAttention.fused(q: c.q.host(), k: c.k.host(), v: c.v.host(), mask: mask, options: c.options)
            try c.o.copy(from: out.o)
            try c.lse.copy(from: out.lse)
        case let c as SelectiveScanCall: try c.runOnCPU()
        case let c as NeighborhoodCall: try c.runOnCPU()
        case let c as LongConvCall: try c.runOnCPU()
        case let c as BlockScoresCall: try c.runOnCPU()
        default: throw LineaError.unavailable(what: call.name, reason: "the CPU backend has no such op")
        }
    }

    func synchronize() throws {}

    /// A whole sequence: the fast forms read packed f32 inputs in place and write o and the state in place (a 16-bit
    /// or strided tensor is converted first); the reference form goes through host tensors. O(inputs) plus the form.
    private func recurrence(_ c: RecurrenceCall) throws {
        let s = c.shape, form = c.form ?? .automatic(tokens: c.shape.T)
        guard form != .reference else { return try recurrenceOnHostTensors(c, form: form) }
        try Recurrence.checkForm(form)
        if let scale = c.scale, !scale.isFinite {
            throw LineaError.invalidArgument(argument: "scale", expected: "a finite number", actual: "\(scale)")
        }
        let q = try Self.packed(c.q)!, k = try Self.packed(c.k)!, v = try Self.packed(c.v)!
        var g = try Self.packed(c.g), beta = try Self.packed(c.beta)
        let h0 = try Self.packed(c.initialState)
        let (aLog, dtBias, act) = (try Self.packed(c.aLog), try Self.packed(c.dtBias), c.activations)
        if c.validate {
            for (x, argument, raw) in [(q, "q", false), (k, "k", false), (v, "v", false), (g, "g", act.gateInKernel), (beta, "beta", act.betaSigmoid),
                                       (aLog, "A_log", true), (dtBias, "dt_bias", true)] {
                if let x { try Recurrence.checkValues(x.floats, argument, finiteOnly: raw) }
            }
        }
        // kda's in-kernel activations: the raw gate and beta logits activated into new tensors first.
        if act.gateInKernel, let raw = g, raw.count > 0 {
            g = try DeviceTensor.uninitialized(raw.shape)
            act.activateGates(raw.floats.baseAddress!, count: raw.count, HV: s.HV, K: s.K, aLog: aLog?.floats.baseAddress,
                              dtBias: dtBias?.floats.baseAddress, into: g!.mutableFloats.baseAddress!)
        }
        if act.betaSigmoid, let raw = beta, raw.count > 0 {
            beta = try DeviceTensor.uninitialized(raw.shape)
            act.activateBetas(raw.floats.baseAddress!, count: raw.count, into: beta!.mutableFloats.baseAddress!)
        }
        let dims = RecurrenceDims(B: s.B, T: s.T, H: s.H, HV: s.HV, K: s.K, V: s.V)
        // Outputs in place when packed f32 (as Recurrence.forward allocates them), else through one f32 staging tensor.
        let o = c.o.dtype == .float32 && c.o.isContiguous ? c.o : try DeviceTensor.zeros(c.o.shape)
        if o.address == c.o.address, o.byteCount > 0 {  // the forms expect o zeroed (it may come uninitialized)
            Allocation.zeroFill(UnsafeMutableRawPointer(bitPattern: o.address)!, bytes: o.byteCount)
        }
        let state = c.finalState.dtype == .float32 && c.finalState.isContiguous ? c.finalState : try DeviceTensor.zeros(c.finalState.shape)
        if let h0 {
            // Copied and checked in one parallel pass (the state is the largest input of a decode step).
            let finite = RecurrenceSIMD.allFiniteParallel(h0.floats, copyTo: state.mutableFloats.baseAddress)
            if c.validate && !finite { try Recurrence.checkValues(h0.floats, "initial_state") }
        } else {
            Allocation.zeroFill(UnsafeMutableRawPointer(bitPattern: state.address)!, bytes: state.byteCount)
        }
        let (qn, kn) = c.useQKL2Norm ? (try Self.l2Normalized(q, K: s.K), try Self.l2Normalized(k, K: s.K)) : (q, k)
        if s.B * s.T * s.HV * s.V > 0 {
            let problem = FastProblem(mechanism: c.mechanism, dims: dims, scale: c.scale ?? 1 / Float(s.K).squareRoot(),
                                      q: qn.floats.baseAddress!, k: kn.floats.baseAddress!, v: v.floats.baseAddress!,
                                      g: g?.floats.baseAddress, beta: beta?.floats.baseAddress, normalize: false)
            Recurrence.run(problem, form: form, o: o.mutableFloats.baseAddress!, state: state.mutableFloats.baseAddress!)
        }
        if c.validate && !c.allowNonFiniteOutputs {
            let hint = Recurrence.nonFiniteHint(c.mechanism, l2Normalized: c.useQKL2Norm)
            for (name, x) in [("o", o), ("final_state", state)] where !RecurrenceSIMD.allFiniteParallel(x.floats) {
                try x.host().checkFiniteOutput(name, hint: hint)
            }
        }
        if o.address != c.o.address { try c.o.copy(from: o.host()) }
        if state.address != c.finalState.address { try c.finalState.copy(from: state) }
    }

    /// The flash form (one query per head without a form asked for: `Attention.decodeOne`) on the tensors' own memory
    /// when every tensor is packed f32 (a decode step against a KV cache then copies nothing); false when the call needs the host path (another form or layout, or inputs that fail a
    /// check: that path then names the problem). O(the form).
    private func attentionInPlace(_ c: AttentionCall) throws -> Bool {
        guard c.form == nil || c.form == .flash, [c.q, c.k, c.v, c.o, c.lse].allSatisfy({ $0.dtype == .float32 && $0.isContiguous }) else { return false }
        let p = try AttentionProblem(q: c.q.shape, k: c.k.shape, v: c.v.shape, options: c.options)
        guard p.B * p.T * p.Hq > 0, p.S > 0 else { return false }
        let (q, k, v) = (c.q.floats, c.k.floats, c.v.floats)
        // Whether the inputs are finite and small enough for Float32 scores (false: the host path names the bad input).
        func inputsInRange() throws -> Bool {
            guard let maxQ = Tensor.finiteMaxMagnitude(q), let maxK = Tensor.finiteMaxMagnitude(k), let maxV = Tensor.finiteMaxMagnitude(v) else {
                return false
            }
            try Attention.checkFloat32Range(maxQ: maxQ, maxK: maxK, maxV: maxV, D: p.D, S: p.S, scale: p.scale, form: .flash)
            return true
        }
        let (o, lse) = (c.o.mutableFloats.baseAddress!, c.lse.mutableFloats.baseAddress!)
        if c.form == nil && p.T == 1 {
            // A decode step, one query per head: scanning the whole KV cache first would read it twice per step. A
            // non-finite or overflowing key or value makes o or lse non-finite, so the scan runs only then, to name it.
            guard Tensor.finiteMaxMagnitude(q) != nil else { return false }
            Attention.decodeOne(p, AttentionPointers(q, k, v), o: o, lse: lse)
            if !RecurrenceSIMD.allFinite(c.o.floats) || !RecurrenceSIMD.allFinite(c.lse.floats) {
                guard try inputsInRange() else { return false }
            }
        } else {
            guard try inputsInRange() else { return false }
            Attention.flash(p, AttentionPointers(q, k, v), o: o, lse: lse)
        }
        if !c.options.allowNonFiniteOutputs && !RecurrenceSIMD.allFinite(c.o.floats) {
            try AttentionOutput(o: c.o.host(), lse: c.lse.host()).checkFinite(.flash)
        }
        return true
    }

    /// The reference form on host tensors (inputs converted to Float32 tensors, outputs copied back). O(inputs) plus the form.
    private func recurrenceOnHostTensors(_ c: RecurrenceCall, form: RecurrenceForm) throws {
        var inputs = RecurrenceInputs(q: try c.q.host(), k: try c.k.host(), v: try c.v.host(), g: try c.g?.host(),
                                      beta: try c.beta?.host(), initialState: try c.initialState?.host(), scale: c.scale)
        inputs.useQKL2Norm = c.useQKL2Norm
        (inputs.activations, inputs.aLog, inputs.dtBias) = (c.activations, try c.aLog?.host(), try c.dtBias?.host())
        inputs.validate = c.validate
        inputs.allowNonFiniteOutputs = c.allowNonFiniteOutputs
        let out = try Recurrence.forward(c.mechanism, inputs, form: form)
        try c.o.copy(from: out.o)
        try c.finalState.copy(from: out.finalState)
    }

    /// `x` as a packed f32 host tensor: itself when it is one, else a converted copy. O(1) or O(n).
    static func packed(_ x: DeviceTensor?) throws -> DeviceTensor? {
        guard let x else { return nil }
        return x.dtype == .float32 && x.isContiguous ? x : try DeviceTensor(x.host())
    }

    /// Rows of `K` floats scaled to unit L2 norm (fla's in-kernel qk normalization), in a new tensor. O(n).
    static func l2Normalized(_ x: DeviceTensor, K: Int) throws -> DeviceTensor {
        let out = try DeviceTensor.uninitialized(x.shape)
        let (src, dst) = (x.floats.baseAddress, out.mutableFloats.baseAddress)
        if let src, let dst {
            for row in stride(from: 0, to: x.count, by: K) { Recurrence.l2Normalize(src + row, into: dst + row, count: K) }
        }
        return out
    }

    /// One token for every (b, value head) on the state in place; allocation-free when the inputs are packed f32.
    /// O(B·HV·K·V), parallel over B·HV.
    private func step(_ c: RecurrentStepCall) throws {
        let s = c.shape
        guard s.B * s.HV * s.V > 0 else { return }
        let (q, k, v, g, beta) = (try Self.packed(c.q)!, try Self.packed(c.k)!, try Self.packed(c.v)!, try Self.packed(c.g), try Self.packed(c.beta))
        guard c.state.isContiguous, c.o.isContiguous else {
            throw LineaError.invalidArgument(argument: c.state.isContiguous ? "o" : "state", expected: "a packed tensor", actual: "a strided view")
        }
        func floats(_ x: DeviceTensor?) -> UnsafePointer<Float>? {
            x.map { UnsafePointer(UnsafeMutablePointer<Float>(bitPattern: $0.address)!) }
        }
        let (aLog, dtBias) = (try Self.packed(c.aLog), try Self.packed(c.dtBias))
        let items = StepItems(
            mechanism: c.mechanism, l2: c.useQKL2Norm, scale: c.scale ?? 1 / Float(s.K).squareRoot(), H: s.H, HV: s.HV, K: s.K, V: s.V,
            q: floats(q)!, k: floats(k)!, v: floats(v)!, g: floats(g), beta: floats(beta),
            activations: c.activations, aLog: floats(aLog), dtBias: floats(dtBias),
            state: UnsafeMutablePointer<Float>(bitPattern: c.state.address)!, o: UnsafeMutablePointer<Float>(bitPattern: c.o.address)!)
        Parallel.forEachStatic(s.B * s.HV, items)
    }
}

/// One decode token for each (b, value head) of a step call: the item `b·HV + hv` updates its K x V state in place.
private struct StepItems: ParallelItems, @unchecked Sendable {
    let mechanism: RecurrentMechanism, l2: Bool, scale: Float, H: Int, HV: Int, K: Int, V: Int
    let q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>, g: UnsafePointer<Float>?, beta: UnsafePointer<Float>?
    /// kda's in-kernel activations and their parameters.
    let activations: InKernelActivations, aLog: UnsafePointer<Float>?, dtBias: UnsafePointer<Float>?
    let state: UnsafeMutablePointer<Float>, o: UnsafeMutablePointer<Float>

    func run(_ bhv: Int) {
        let (b, hv) = bhv.quotientAndRemainder(dividingBy: HV)
        let row = b * H + hv / (HV / H)  // the q/k head this value head reads
        var (qRow, kRow) = (q + row * K, k + row * K)
        let bt = beta.map { activations.betaSigmoid ? activations.beta8(SIMD8(repeating: $0[bhv]))[0] : $0[bhv] }
        func token(_ decay: TokenDecay) {
            Recurrence.recurrentToken(S: state + bhv * K * V, K: K, V: V, q: qRow, k: kRow, v: v + bhv * V,
                                      decay: decay, beta: bt, scale: scale, o: o + bhv * V)
        }
        switch mechanism.gateKind {
        case .none where !l2: token(.none)
        case .perHead where !l2: token(.scalar(Float(exp(Recurrence.retentionLogDecay(head: hv)))))
        case .scalar where !l2: token(.scalar(exp(g![bhv])))
        default:
            // Normalized q, k and per-row decays need K-float rows: scratch only on this path (heap past 1 KiB).
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 3 * K) { scratch in
                let qn = scratch.baseAddress!, kn = qn + K, gateExp = kn + K
                if l2 {
                    Recurrence.l2Normalize(qRow, into: qn, count: K)
                    Recurrence.l2Normalize(kRow, into: kn, count: K)
                    (qRow, kRow) = (UnsafePointer(qn), UnsafePointer(kn))
                }
                switch mechanism.gateKind {
                case .none: token(.none)
                case .perHead: token(.scalar(Float(exp(Recurrence.retentionLogDecay(head: hv)))))
                case .scalar: token(.scalar(exp(g![bhv])))
                case .vector:
                    if activations.gateInKernel {
                        activations.activateGateRow(g! + bhv * K, head: hv, K: K, aLog: aLog, dtBias: dtBias, into: gateExp)
                        for i in 0..<K { gateExp[i] = exp(gateExp[i]) }
                    } else {
                        for i in 0..<K { gateExp[i] = exp(g![bhv * K + i]) }
                    }
                    token(.vector(UnsafePointer(gateExp)))
                }
            }
        }
    }
}

/// The packed runs shared by two views of equal shape: the innermost axes both store contiguously are merged into
/// one run, and the outer axes are walked. O(runs · rank).
package struct StridedRuns {
    let shape: [Int], a: [Int], b: [Int], offsets: (Int, Int)

    /// The runs of `x` and `y` (same shape). O(rank).
    package init(_ x: DeviceTensor, _ y: DeviceTensor) {
        (shape, a, b, offsets) = (x.shape, x.strides, y.strides, (x.offset, y.offset))
    }

    /// The box with adjacent axes merged where both views step through them as one (size-1 axes dropped): the shape and
    /// each view's strides, at least one axis. O(rank).
    package var merged: (shape: [Int], a: [Int], b: [Int]) {
        var (n, sa, sb) = ([Int](), [Int](), [Int]())
        for axis in shape.indices where shape[axis] != 1 {
            if let last = n.indices.last, sa[last] == a[axis] * shape[axis], sb[last] == b[axis] * shape[axis] {
                n[last] *= shape[axis]
                (sa[last], sb[last]) = (a[axis], b[axis])
            } else {
                n.append(shape[axis]); sa.append(a[axis]); sb.append(b[axis])
            }
        }
        return n.isEmpty ? ([1], [1], [1]) : (n, sa, sb)
    }

    /// Calls `body(aOffset, bOffset, elements)` for each run, offsets in elements from the storages' starts.
    package func forEach(_ body: (Int, Int, Int) throws -> Void) rethrows {
        var inner = shape.count, run = 1
        while inner > 0, a[inner - 1] == run, b[inner - 1] == run {
            inner -= 1
            run *= shape[inner]
        }
        let outer = shape.prefix(inner)
        let total = outer.reduce(1, *)
        guard total > 0, run > 0 else { return }
        var index = [Int](repeating: 0, count: inner)
        for _ in 0..<total {
            var (oa, ob) = offsets
            for axis in 0..<inner {
                oa += index[axis] * a[axis]
                ob += index[axis] * b[axis]
            }
            try body(oa, ob, run)
            var axis = inner - 1
            while axis >= 0 {
                index[axis] += 1
                if index[axis] < shape[axis] { break }
                index[axis] = 0
                axis -= 1
            }
        }
    }
}
