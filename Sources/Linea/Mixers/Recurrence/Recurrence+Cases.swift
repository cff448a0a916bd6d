import Foundation

/// One of the seven recurrences as an op family: fla's inputs (`q, k [B,T,H,K]`, `v [B,T,HV,V]`, g, beta,
/// initial_state; kda also fla's `A_log` and `dt_bias` for its in-kernel gate), outputs `o` and `final_state`; forms
/// `recurrent`, `chunked[:N]` and `step` (the decode step run token by token over the sequence, the state updated in
/// place), `reference` on the CPU.
public struct RecurrenceFamily: OpFamily {
    /// The mechanism.
    public let mechanism: RecurrentMechanism

    /// The family of `mechanism`. O(1).
    public init(_ mechanism: RecurrentMechanism) { self.mechanism = mechanism }

    public var name: String { mechanism.rawValue }

    public var summary: String {
        switch mechanism {
        case .linearAttention: "linear attention: S += k vᵀ (optional normalizer)"
        case .retention: "RetNet: fixed decay 1 - 2^(-5-h) per (value) head"
        case .simpleGLA: "scalar gate per head (Mamba-2 SSD core)"
        case .gla: "vector gate over K (GLA, HGRN2)"
        case .deltaRule: "DeltaNet: delta-rule write with strength beta"
        case .gatedDeltaRule: "Gated DeltaNet: scalar gate + delta rule"
        case .kda: "Kimi Delta Attention: vector gate over K + delta rule"
        }
    }

    public var inputs: [OpInput] {
        Recurrence.requiredInputs(mechanism).map { OpInput($0) } + [OpInput("initial_state", optional: true)]
            + (mechanism == .kda ? [OpInput("A_log", optional: true), OpInput("dt_bias", optional: true)] : [])
    }

    public var outputs: [String] { ["o", "final_state"] }

    /// CPU: chunked (64), recurrent, chunked:16, step; GPU: the chunked kernels (kda's with bf16 inputs; f32 and f16
    /// run its recurrent kernel), the recurrent scan kernel and the step kernel.
    public func forms(on device: Device) -> [String] {
        guard device == .cpu else { return ["chunked", "recurrent", "step"] }
        return ["chunked", "recurrent", "chunked:16", "step"]
    }

    /// The step kernel reads q, k, v, g and beta in one dtype; the chunked kernels read f32 gates; states are f32.
    public func inputDType(_ name: String, form: String, compute dtype: DType) -> DType {
        switch name {
        case "q", "k", "v": dtype
        case "g", "beta": form == "step" ? dtype : .float32
        default: .float32
        }
    }

    /// The form parsed: `reference`, `recurrent`, `chunked` (64), `chunked:N`, `auto` (nil: per length), or `step`
    /// (nil as well: the caller steps). O(1).
    static func parse(_ form: String) throws -> (form: RecurrenceForm?, step: Bool) {
        switch form {
        case "reference": return (.reference, false)
        case "recurrent": return (.recurrent, false)
        case "chunked": return (.chunked(size: RecurrenceForm.defaultChunkSize), false)
        case "auto": return (nil, false)
        case "step": return (nil, true)
        default:
            if form.hasPrefix("chunked:"), let n = Int(form.dropFirst(8)), n >= 1 { return (.chunked(size: n), false) }
            throw LineaError.invalidArgument(argument: "--form", expected: "one of reference, recurrent, chunked, chunked:N, step, auto",
                                             actual: "'\(form)'")
        }
    }

    public func check(form: String, options: OpOptions) throws {
        _ = try Self.parse(form)
        if options.normalize && mechanism != .linearAttention {
            throw LineaError.invalidArgument(argument: "--normalize", expected: "linear_attn (its normalizer)", actual: name)
        }
        if !options.activations.isEmpty && mechanism != .kda {
            throw LineaError.invalidArgument(argument: "--gate-in-kernel", expected: "kda (its in-kernel gate and beta activations)", actual: name)
        }
        try options.activations.check()
        if options.normalize && form == "step" {
            throw LineaError.invalidArgument(argument: "--normalize", expected: "a whole-sequence form (the step keeps no normalizer state)",
                                             actual: "--form step")
        }
    }

