import Foundation
import Testing
import Linea

/// Builders and comparisons shared by the recurrence tests.
enum RecurrenceFixture {
    /// Random inputs for `mechanism`: q, k, v ~ N(0,1) (delta-rule keys L2-normalized), gates uniform in
    /// `gates`, beta uniform in [0,1], an N(0, 0.5^2) initial state when `withState`.
    static func inputs(
        _ m: RecurrentMechanism, B: Int, T: Int, H: Int, K: Int, V: Int,
        gates: ClosedRange<Float> = -0.5...(-1e-4), withState: Bool = true, seed: UInt64 = 1
    ) throws -> RecurrenceInputs {
        let q = try Tensor.randomNormal([B, T, H, K], seed: seed)
        var k = try Tensor.randomNormal([B, T, H, K], seed: seed + 1)
        let v = try Tensor.randomNormal([B, T, H, V], seed: seed + 2)
        let required = Recurrence.requiredInputs(m)
        if required.contains("beta") {
            for row in 0..<(B * T * H) {
                var sum: Float = 0
                for i in 0..<K { sum += k.scalars[row * K + i] * k.scalars[row * K + i] }
                for i in 0..<K { k.scalars[row * K + i] /= sum.squareRoot() }
            }
        }
        var x = RecurrenceInputs(q: q, k: k, v: v)
        if required.contains("g") {
            x.g = try Tensor.randomUniform(m.gateKind == .vector ? [B, T, H, K] : [B, T, H], seed: seed + 3, in: gates)
        }
        if required.contains("beta") { x.beta = try Tensor.randomUniform([B, T, H], seed: seed + 4) }
        if withState { x.initialState = try Tensor.randomNormal([B, H, K, V], seed: seed + 5, scale: 0.5) }
        return x
    }

    /// Tokens `range` of a `[B,T,...]` tensor.
    static func sliceT(_ x: Tensor, _ range: Range<Int>) throws -> Tensor {
        let (B, T) = (x.shape[0], x.shape[1])
        let inner = x.shape.dropFirst(2).reduce(1, *)
        var out: [Float] = []
        for b in 0..<B { out += x.scalars[(b * T + range.lowerBound) * inner..<(b * T + range.upperBound) * inner] }
        return try Tensor(shape: [B, range.count] + Array(x.shape.dropFirst(2)), scalars: out)
    }

    /// Token `t` of a `[B,T,H,...]` tensor as `[B,H,...]`.
    static func token(_ x: Tensor, _ t: Int) throws -> Tensor {
        let s = try sliceT(x, t..<(t + 1))
        return try s.reshaped([x.shape[0]] + Array(x.shape.dropFirst(2)))
    }

    /// Expects `actual` within `tolerance` relative RMS of `expected` for outputs and final states.
    static func expectClose(
        _ actual: RecurrenceOutput, _ expected: RecurrenceOutput, tolerance: Double, _ label: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> (Double, Double) {
        let o = ErrorStats(actual.o, expected.o)
        let s = ErrorStats(actual.finalState, expected.finalState)
        #expect(o.relativeRMS <= tolerance, "\(label): o \(o)", sourceLocation: sourceLocation)
        #expect(s.relativeRMS <= tolerance, "\(label): final state \(s)", sourceLocation: sourceLocation)
        return (o.relativeRMS, s.relativeRMS)
    }
}

@Suite struct RecurrenceTests {
    typealias F = RecurrenceFixture

    /// (B, T, H, K, V): awkward sizes around the chunk boundary, V != K; 21 heads make the chunked forms walk
    /// three groups of seven heads across batch boundaries.
    static let shapes: [(Int, Int, Int, Int, Int)] = [
        (1, 1, 2, 64, 48), (3, 63, 2, 60, 40), (1, 64, 2, 128, 96), (3, 65, 2, 64, 72), (1, 200, 3, 60, 100),
        (3, 70, 7, 24, 16),
    ]

