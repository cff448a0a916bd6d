import Foundation
import Testing
import Linea

/// Context-parallel recurrences over in-process ranks equal one rank; the communicator fails every rank, never hangs.
@Suite struct ContextParallelTests {
    /// Slice lengths per rank count over T = 77: uneven ones (a slice of one token, slices across chunk boundaries) and
    /// the even split for 8.
    static let lengths: [Int: [Int]?] = [2: [40, 37], 3: [5, 50, 22], 4: [1, 30, 16, 30], 8: nil]

    /// Relative RMS error of `a` against `b` within `tolerance`, printing both errors when not.
    static func expectClose(_ a: RecurrenceOutput, _ b: RecurrenceOutput, tolerance: Double = 1e-5, _ label: String) {
        let (o, s) = (ErrorStats(a.o, b.o), ErrorStats(a.finalState, b.finalState))
        #expect(a.o.shape == b.o.shape && a.finalState.shape == b.finalState.shape, "\(label): shapes")
        #expect(o.relativeRMS <= tolerance, "\(label) o: \(o)")
        #expect(s.relativeRMS <= tolerance, "\(label) final_state: \(s)")
    }

    /// N = 2, 3, 4, 8 ranks == one rank (chunked, C = 16) for outputs and final states, with and without an initial state,
    /// grouped value heads (HV = 2H), uneven slices.
    @Test(arguments: RecurrentMechanism.allCases)
    func ranksEqualOneRank(_ m: RecurrentMechanism) throws {
        for withState in [true, false] {
            let x = try RecurrenceInputs.random(m, B: 2, T: 77, H: 2, HV: 4, K: 16, V: 12, seed: 7, initialState: withState)
            let one = try Recurrence.forward(m, x, form: .chunked(size: 16))
            for (n, lengths) in Self.lengths.sorted(by: { $0.key < $1.key }) {
                let split = try Recurrence.contextParallelForward(m, x, form: .chunked(size: 16), ranks: n, lengths: lengths, timeout: 60)
                Self.expectClose(split, one, "\(m.rawValue) N = \(n) \(withState ? "h0" : "no h0")")
            }
        }
    }

    /// Steep gates (down to -20, a slice's summed decay far below -100), K = V = 64, the recurrent and reference forms.
    @Test(arguments: RecurrentMechanism.allCases)
    func steepGatesAndOtherForms(_ m: RecurrentMechanism) throws {
        let x = try RecurrenceInputs.random(m, B: 1, T: 150, H: 2, K: 64, V: 64, seed: 11, gateRange: -20...(-1e-4))
        for form in [RecurrenceForm.chunked(size: 64), .recurrent, .reference] {
            let one = try Recurrence.forward(m, x, form: form)
            let split = try Recurrence.contextParallelForward(m, x, form: form, ranks: 3, lengths: [70, 1, 79], timeout: 60)
            Self.expectClose(split, one, "\(m.rawValue) steep \(form)")
        }
    }

    /// kda with its in-kernel gate and beta activations and qk L2 normalization; gla with qk L2 normalization.
    @Test func activationsAndNormalization() throws {
        var kda = try RecurrenceInputs.randomKDA(B: 2, T: 60, H: 1, HV: 2, K: 32, V: 16, seed: 3,
                                                 activations: InKernelActivations(gateInKernel: true, betaSigmoid: true))
        kda.useQKL2Norm = true
        var gla = try RecurrenceInputs.random(.gla, B: 1, T: 60, H: 2, K: 32, V: 16, seed: 4)
        gla.useQKL2Norm = true
        for (m, x) in [(RecurrentMechanism.kda, kda), (.gla, gla)] {
            let one = try Recurrence.forward(m, x, form: .chunked(size: 16))
            for n in [2, 4] {
                Self.expectClose(try Recurrence.contextParallelForward(m, x, form: .chunked(size: 16), ranks: n, timeout: 60), one, "\(m.rawValue) N = \(n)")
            }
        }
    }