    /// Host inputs as `RecurrenceInputs` with the options applied.
    func hostInputs(_ x: [String: Tensor], options: OpOptions) throws -> RecurrenceInputs {
        let required = Recurrence.requiredInputs(mechanism)
        var inputs = RecurrenceInputs(q: try need(x, "q"), k: try need(x, "k"), v: try need(x, "v"),
                                      g: required.contains("g") ? try need(x, "g") : nil,
                                      beta: required.contains("beta") ? try need(x, "beta") : nil,
                                      initialState: x["initial_state"], scale: options.scale)
        inputs.normalize = options.normalize
        inputs.useQKL2Norm = options.useQKL2Norm
        (inputs.activations, inputs.aLog, inputs.dtBias) = (options.activations, x["A_log"], x["dt_bias"])
        inputs.validate = options.validate
        inputs.allowNonFiniteOutputs = options.allowNonFiniteOutputs
        return inputs
    }

    public func checkValues(_ inputs: [String: Tensor], form: String, options: OpOptions) throws {
        _ = try Recurrence.checkInputs(mechanism, hostInputs(inputs, options: options))
    }

    public func reference(_ inputs: [String: Tensor], options: OpOptions) throws -> [String: Tensor] {
        let out = try Recurrence.forward(mechanism, hostInputs(inputs, options: options), form: .reference)
        return ["o": out.o, "final_state": out.finalState]
    }

    public func run(_ form: String, _ x: [String: DeviceTensor], options: OpOptions) throws -> [String: DeviceTensor] {
        try check(form: form, options: options)
        let (parsed, step) = try Self.parse(form)
        let required = Recurrence.requiredInputs(mechanism)
        let (q, k, v) = (try need(x, "q"), try need(x, "k"), try need(x, "v"))
        let g = required.contains("g") ? try need(x, "g") : nil, beta = required.contains("beta") ? try need(x, "beta") : nil
        if options.normalize {
            // The normalizer lives in the host forms only; on the CPU they run directly.
            guard q.device == .cpu else {
                throw LineaError.unavailable(what: "\(name) --normalize on \(q.device)", reason: "the normalizer is implemented on the CPU only")
            }
            let host = try hostInputs(x.mapValues { try $0.host() }, options: options)
            let out = try Recurrence.forward(mechanism, host, form: parsed ?? .automatic(tokens: host.q.shape[1]))
            return ["o": try DeviceTensor(out.o, dtype: options.outputDType), "final_state": try DeviceTensor(out.finalState)]
        }
        if step { return try steps(q: q, k: k, v: v, g: g, beta: beta, initialState: x["initial_state"], aLog: x["A_log"], dtBias: x["dt_bias"],
                                   options: options) }
        let out = try Recurrence.forward(
            mechanism, q: q, k: k, v: v, g: g, beta: beta, initialState: x["initial_state"], scale: options.scale, form: parsed,
            useQKL2Norm: options.useQKL2Norm, activations: options.activations, aLog: x["A_log"], dtBias: x["dt_bias"],
            validate: options.validate, allowNonFiniteOutputs: options.allowNonFiniteOutputs, outputDType: options.outputDType)
        return ["o": out.o, "final_state": out.finalState]
    }

    /// The decode step over every token in turn (`Recurrence.step` on a state copied from the initial one): what a
    /// model's decode loop runs, checked against the whole-sequence reference. O(T) steps.
    private func steps(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, g: DeviceTensor?, beta: DeviceTensor?,
                       initialState: DeviceTensor?, aLog: DeviceTensor?, dtBias: DeviceTensor?, options: OpOptions) throws -> [String: DeviceTensor] {
        let s = try RecurrenceShape(mechanism, q: q.shape, k: k.shape, v: v.shape, g: g?.shape, beta: beta?.shape, state: initialState?.shape)
        let device = q.device
        let state = try DeviceTensor.zeros([s.B, s.HV, s.K, s.V], on: device)
        if let initialState { try state.copy(from: initialState) }
        let o = try DeviceTensor.zeros([s.B, s.T, s.HV, s.V], dtype: options.outputDType, on: device)
        let token = try DeviceTensor.zeros([s.B, s.HV, s.V], on: device)
        let staged = options.outputDType == .float32 ? nil : try DeviceTensor.zeros([s.B, s.HV, s.V], on: .cpu)
        for t in 0..<s.T {
            func at(_ x: DeviceTensor?) throws -> DeviceTensor? { try x?.selected(axis: 1, t).contiguous() }
            try Recurrence.step(mechanism, q: at(q)!, k: at(k)!, v: at(v)!, g: at(g), beta: at(beta), state: state, o: token,
                                scale: options.scale, useQKL2Norm: options.useQKL2Norm, activations: options.activations, aLog: aLog, dtBias: dtBias)
            if let staged {  // a 16-bit o: converted through the host (a test path, not a decode loop's)
                try staged.copy(from: token)
                try o.selected(axis: 1, t).copy(from: DeviceTensor(staged.host(), dtype: options.outputDType, on: device))
            } else {
                try o.selected(axis: 1, t).copy(from: token)
            }
        }
        return ["o": o, "final_state": state]
    }