    /// reference == recurrent == chunked (C = 1, 16, 64, one chunk) for outputs and final states, with an initial state,
    /// under moderate, medium and stress gates.
    @Test(arguments: RecurrentMechanism.allCases)
    func formsAgree(_ m: RecurrentMechanism) throws {
        let gateRanges: [ClosedRange<Float>] = Recurrence.requiredInputs(m).contains("g")
            ? [-0.5...(-1e-4), -3...(-1e-4), -20...(-1e-4)] : [-1...(-1)]
        var worst = 0.0
        for (n, (B, T, H, K, V)) in Self.shapes.enumerated() {
            for (r, gates) in gateRanges.enumerated() {
                let x = try F.inputs(m, B: B, T: T, H: H, K: K, V: V, gates: gates, seed: UInt64(100 * n + 10 * r))
                let ref = try Recurrence.forward(m, x, form: .reference)
                let label = "\(m.rawValue) B\(B) T\(T) H\(H) K\(K) V\(V) gates \(gates)"
                let rec = F.expectClose(try Recurrence.forward(m, x, form: .recurrent), ref, tolerance: 2e-6, "\(label) recurrent")
                worst = max(worst, rec.0, rec.1)
                for c in [1, 16, 64, 1 << 20] {  // the last: the whole sequence in one chunk
                    let got = F.expectClose(try Recurrence.forward(m, x, form: .chunked(size: c)), ref, tolerance: 2e-6, "\(label) chunked(\(c))")
                    worst = max(worst, got.0, got.1)
                }
            }
        }
        print("formsAgree \(m.rawValue): worst relative RMS \(String(format: "%.2e", worst))")
    }

    /// Betas in [0, 2] (fla's allow_neg_eigval: negative eigenvalues of the transition) are accepted, and every form
    /// still agrees with the reference, also on device tensors.
    @Test(arguments: [RecurrentMechanism.deltaRule, .gatedDeltaRule])
    func betaUpToTwo(_ m: RecurrentMechanism) throws {
        var x = try F.inputs(m, B: 2, T: 70, H: 2, K: 24, V: 16, seed: 61)
        x.beta = try Tensor(shape: x.beta!.shape, scalars: x.beta!.scalars.map { 2 * $0 })
        #expect(x.beta!.scalars.contains { $0 > 1.5 })
        let ref = try Recurrence.forward(m, x, form: .reference)
        _ = F.expectClose(try Recurrence.forward(m, x, form: .recurrent), ref, tolerance: 2e-6, "\(m.rawValue) recurrent")
        for c in [1, 16, 64] {
            _ = F.expectClose(try Recurrence.forward(m, x, form: .chunked(size: c)), ref, tolerance: 2e-6, "\(m.rawValue) chunked(\(c))")
        }
        let device = try Recurrence.forward(m, q: DeviceTensor(x.q), k: DeviceTensor(x.k), v: DeviceTensor(x.v), g: x.g.map { try DeviceTensor($0) },
                                            beta: DeviceTensor(x.beta!), initialState: DeviceTensor(x.initialState!))
        #expect(ErrorStats(try device.o.host(), ref.o).relativeRMS <= 2e-6)
    }

    /// Outputs of 4 MiB and more take the huge-page allocation path: chunked == recurrent there too.
    @Test(arguments: [RecurrentMechanism.simpleGLA, .gatedDeltaRule])
    func largeOutputs(_ m: RecurrentMechanism) throws {
        let x = try F.inputs(m, B: 1, T: 4096, H: 4, K: 32, V: 64, seed: 21)  // o: 4096*4*64 floats = 4 MiB
        _ = F.expectClose(try Recurrence.forward(m, x, form: .chunked(size: 64)), try Recurrence.forward(m, x, form: .recurrent),
                          tolerance: 1e-5, "\(m.rawValue) large output")
    }

    /// A longer sequence (T = 1000) for gated_delta_rule with q/k L2-normalized inside, and linear_attn with
    /// the normalizer on positive features.
    /// The CPU path's finiteness check (four 16-lane sums, then a scalar tail) finds a NaN or an infinity wherever it
    /// sits in the initial state (a decode step's check), and passes a finite one.
    @Test func deviceRecurrenceFindsNonFiniteStateAnywhere() throws {
        let (H, K, V) = (2, 16, 33)  // a state of 1056 floats: 16 blocks of 64, then 32 more
        let q = try DeviceTensor(Tensor.randomNormal([1, 1, H, K], seed: 61, scale: 0.1))
        let v = try DeviceTensor(Tensor.randomNormal([1, 1, H, V], seed: 62))
        let state = try Tensor.randomNormal([1, H, K, V], seed: 63)
        _ = try Recurrence.forward(.linearAttention, q: q, k: q, v: v, initialState: DeviceTensor(state))
        for position in [0, 21, 38, 63, 100, 1023, 1024, 1055] {
            var bad = state
            bad.scalars[position] = position % 2 == 0 ? .nan : -.infinity
            let error = #expect(throws: LineaError.self, "position \(position)") {
                _ = try Recurrence.forward(.linearAttention, q: q, k: q, v: v, initialState: DeviceTensor(bad))
            }
            #expect(error?.description.hasPrefix("initial_state") == true, "position \(position): \(String(describing: error))")
        }
    }

