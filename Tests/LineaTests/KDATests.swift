import Foundation
import Linea
import Testing

/// kda's in-kernel activations (fla's use_gate_in_kernel with A_log and dt_bias, lower_bound, use_beta_sigmoid_in_kernel,
/// allow_neg_eigval): the reference against the formulas applied by hand, every form and the decode step against the
/// reference, and the errors that name a bad input.
@Suite struct KDATests {
    typealias F = RecurrenceFixture

    /// The option sets under test: the gate with its beta sigmoid, the lower-bound gate without A_log and doubled betas,
    /// the lower-bound gate with A_log (the second entry: whether A_log is given).
    static let options: [(InKernelActivations, Bool)] = [
        (InKernelActivations(gateInKernel: true, betaSigmoid: true), true),
        (InKernelActivations(gateInKernel: true, lowerBound: -5, betaSigmoid: true, allowNegEigval: true), false),
        (InKernelActivations(gateInKernel: true, lowerBound: -4), true),
    ]

    /// Inputs for option set `n`: grouped value heads, an initial state, T not a multiple of the chunk, K != V.
    static func inputs(_ n: Int, T: Int = 70, gateShift: Float = 0) throws -> RecurrenceInputs {
        try .randomKDA(B: 2, T: T, H: 1, HV: 2, K: 24, V: 16, seed: UInt64(7 + n), activations: options[n].0, gateShift: gateShift,
                       aLog: options[n].1)
    }

    /// The same inputs activated here from fla's formulas in Float64 (naive_kda_gate, naive_kda_lowerbound_gate,
    /// sigmoid beta), with the options off.
    static func activatedByHand(_ x: RecurrenceInputs) throws -> RecurrenceInputs {
        let (a, HV, K) = (x.activations, x.v.shape[2], x.q.shape[3])
        var y = x
        (y.activations, y.aLog, y.dtBias) = (InKernelActivations(), nil, nil)
        y.g = try Tensor(shape: x.g!.shape, scalars: x.g!.scalars.enumerated().map { i, raw in
            let (hv, c) = ((i / K) % HV, i % K)
            let u = Double(raw) + Double(x.dtBias!.scalars[hv * K + c]), A = x.aLog.map { exp(Double($0.scalars[hv])) }
            if let bound = a.lowerBound { return Float(Double(bound) / (1 + exp(-(A ?? 1) * u))) }
            return Float(-A! * (u > 20 ? u : log1p(exp(u))))
        })
        if a.betaSigmoid {
            y.beta = try Tensor(shape: x.beta!.shape, scalars: x.beta!.scalars.map { Float((a.allowNegEigval ? 2 : 1) / (1 + exp(-Double($0)))) })
        }
        return y
    }

    /// The Float32 activations the fast forms and the step run equal fla's formulas in Float64 elementwise (relative error
    /// <= 1e-6; gates below 1e-30 in magnitude, a decay of 1 either way, may flush to 0) over raw values from -60 to 60:
    /// softplus's tail below 0, its threshold at 20, tiny gates, both gates.
    @Test func float32ActivationsMatchTheFormulas() throws {
        let (HV, K) = (2, 20)
        let raw = (0..<(3 * HV * K)).map { Float($0) * 120 / Float(3 * HV * K - 1) - 60 }  // rows of K, heads cycling
        let aLog: [Float] = [-1.5, 2.5], dtBias = (0..<(HV * K)).map { Float($0 % 7) - 3 }
        for a in Self.options.map(\.0) {
            var (gates, betas) = ([Float](repeating: 0, count: raw.count), [Float](repeating: 0, count: raw.count))
            a.activateGates(raw, count: raw.count, HV: HV, K: K, aLog: aLog, dtBias: dtBias, into: &gates)
            a.activateBetas(raw, count: raw.count, into: &betas)
            var worst = (0.0, 0.0)
            for (i, x) in raw.enumerated() {
                let (hv, c) = ((i / K) % HV, i % K)
                let u = Double(x) + Double(dtBias[hv * K + c]), A = exp(Double(aLog[hv]))
                let g = a.lowerBound.map { Double($0) / (1 + exp(-A * u)) } ?? -A * (u > 20 ? u : log1p(exp(u)))
                let beta = (a.allowNegEigval ? 2 : 1) / (1 + exp(-Double(x)))
                worst = (max(worst.0, abs(Double(gates[i]) - g) / max(abs(g), 1e-24)), max(worst.1, abs(Double(betas[i]) - beta) / beta))
            }
            #expect(worst.0 <= 1e-6 && worst.1 <= 1e-6, "\(a): worst relative error of the gates \(worst.0), of the betas \(worst.1)")
        }
    }