    /// The verification grid: lengths around the chunk size, K != V, steep gates down to -20, grouped value heads
    /// (HV = 2H, 4H), no initial state once; the GPU takes the chunked form at K, V in {64, 128} and the step at K <= 256.
    /// kda adds its in-kernel activations (CPU only).
    public var cases: [OpCase] {
        grid + (mechanism == .kda ? Self.activationCases : [])
    }

    /// kda's in-kernel activations: the gate with A_log and dt_bias (steep once, and with qk L2 normalization), the
    /// lower-bound gate with and without A_log, beta logits (doubled once); CPU forms only.
    static var activationCases: [OpCase] {
        let (gate, bounded) = (InKernelActivations(gateInKernel: true, betaSigmoid: true), InKernelActivations(gateInKernel: true, lowerBound: -5))
        let bothDoubled = InKernelActivations(gateInKernel: true, lowerBound: -5, betaSigmoid: true, allowNegEigval: true)
        // (B, T, H, HV, K, V, activations, gate shift, A_log, qk L2 norm)
        let rows: [(Int, Int, Int, Int, Int, Int, InKernelActivations, Float, Bool, Bool)] = [
            (2, 130, 2, 4, 64, 32, gate, 0, true, false), (1, 100, 2, 2, 64, 64, gate, 8, true, true),
            (3, 65, 2, 2, 128, 128, bothDoubled, 0, false, false), (1, 70, 1, 2, 32, 48, bounded, 0, true, false),
        ]
        return rows.map { B, T, H, HV, K, V, activations, shift, aLog, l2 in
            var options = OpOptions()
            (options.activations, options.useQKL2Norm) = (activations, l2)
            let label = "B\(B) T\(T) H\(H) HV\(HV) K\(K) V\(V) " + (activations.lowerBound == nil ? "gate in kernel" : "lower-bound gate")
                + (aLog ? "" : " no A_log") + (shift > 0 ? " steep" : "") + (activations.betaSigmoid ? " beta sigmoid" : "")
                + (activations.allowNegEigval ? " x2" : "") + (l2 ? " qk l2" : "")
            return OpCase(label: label, options: options, gpuForms: [],
                          flops: Recurrence.chunkedFLOPs(.kda, B: B, T: T, H: H, HV: HV, K: K, V: V, chunkSize: RecurrenceForm.defaultChunkSize)) { seed in
                try tensors(.randomKDA(B: B, T: T, H: H, HV: HV, K: K, V: V, seed: seed, activations: activations, gateShift: shift, aLog: aLog))
            }
        }
    }