    /// A decode step with a state large enough to be copied and checked in parallel parts matches the reference, and
    /// a NaN in any part of it is named.
    @Test func deviceRecurrenceCopiesAndChecksALargeStateInParts() throws {
        let (H, K, V) = (16, 128, 128)  // 262144 floats: 4 parts
        let q = try Tensor.randomNormal([1, 1, H, K], seed: 64, scale: 0.05), v = try Tensor.randomNormal([1, 1, H, V], seed: 65)
        let g = try Tensor(zeros: [1, 1, H], value: -0.5), state = try Tensor.randomNormal([1, H, K, V], seed: 66)
        let want = try Recurrence.forward(.simpleGLA, RecurrenceInputs(q: q, k: q, v: v, g: g, initialState: state), form: .reference)
        let got = try Recurrence.forward(.simpleGLA, q: DeviceTensor(q), k: DeviceTensor(q), v: DeviceTensor(v), g: DeviceTensor(g),
                                         initialState: DeviceTensor(state))
        #expect(ErrorStats(try got.o.host(), want.o).relativeRMS < 1e-5)
        #expect(ErrorStats(try got.finalState.host(), want.finalState).relativeRMS < 1e-5)
        for position in [1, 100_000, 200_000, 262_143] {
            var bad = state
            bad.scalars[position] = .nan
            let error = #expect(throws: LineaError.self) {
                _ = try Recurrence.forward(.simpleGLA, q: DeviceTensor(q), k: DeviceTensor(q), v: DeviceTensor(v), g: DeviceTensor(g),
                                           initialState: DeviceTensor(bad))
            }
            #expect(error?.description.hasPrefix("initial_state") == true, "position \(position): \(String(describing: error))")
        }
    }

    @Test func longerSequenceAndOptions() throws {
        var x = try F.inputs(.gatedDeltaRule, B: 1, T: 1000, H: 2, K: 64, V: 64, seed: 7)
        x.k = try Tensor.randomNormal([1, 1000, 2, 64], seed: 8)  // not normalized: the kernel does it
        x.useQKL2Norm = true
        let ref = try Recurrence.forward(.gatedDeltaRule, x, form: .reference)
        _ = F.expectClose(try Recurrence.forward(.gatedDeltaRule, x, form: .recurrent), ref, tolerance: 1e-5, "gdr T1000 recurrent")
        _ = F.expectClose(try Recurrence.forward(.gatedDeltaRule, x, form: .chunked(size: 64)), ref, tolerance: 1e-5, "gdr T1000 chunked")
        // Normalizing on the host first (what the CUDA paths do) gives the same result.
        let host = try x.qkL2Normalized()
        #expect(!host.useQKL2Norm)
        _ = F.expectClose(try Recurrence.forward(.gatedDeltaRule, host, form: .reference), ref, tolerance: 1e-6, "gdr T1000 host-normalized")

        var la = RecurrenceInputs(
            q: try .randomUniform([2, 130, 2, 32], seed: 9), k: try .randomUniform([2, 130, 2, 32], seed: 10),
            v: try .randomNormal([2, 130, 2, 24], seed: 11), initialState: try .randomUniform([2, 2, 32, 24], seed: 12))
        la.normalize = true
        let laRef = try Recurrence.forward(.linearAttention, la, form: .reference)
        _ = F.expectClose(try Recurrence.forward(.linearAttention, la, form: .recurrent), laRef, tolerance: 1e-5, "linear_attn normalize recurrent")
        _ = F.expectClose(try Recurrence.forward(.linearAttention, la, form: .chunked(size: 16)), laRef, tolerance: 1e-5, "linear_attn normalize chunked")
        la.normalize = false
        let plain = try Recurrence.forward(.linearAttention, la, form: .reference)
        #expect(ErrorStats(plain.o, laRef.o).relativeRMS > 0.5)  // the normalizer really acts
    }

    /// The reference on tiny cases worked out by hand (K = V = 1, or K = 2), so the oracle itself is checked.
    @Test func referenceMatchesHandComputedCases() throws {
        func run(_ m: RecurrentMechanism, _ x: RecurrenceInputs) throws -> [RecurrenceOutput] {
            try [RecurrenceForm.reference, .recurrent, .chunked(size: 1), .chunked(size: 2)].map { try Recurrence.forward(m, x, form: $0) }
        }
        func close(_ a: [Float], _ b: [Float]) -> Bool { zip(a, b).allSatisfy { abs($0 - $1) <= 1e-6 * max(1, abs($1)) } }

        // gated_delta_rule, S0 = 2, scale 0.5. t1: g = ln .5, beta = .5, k = 1, v = 3, q = 1: S = 1, u = .5 (3 - 1) = 1,
        // S = 2, o = 1. t2: g = ln .5, beta = 1, k = 2, v = 1, q = 2: S = 1, u = 1 - 2 = -1, S = 1 - 2 = -1, o = -1.
        var gdr = RecurrenceInputs(
            q: try Tensor(shape: [1, 2, 1, 1], scalars: [1, 2]), k: try Tensor(shape: [1, 2, 1, 1], scalars: [1, 2]),
            v: try Tensor(shape: [1, 2, 1, 1], scalars: [3, 1]),
            g: try Tensor(shape: [1, 2, 1], scalars: [log(0.5), log(0.5)]), beta: try Tensor(shape: [1, 2, 1], scalars: [0.5, 1]),
            initialState: try Tensor(shape: [1, 1, 1, 1], scalars: [2]), scale: 0.5)
        for r in try run(.gatedDeltaRule, gdr) {
            #expect(close(r.o.scalars, [1, -1]) && close(r.finalState.scalars, [-1]), "gated_delta_rule: \(r.o) \(r.finalState)")
        }
        // delta_rule is the same without the decay: S = 2, u = .5 (3 - 2) = .5, S = 2.5, o = 1.25;
        // u = 1 - 2*2.5 = -4, S = 2.5 - 8 = -5.5, o = .5*2*(-5.5) = -5.5.
        gdr.g = nil
        for r in try run(.deltaRule, gdr) {
            #expect(close(r.o.scalars, [1.25, -5.5]) && close(r.finalState.scalars, [-5.5]), "delta_rule: \(r.o) \(r.finalState)")
        }
        // simple_gla with the same inputs: S = 1 + 3 = 4, o = 2; S = 2 + 2 = 4, o = .5*2*4 = 4.
        gdr.beta = nil
        gdr.g = try Tensor(shape: [1, 2, 1], scalars: [log(0.5), log(0.5)])
        for r in try run(.simpleGLA, gdr) {
            #expect(close(r.o.scalars, [2, 4]) && close(r.finalState.scalars, [4]), "simple_gla: \(r.o) \(r.finalState)")
        }
        // linear_attn with the normalizer, scale 1: k = [1, 2], v = [2, 4], q = [1, 1]: S = 2, z = 1, o = 2;
        // S = 10, z = 3, o = 10/3.
        var la = RecurrenceInputs(
            q: try Tensor(shape: [1, 2, 1, 1], scalars: [1, 1]), k: try Tensor(shape: [1, 2, 1, 1], scalars: [1, 2]),
            v: try Tensor(shape: [1, 2, 1, 1], scalars: [2, 4]), scale: 1)
        la.normalize = true
        for r in try run(.linearAttention, la) {
            #expect(close(r.o.scalars, [2, 10.0 / 3]) && close(r.finalState.scalars, [10]), "linear_attn: \(r.o) \(r.finalState)")
        }
        // retention, two heads, q = k = v = 1, scale 1: o = [1, gamma_h + 1] with gamma_0 = 31/32, gamma_1 = 63/64.
        let ones = try Tensor(zeros: [1, 2, 2, 1], value: 1)
        for r in try run(.retention, RecurrenceInputs(q: ones, k: ones, v: ones, scale: 1)) {
            let expected: [Float] = [1, 1, 1 + 31.0 / 32, 1 + 63.0 / 64]
            #expect(close(r.o.scalars, expected), "retention: \(r.o)")
        }
        // gla, K = 2, V = 1, scale 1: g1 = ln[.5, .25], k1 = [1, 1], v1 = 1, q1 = [1, 0]: S = [1, 1], o = 1.
        // g2 = ln[.5, .5], k2 = [1, 0], v2 = 1, q2 = [0, 1]: S = [1.5, .5], o = .5.
        let gla = RecurrenceInputs(
            q: try Tensor(shape: [1, 2, 1, 2], scalars: [1, 0, 0, 1]), k: try Tensor(shape: [1, 2, 1, 2], scalars: [1, 1, 1, 0]),
            v: try Tensor(shape: [1, 2, 1, 1], scalars: [1, 1]),
            g: try Tensor(shape: [1, 2, 1, 2], scalars: [log(0.5), log(0.25), log(0.5), log(0.5)]), scale: 1)
        for r in try run(.gla, gla) {
            #expect(close(r.o.scalars, [1, 0.5]) && close(r.finalState.scalars, [1.5, 0.5]), "gla: \(r.o) \(r.finalState)")
        }
    }

    /// The automatic form scans up to 64 tokens and runs chunks of 64 beyond, kda included, on device tensors.
    @Test func kdaAutoRunsChunked() throws {
        #expect(RecurrenceForm.automatic(tokens: 64) == .recurrent && RecurrenceForm.automatic(tokens: 100) == .chunked(size: 64))
        let x = try F.inputs(.kda, B: 1, T: 100, H: 2, K: 16, V: 8, seed: 3)
        let auto = try Recurrence.forward(.kda, q: DeviceTensor(x.q), k: DeviceTensor(x.k), v: DeviceTensor(x.v), g: DeviceTensor(x.g!), beta: DeviceTensor(x.beta!),
                                          initialState: x.initialState.map { try DeviceTensor($0) })
        let chunked = try Recurrence.forward(.kda, x, form: .chunked(size: 64))
        #expect(try auto.o.host() == chunked.o && auto.finalState.host() == chunked.finalState)
        _ = F.expectClose(chunked, try Recurrence.forward(.kda, x, form: .reference), tolerance: 1e-5, "kda auto")
    }

    /// One call over T tokens == two calls (70 + 60 tokens) passing the state, for the recurrent and chunked forms.
    @Test(arguments: RecurrentMechanism.allCases)
    func splitSequenceCarriesState(_ m: RecurrentMechanism) throws {
        let x = try F.inputs(m, B: 2, T: 130, H: 2, K: 32, V: 40, seed: 21)
        for form in [RecurrenceForm.recurrent, .chunked(size: 16), .chunked(size: 64)] {
            let whole = try Recurrence.forward(m, x, form: form)
            var first = x, second = x
            for (part, range) in [(0, 0..<70), (1, 70..<130)] {
                var y = part == 0 ? first : second
                y.q = try F.sliceT(x.q, range)
                y.k = try F.sliceT(x.k, range)
                y.v = try F.sliceT(x.v, range)
                y.g = try x.g.map { try F.sliceT($0, range) }
                y.beta = try x.beta.map { try F.sliceT($0, range) }
                if part == 0 { first = y } else { second = y }
            }
            let a = try Recurrence.forward(m, first, form: form)
            second.initialState = a.finalState
            let b = try Recurrence.forward(m, second, form: form)
            let (rowA, rowB) = (70 * 2 * 40, 60 * 2 * 40)  // elements per batch entry in each part
            var scalars: [Float] = []
            for bIdx in 0..<2 {
                scalars += a.o.scalars[(bIdx * rowA)..<((bIdx + 1) * rowA)]
                scalars += b.o.scalars[(bIdx * rowB)..<((bIdx + 1) * rowB)]
            }
            let joined = try Tensor(shape: whole.o.shape, scalars: scalars)
            _ = F.expectClose(RecurrenceOutput(o: joined, finalState: b.finalState), whole, tolerance: 1e-5, "\(m.rawValue) split \(form)")
        }
    }

    /// Token-by-token `RecurrentState.step` == the recurrent forward (bit for bit) and the reference.
    @Test(arguments: RecurrentMechanism.allCases)
    func stepMatchesForward(_ m: RecurrentMechanism) throws {
        let T = 20
        let x = try F.inputs(m, B: 2, T: T, H: 3, K: 24, V: 20, seed: 31)
        let rec = try Recurrence.forward(m, x, form: .recurrent)
        let ref = try Recurrence.forward(m, x, form: .reference)
        var decoder = try RecurrentState(state: x.initialState!)
        var outputs = [[Float]](repeating: [], count: T)
        for t in 0..<T {
            let o = try decoder.step(
                m, q: F.token(x.q, t), k: F.token(x.k, t), v: F.token(x.v, t),
                g: x.g.map { try F.token($0, t) }, beta: x.beta.map { try F.token($0, t) })
            #expect(o.shape == [2, 3, 20])
            outputs[t] = o.scalars
        }
        // Reassemble [T][B,H,V] as [B,T,H,V].
        var stepped = [Float]()
        for b in 0..<2 { for t in 0..<T { stepped += outputs[t][(b * 60)..<((b + 1) * 60)] } }
        #expect(stepped == rec.o.scalars, "step vs recurrent: \(ErrorStats(stepped, rec.o.scalars))")
        #expect(decoder.state == rec.finalState)
        _ = F.expectClose(RecurrenceOutput(o: try Tensor(shape: rec.o.shape, scalars: stepped), finalState: decoder.state), ref, tolerance: 1e-5, "\(m.rawValue) step vs reference")

        var fresh = try RecurrentState(batch: 1, heads: 2, keyDim: 4, valueDim: 3)
        #expect(fresh.state.shape == [1, 2, 4, 3] && fresh.state.scalars.allSatisfy { $0 == 0 })
        #expect(throws: LineaError.self) {
            _ = try fresh.step(m, q: try Tensor(zeros: [1, 2, 5]), k: try Tensor(zeros: [1, 2, 4]), v: try Tensor(zeros: [1, 2, 3]))
        }
    }

    /// Gates of -20 on every token over 4096 tokens: the chunked form stays finite and equals the recurrent one.
    @Test(arguments: [RecurrentMechanism.simpleGLA, .gla, .gatedDeltaRule, .kda])
    func steepGatesOverLongSequencesStayFinite(_ m: RecurrentMechanism) throws {
        let (T, K, V) = (4096, 32, 32)
        var x = try F.inputs(m, B: 1, T: T, H: 1, K: K, V: V, seed: 41)
        x.g = try Tensor(zeros: m.gateKind == .vector ? [1, T, 1, K] : [1, T, 1], value: -20)
        let rec = try Recurrence.forward(m, x, form: .recurrent)
        for c in [64, 256] {
            let got = try Recurrence.forward(m, x, form: .chunked(size: c))
            #expect(got.o.scalars.allSatisfy(\.isFinite) && got.finalState.scalars.allSatisfy(\.isFinite), "\(m.rawValue) C\(c): non-finite")
            _ = F.expectClose(got, rec, tolerance: 1e-5, "\(m.rawValue) g=-20 C\(c) vs recurrent")
        }
    }

    /// Caller mistakes throw LineaError naming the argument.
    /// gla's decayed rows run in the vector width's C kernel: chunked == reference at each width the CPU runs, with
    /// steep gates (the sub-block path) and K not a multiple of either vector (the padded last vector).
    @Test(arguments: CPUKernels.Width.allCases.filter(\.isSupported))
    func glaAtEachWidth(_ width: CPUKernels.Width) throws {
        let kernels = try #require(CPUKernels(width))
        for (gates, K) in [(-0.5...(-1e-4), 60), (-20...(-1e-4), 24)] as [(ClosedRange<Float>, Int)] {
            let x = try F.inputs(.gla, B: 2, T: 130, H: 3, K: K, V: 40, gates: gates, seed: 77)
            let ref = try Recurrence.forward(.gla, x, form: .reference)
            try CPUKernels.with(kernels) {
                _ = F.expectClose(try Recurrence.forward(.gla, x, form: .chunked(size: 64)), ref, tolerance: 2e-6,
                                  "gla \(width) K\(K) gates \(gates)")
            }
        }
    }

    @Test func invalidInputsThrow() throws {
        let x = try F.inputs(.gatedDeltaRule, B: 1, T: 5, H: 2, K: 8, V: 4, seed: 51)
        func expectError(_ m: RecurrentMechanism, _ y: RecurrenceInputs, form: RecurrenceForm = .recurrent, _ argument: String) {
            do {
                _ = try Recurrence.forward(m, y, form: form)
                Issue.record("\(argument): no error thrown")
            } catch let error as LineaError {
                #expect(error.description.hasPrefix(argument), "expected an error about \(argument), got \(error)")
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
        var y = x
        y.g!.scalars[3] = 0.1
        expectError(.gatedDeltaRule, y, "g")
        y.validate = false
        _ = try Recurrence.forward(.gatedDeltaRule, y, form: .recurrent)  // unchecked on request
        y = x
        y.beta!.scalars[0] = 2.5
        expectError(.gatedDeltaRule, y, "beta")
        y = x
        y.initialState = try Tensor(zeros: [1, 2, 4, 8])
        expectError(.gatedDeltaRule, y, "initial_state")
        y = x
        y.q.scalars[7] = .nan
        expectError(.gatedDeltaRule, y, "q")
        y = x
        y.v.scalars[2] = .infinity
        expectError(.gatedDeltaRule, y, "v")
        y = x
        y.g = nil
        expectError(.gatedDeltaRule, y, "g")
        y = x
        y.beta = nil
        expectError(.deltaRule, y, "g")  // delta_rule takes no gate: the stray g is reported first
        y.g = nil
        expectError(.deltaRule, y, "beta")
        expectError(.gatedDeltaRule, x, form: .chunked(size: 0), "chunk size")
        y = x
        y.g = try Tensor(zeros: [1, 5, 2], value: -1)
        expectError(.gla, RecurrenceInputs(q: x.q, k: x.k, v: x.v, g: y.g), "g")  // gla needs [B,T,H,K]
        expectError(.linearAttention, RecurrenceInputs(q: x.q, k: x.k, v: x.v, g: y.g), "g")
        expectError(.linearAttention, RecurrenceInputs(q: x.q, k: try Tensor(zeros: [1, 5, 2, 7]), v: x.v), "k")
        expectError(.linearAttention, RecurrenceInputs(q: x.q, k: x.k, v: try Tensor(zeros: [1, 4, 2, 4])), "v")
        expectError(.linearAttention, RecurrenceInputs(q: try Tensor(zeros: [5, 2, 8]), k: x.k, v: x.v), "q")
        let empty = try Tensor(zeros: [1, 5, 2, 0])
        expectError(.linearAttention, RecurrenceInputs(q: empty, k: empty, v: x.v), "q")  // K = 0
        expectError(.linearAttention, RecurrenceInputs(q: x.q, k: x.k, v: x.v, scale: .nan), "scale")
        var n = RecurrenceInputs(q: x.q, k: x.k, v: x.v, g: y.g)
        n.normalize = true
        expectError(.simpleGLA, n, "normalize")

        // Empty extents are not errors: T = 0 passes the state through, V = 0 gives empty outputs.
        let state = try Tensor.randomNormal([1, 2, 8, 4], seed: 52)
        let none = try Tensor(zeros: [1, 0, 2, 8])
        let passed = try Recurrence.forward(
            .linearAttention, RecurrenceInputs(q: none, k: none, v: try Tensor(zeros: [1, 0, 2, 4]), initialState: state), form: .chunked(size: 64))
        #expect(passed.o.shape == [1, 0, 2, 4] && passed.finalState == state)
        let noValues = try Recurrence.forward(.retention, RecurrenceInputs(q: x.q, k: x.k, v: empty), form: .chunked(size: 4))
        #expect(noValues.o.shape == [1, 5, 2, 0] && noValues.finalState.shape == [1, 2, 8, 0])
    }

    /// The small helpers the CLI relies on.
    @Test func requiredInputsAndFLOPs() {
        #expect(Recurrence.requiredInputs(.gatedDeltaRule) == ["q", "k", "v", "g", "beta"])
        #expect(Recurrence.requiredInputs(.deltaRule) == ["q", "k", "v", "beta"])
        #expect(Recurrence.requiredInputs(.gla) == ["q", "k", "v", "g"])
        #expect(Recurrence.requiredInputs(.retention) == ["q", "k", "v"])
        #expect(RecurrentMechanism(rawValue: "simple_gla") == .simpleGLA)
        let f1 = Recurrence.chunkedFLOPs(.simpleGLA, B: 1, T: 4096, H: 8, K: 64, V: 64, chunkSize: 64)
        let f2 = Recurrence.chunkedFLOPs(.simpleGLA, B: 1, T: 8192, H: 8, K: 64, V: 64, chunkSize: 64)
        #expect(f1 > 0 && abs(f2 / f1 - 2) < 1e-9)
        #expect(Recurrence.chunkedFLOPs(.gatedDeltaRule, B: 1, T: 4096, H: 8, K: 64, V: 64, chunkSize: 64) > f1)
    }
}