    /// The reference applies the activations as fla's formulas do (to Float32 rounding of the activated gates).
    @Test(arguments: 0..<3)
    func referenceAppliesFlaFormulas(_ n: Int) throws {
        let x = try Self.inputs(n)
        _ = F.expectClose(try Recurrence.forward(.kda, x, form: .reference), try Recurrence.forward(.kda, Self.activatedByHand(x), form: .reference),
                          tolerance: 1e-6, "option set \(n)")
    }

    /// recurrent and chunked (C = 16, 64, one chunk), on host and device tensors, equal the reference with the options;
    /// steep activated gates (a chunk's summed log decay far below -100) stay finite.
    @Test(arguments: 0..<3, [Float(0), 8])
    func everyFormMatchesTheReference(_ n: Int, _ gateShift: Float) throws {
        var x = try Self.inputs(n, gateShift: gateShift)
        x.useQKL2Norm = n == 1
        let ref = try Recurrence.forward(.kda, x, form: .reference)
        for form in [RecurrenceForm.recurrent, .chunked(size: 16), .chunked(size: 64), .chunked(size: 1 << 20)] {
            _ = F.expectClose(try Recurrence.forward(.kda, x, form: form), ref, tolerance: 1e-5, "option set \(n) shift \(gateShift) \(form)")
        }
        let device = try Recurrence.forward(
            .kda, q: DeviceTensor(x.q), k: DeviceTensor(x.k), v: DeviceTensor(x.v), g: DeviceTensor(x.g!), beta: DeviceTensor(x.beta!),
            initialState: DeviceTensor(x.initialState!), useQKL2Norm: x.useQKL2Norm, activations: x.activations,
            aLog: x.aLog.map { try DeviceTensor($0) }, dtBias: DeviceTensor(x.dtBias!))
        _ = F.expectClose(RecurrenceOutput(o: try device.o.host(), finalState: try device.finalState.host()), ref, tolerance: 1e-5,
                          "option set \(n) shift \(gateShift) device auto")
    }

    /// Decoding token by token (the device step and `RecurrentState.step`, both with the raw gate and beta logits)
    /// equals the whole sequence.
    @Test(arguments: 0..<3)
    func decodeStepsEqualTheSequence(_ n: Int) throws {
        let x = try Self.inputs(n, T: 9)
        let (B, T, HV, V) = (x.v.shape[0], x.v.shape[1], x.v.shape[2], x.v.shape[3])
        let whole = try Recurrence.forward(.kda, x, form: .chunked(size: 4))
        let state = try DeviceTensor(x.initialState!)
        var host = try RecurrentState(state: x.initialState!)
        var (o, hostO) = ([Float](repeating: 0, count: B * T * HV * V), [Float](repeating: 0, count: B * T * HV * V))
        for t in 0..<T {
            let (q, k, v, g, beta) = (try F.token(x.q, t), try F.token(x.k, t), try F.token(x.v, t), try F.token(x.g!, t), try F.token(x.beta!, t))
            let step = try Recurrence.step(.kda, q: DeviceTensor(q), k: DeviceTensor(k), v: DeviceTensor(v), g: DeviceTensor(g), beta: DeviceTensor(beta),
                                           state: state, activations: x.activations, aLog: x.aLog.map { try DeviceTensor($0) },
                                           dtBias: DeviceTensor(x.dtBias!)).host()
            let hostStep = try host.step(.kda, q: q, k: k, v: v, g: g, beta: beta, activations: x.activations, aLog: x.aLog, dtBias: x.dtBias)
            for b in 0..<B {
                for i in 0..<(HV * V) {
                    o[(b * T + t) * HV * V + i] = step.scalars[b * HV * V + i]
                    hostO[(b * T + t) * HV * V + i] = hostStep.scalars[b * HV * V + i]
                }
            }
        }
        _ = F.expectClose(RecurrenceOutput(o: try Tensor(shape: whole.o.shape, scalars: o), finalState: try state.host()), whole,
                          tolerance: 1e-5, "option set \(n) device step")
        _ = F.expectClose(RecurrenceOutput(o: try Tensor(shape: whole.o.shape, scalars: hostO), finalState: host.state), whole,
                          tolerance: 1e-5, "option set \(n) RecurrentState.step")
    }