    /// The grid every mechanism runs.
    private var grid: [OpCase] {
        // (B, T, H, HV, K, V, gate range, initial state)
        let normal: ClosedRange<Float> = -1...(-1e-4), steep: ClosedRange<Float> = -20...(-1e-4)
        let grid: [(Int, Int, Int, Int, Int, Int, ClosedRange<Float>, Bool)] = [
            (1, 1, 2, 2, 64, 64, normal, true), (3, 63, 2, 2, 60, 32, normal, true), (3, 63, 2, 2, 128, 128, normal, true),
            (1, 64, 3, 3, 64, 128, normal, true), (1, 65, 2, 2, 64, 128, steep, true), (3, 65, 2, 2, 128, 64, normal, true),
            (2, 100, 2, 2, 64, 128, normal, false), (2, 130, 2, 2, 128, 128, -5...(-1e-4), true), (2, 200, 2, 2, 128, 64, normal, true),
            (3, 200, 2, 2, 64, 64, steep, true), (1, 1000, 2, 2, 128, 128, normal, true), (1, 1000, 1, 1, 64, 64, steep, true),
            (2, 130, 2, 4, 64, 32, normal, true), (2, 130, 2, 4, 64, 128, normal, true), (1, 70, 1, 4, 32, 64, steep, true),
            (1, 1000, 1, 4, 128, 64, normal, true),
            // Decode-step shapes: K up to 256, odd V (the step kernel's scalar path), a batch of 64 at H = 32.
            (2, 4, 4, 4, 128, 128, normal, true), (1, 4, 3, 3, 60, 100, normal, true), (1, 4, 2, 2, 256, 64, normal, true),
            (3, 4, 2, 2, 100, 33, normal, true), (64, 4, 32, 32, 128, 128, normal, true), (2, 4, 2, 4, 128, 128, normal, true),
            (1, 4, 3, 6, 64, 33, normal, true),
        ]
        let r = mechanism
        return grid.map { c in
            let (B, T, H, HV, K, V, gates, h0) = c
            let gated = r.gateKind.readsGate
            let label = "B\(B) T\(T) H\(H)\(HV == H ? "" : " HV\(HV)") K\(K) V\(V)"
                + (gated ? " g in [\(Int(gates.lowerBound)), 0)" : "") + (h0 ? "" : " no h0")
            var gpu: [String] = K <= 256 ? ["recurrent", "step"] : []
            if [64, 128].contains(K) && [64, 128].contains(V) { gpu.insert("chunked", at: 0) }
            // The step form costs T launches per token on a GPU: the long sequences are left to the chunked form there.
            if T > 200 { gpu.removeAll { $0 == "step" } }
            return OpCase(label: label, gpuForms: gpu,
                          flops: Recurrence.chunkedFLOPs(r, B: B, T: T, H: H, HV: HV, K: K, V: V, chunkSize: RecurrenceForm.defaultChunkSize)) { seed in
                try RecurrenceFamily.tensors(RecurrenceInputs.random(r, B: B, T: T, H: H, HV: HV, K: K, V: V, seed: seed, gateRange: gates,
                                                                     initialState: h0))
            }
        }
    }

    /// `inputs` by fla's names.
    static func tensors(_ inputs: RecurrenceInputs) -> [String: Tensor] {
        var x = ["q": inputs.q, "k": inputs.k, "v": inputs.v]
        x["g"] = inputs.g
        x["beta"] = inputs.beta
        x["initial_state"] = inputs.initialState
        x["A_log"] = inputs.aLog
        x["dt_bias"] = inputs.dtBias
        return x
    }

    public func benchLengths(on device: Device) -> [Int] {
        device == .cpu ? [64, 256, 1024, 4096, 16384, 65536] : [2048, 8192, 32768]
    }

    /// Inputs in model ranges (unit-norm keys for the delta rules, gates in [-1, 0)), no initial state, validation off
    /// (the kernel alone); o in the input dtype on a GPU as fla writes it (bf16 for f16 inputs: the f32/f16 kernel
    /// writes f32 or bf16).
    public func benchCase(_ size: BenchSize, form: String, dtype: DType) throws -> OpCase {
        let (parsed, _) = try Self.parse(form)
        let chunk = if case .chunked(let n)? = parsed { n } else { 1 }
        var options = OpOptions()
        options.validate = false
        options.outputDType = dtype == .float16 ? .bfloat16 : dtype
        let (r, s) = (mechanism, size)
        return OpCase(label: "B\(s.B) T\(s.T) H\(s.H) K\(s.D)", options: options,
                      flops: Recurrence.chunkedFLOPs(r, B: s.B, T: s.T, H: s.H, K: s.D, V: s.D, chunkSize: chunk)) { seed in
            try RecurrenceFamily.tensors(RecurrenceInputs.random(r, B: s.B, T: s.T, H: s.H, K: s.D, V: s.D, seed: seed, initialState: false))
        }
    }
}