    /// One rank is the plain forward.
    @Test func oneRank() throws {
        let x = try RecurrenceInputs.random(.gatedDeltaRule, B: 1, T: 20, H: 1, K: 8, V: 8, seed: 5)
        Self.expectClose(try Recurrence.contextParallelForward(.gatedDeltaRule, x, form: .chunked(size: 8), ranks: 1),
                         try Recurrence.forward(.gatedDeltaRule, x, form: .chunked(size: 8)), tolerance: 0, "N = 1")
    }

    /// The error of every rank, in rank order (nil for a rank that succeeded).
    static func errors<R>(_ results: [Result<R, any Error>]) -> [String?] {
        results.map { if case .failure(let e) = $0 { "\(e)" } else { nil } }
    }

    /// Each rank's slice of `x` for `lengths`, with `change` applied to rank `rank`'s.
    static func slices(_ x: RecurrenceInputs, _ lengths: [Int], change rank: Int = -1, _ body: (inout RecurrenceInputs) throws -> Void = { _ in })
        throws -> [RecurrenceInputs] {
        var start = 0
        return try lengths.enumerated().map { r, n in
            var s = x
            let range = start..<(start + n)
            (s.q, s.k, s.v) = (try RecurrenceFixture.sliceT(x.q, range), try RecurrenceFixture.sliceT(x.k, range), try RecurrenceFixture.sliceT(x.v, range))
            s.g = try x.g.map { try RecurrenceFixture.sliceT($0, range) }
            s.beta = try x.beta.map { try RecurrenceFixture.sliceT($0, range) }
            if r > 0 { s.initialState = nil }
            if r == rank { try body(&s) }
            start += n
            return s
        }
    }

    /// Runs the per-rank forward of `slices` over a group with `timeout`; returns every rank's error.
    static func run(_ m: RecurrentMechanism, _ slices: [RecurrenceInputs], timeout: Double) throws -> [String?] {
        let group = try InProcessGroup(size: slices.count, timeout: timeout)
        return errors(group.run { c in try Recurrence.contextParallelForward(m, slices[c.rank], form: .chunked(size: 8), communicator: c) })
    }

    /// Ranks that disagree on K, on the mechanism's options or on the scale: every rank throws naming the field and rank.
    @Test func ranksDisagree() throws {
        let x = try RecurrenceInputs.random(.deltaRule, B: 1, T: 30, H: 2, K: 16, V: 8, seed: 6)
        let smallerK = try Self.slices(x, [10, 10, 10], change: 1) { s in
            s.q = try .randomNormal([1, 10, 2, 8], seed: 1)
            s.k = try .randomNormal([1, 10, 2, 8], seed: 2)
        }
        let scaled = try Self.slices(x, [10, 10, 10], change: 2) { $0.scale = 0.5 }
        let stated = try Self.slices(x, [10, 10, 10], change: 2) { $0.initialState = try .randomNormal([1, 2, 16, 8], seed: 3) }
        for (slices, word) in [(smallerK, "K on rank 1"), (scaled, "scale on rank 2"), (stated, "initial_state on rank 2")] {
            let errors = try Self.run(.deltaRule, slices, timeout: 30)
            #expect(errors.allSatisfy { $0?.contains(word) == true }, "\(word): \(errors)")
        }
    }

    /// More ranks than tokens: the in-process runner refuses before starting; a rank given no tokens fails every rank.
    @Test func moreRanksThanTokens() throws {
        let x = try RecurrenceInputs.random(.simpleGLA, B: 1, T: 3, H: 1, K: 8, V: 8, seed: 8)
        #expect(throws: LineaError.self) { try Recurrence.contextParallelForward(.simpleGLA, x, form: .recurrent, ranks: 4) }
        #expect(throws: LineaError.self) { try Recurrence.contextParallelForward(.simpleGLA, x, form: .recurrent, ranks: 2, lengths: [3, 0]) }
        let errors = try Self.run(.simpleGLA, Self.slices(x, [2, 0, 1]), timeout: 30)
        #expect(errors.allSatisfy { $0?.contains("rank 1 with 0 tokens") == true }, "\(errors)")
    }