    /// A raw gate above 0 and beta logits outside [0, 2] are inputs, not errors, with the options; bad A_log, dt_bias,
    /// lower bounds, option combinations and gate ranks throw errors naming the argument, on host and device tensors.
    @Test func badInputsNameTheArgument() throws {
        let x = try Self.inputs(0)
        #expect(x.g!.scalars.contains { $0 > 0 } && x.beta!.scalars.contains { $0 < 0 })
        func expectError(_ argument: String, _ change: (inout RecurrenceInputs) throws -> Void) throws {
            var y = x
            try change(&y)
            let hostError = #expect(throws: LineaError.self, "\(argument)") { try Recurrence.forward(.kda, y, form: .chunked(size: 16)) }
            #expect(hostError?.description.hasPrefix(argument) == true, "\(argument): \(String(describing: hostError))")
            let deviceError = #expect(throws: LineaError.self, "\(argument) device") {
                try Recurrence.forward(.kda, q: DeviceTensor(y.q), k: DeviceTensor(y.k), v: DeviceTensor(y.v), g: DeviceTensor(y.g!),
                                       beta: DeviceTensor(y.beta!), activations: y.activations, aLog: y.aLog.map { try DeviceTensor($0) },
                                       dtBias: y.dtBias.map { try DeviceTensor($0) })
            }
            #expect(deviceError?.description.hasPrefix(argument) == true, "\(argument) device: \(String(describing: deviceError))")
        }
        try expectError("dt_bias") { $0.dtBias = try .randomNormal([2 * 24 - 1], seed: 1) }
        try expectError("dt_bias") { $0.dtBias = try .randomNormal([2, 24], seed: 1) }
        try expectError("dt_bias") { $0.dtBias!.scalars[5] = .nan }
        try expectError("A_log") { $0.aLog = try .randomNormal([1], seed: 1) }  // [H], not [HV]
        try expectError("A_log") { $0.aLog = try .randomNormal([2, 1], seed: 1) }
        try expectError("A_log") { $0.aLog = nil }  // required without a lower bound
        try expectError("A_log") { $0.activations.gateInKernel = false }  // a stray parameter
        try expectError("g") { $0.g = try .randomNormal([2, 70, 2], seed: 1) }  // a scalar gate for kda
        try expectError("g") { $0.g!.scalars[3] = .infinity }
        try expectError("lower_bound") { $0.activations.lowerBound = 0.5 }
        try expectError("lower_bound") { $0.activations.lowerBound = -.infinity }
        try expectError("allow_neg_eigval") {
            $0.activations.betaSigmoid = false
            $0.activations.allowNegEigval = true
        }
        // Without the options the raw values are out of range.
        try expectError("g") { ($0.activations, $0.aLog, $0.dtBias) = (InKernelActivations(betaSigmoid: true), nil, nil) }
        try expectError("beta") { $0.activations.betaSigmoid = false }
        // No tokens: the state passes through.
        let none = try Self.inputs(0, T: 0)
        let empty = try Recurrence.forward(.kda, q: DeviceTensor(none.q), k: DeviceTensor(none.k), v: DeviceTensor(none.v), g: DeviceTensor(none.g!),
                                           beta: DeviceTensor(none.beta!), initialState: DeviceTensor(none.initialState!), form: .chunked(size: 64),
                                           activations: none.activations, aLog: DeviceTensor(none.aLog!), dtBias: DeviceTensor(none.dtBias!))
        #expect(try empty.finalState.host() == none.initialState!)
        // Only kda takes them.
        var gdr = try RecurrenceInputs.random(.gatedDeltaRule, B: 1, T: 5, H: 1, K: 8, V: 4, seed: 2)
        gdr.activations.betaSigmoid = true
        #expect(throws: LineaError.self) { try Recurrence.forward(.gatedDeltaRule, gdr, form: .recurrent) }
    }
}