    /// A rank whose own inputs are bad throws its error and fails the group: the others throw at once, long before the
    /// timeout, naming it.
    @Test func badRankFailsTheOthers() throws {
        let x = try RecurrenceInputs.random(.gatedDeltaRule, B: 1, T: 30, H: 1, K: 8, V: 8, seed: 9)
        let slices = try Self.slices(x, [10, 10, 10], change: 2) { $0.g!.scalars[3] = 1 }
        let start = Date()
        let errors = try Self.run(.gatedDeltaRule, slices, timeout: 120)
        #expect(Date().timeIntervalSince(start) < 60)
        #expect(errors[2]?.contains("log gates <= 0") == true, "\(errors)")
        #expect(errors[0...1].allSatisfy { $0?.contains("rank 2 failed") == true }, "\(errors)")
    }

    /// allGather concatenates in rank order over many rounds (a fast rank starting the next round must not disturb
    /// the last), and a barrier in between.
    @Test func allGatherRounds() throws {
        let group = try InProcessGroup(size: 4, timeout: 60)
        let results = group.run { c -> Bool in
            var ok = true
            for round in 0..<500 {
                let got = try c.allGather([Float(c.rank), Float(round)])
                ok = ok && got == (0..<4).flatMap { [Float($0), Float(round)] }
                if round % 100 == 0 { try c.barrier() }
            }
            return ok
        }
        #expect(results.allSatisfy { (try? $0.get()) == true })
    }

    /// Ranks sending different counts, or calling different collectives: every rank throws naming them.
    @Test func collectivesDisagree() throws {
        let counts = try InProcessGroup(size: 3, timeout: 30).run { c in try c.allGather([Float](repeating: 0, count: c.rank == 1 ? 5 : 4)) }
        #expect(Self.errors(counts).allSatisfy { $0?.contains("rank 1: 5") == true }, "\(Self.errors(counts))")
        let kinds = try InProcessGroup(size: 2, timeout: 30).run { c -> Void in
            if c.rank == 0 { try c.barrier() } else { _ = try c.allGather([1]) }
        }
        #expect(Self.errors(kinds).allSatisfy { $0?.contains("rank 1: allGather") == true }, "\(Self.errors(kinds))")
    }

    /// A rank that returns without joining: the others fail at once naming it (no wait for the timeout). A rank that
    /// comes too late: the others time out naming it, and the group stays failed, for the late rank too.
    @Test func missingRankFailsTheCollective() throws {
        let started = Date()
        let early = try InProcessGroup(size: 3, timeout: 30).run { c in if c.rank != 2 { _ = try c.allGather([1, 2]) } }
        let errors = Self.errors(early)
        #expect(errors[0...1].allSatisfy { $0?.contains("rank 2 returned without joining it") == true }, "\(errors)")
        #expect(errors[2] == nil && Date().timeIntervalSince(started) < 20)
        let group = try InProcessGroup(size: 3, timeout: 0.2)
        let late = group.run { c in
            if c.rank == 2 { Thread.sleep(forTimeInterval: 1) }
            _ = try c.allGather([1, 2])
        }
        let lateErrors = Self.errors(late)
        #expect(lateErrors.allSatisfy { $0?.contains("timed out") == true && $0?.contains("rank(s) 2") == true }, "\(lateErrors)")
        #expect(throws: LineaError.self) { try group.communicator(rank: 2).barrier() }
    }

    /// linear_attn's normalizer (its running key sum carried across ranks), with grouped value heads and qk L2
    /// normalization once; positive q and k keep the denominators away from 0.
    @Test func normalizerAcrossRanks() throws {
        for l2 in [false, true] {
            var x = try RecurrenceInputs.random(.linearAttention, B: 2, T: 70, H: 2, HV: 4, K: 16, V: 8, seed: 2)
            x.q = try .randomUniform(x.q.shape, seed: 10)
            x.k = try .randomUniform(x.k.shape, seed: 11)
            (x.normalize, x.useQKL2Norm) = (true, l2)
            let one = try Recurrence.forward(.linearAttention, x, form: .chunked(size: 16))
            for (n, lengths) in [(2, [35, 35]), (3, [1, 40, 29]), (8, nil)] {
                let split = try Recurrence.contextParallelForward(.linearAttention, x, form: .chunked(size: 16), ranks: n, lengths: lengths, timeout: 60)
                Self.expectClose(split, one, "normalize l2 \(l2) N = \(n)")
            }
        }
    }
}
