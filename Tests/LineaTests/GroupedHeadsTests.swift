import Foundation
import Testing
import Linea

/// Grouped value heads (fla's GVA): `q, k [B,T,H,K]`, `v [B,T,HV,V]`, gates, beta and the state over HV heads,
/// value head `hv` reading q/k head `hv / (HV/H)`.
@Suite struct GroupedHeadsTests {
    typealias F = RecurrenceFixture

    /// (B, T, H, HV, K, V): HV = 2H and 4H, sizes around the chunk boundary, several head walks across batch entries.
    static let shapes: [(Int, Int, Int, Int, Int, Int)] = [
        (2, 65, 2, 4, 32, 24), (1, 130, 3, 12, 40, 48), (3, 17, 1, 4, 64, 32),
    ]

    /// `x` (`[B,T,H,X]`) over `H·group` heads: each head repeated `group` times in place (head j is head j / group,
    /// einops' `(h g)`), or with `tiled` the H heads repeated as a block (head j is head j % H, the wrong pairing).
    static func repeatHeads(_ x: Tensor, _ group: Int, tiled: Bool = false) throws -> Tensor {
        let (B, T, H) = (x.shape[0], x.shape[1], x.shape[2])
        let width = x.count / max(1, B * T * H)
        var out: [Float] = []
        out.reserveCapacity(x.count * group)
        for bt in 0..<(B * T) {
            for j in 0..<(H * group) {
                let row = bt * H + (tiled ? j % H : j / group)
                out += x.scalars[(row * width)..<((row + 1) * width)]
            }
        }
        return try Tensor(shape: [B, T, H * group] + Array(x.shape.dropFirst(3)), scalars: out)
    }

    /// recurrent and chunked (C = 16, 64, one chunk) == reference at HV = 2H and 4H, with an initial state.
    @Test(arguments: RecurrentMechanism.allCases)
    func formsAgree(_ m: RecurrentMechanism) throws {
        for (n, (B, T, H, HV, K, V)) in Self.shapes.enumerated() {
            var x = try RecurrenceInputs.random(m, B: B, T: T, H: H, HV: HV, K: K, V: V, seed: UInt64(40 + n))
            x.useQKL2Norm = m.isDelta && n == 1
            let ref = try Recurrence.forward(m, x, form: .reference)
            #expect(ref.o.shape == [B, T, HV, V] && ref.finalState.shape == [B, HV, K, V])
            let label = "\(m.rawValue) B\(B) T\(T) H\(H) HV\(HV) K\(K) V\(V)"
            let chunked: [RecurrenceForm] = [.chunked(size: 16), .chunked(size: 64), .chunked(size: 1 << 20)]
            for form in [RecurrenceForm.recurrent] + chunked {
                _ = F.expectClose(try Recurrence.forward(m, x, form: form), ref, tolerance: 1e-5, "\(label) \(form)")
            }
        }
    }

    /// linear_attn's normalizer sums the keys a value head reads: recurrent and chunked == reference at HV = 2H.
    @Test func normalizerAgrees() throws {
        var x = try RecurrenceInputs.random(.linearAttention, B: 2, T: 70, H: 2, HV: 4, K: 16, V: 8, seed: 9)
        x.q = try .randomUniform(x.q.shape, seed: 10)
        x.k = try .randomUniform(x.k.shape, seed: 11)
        x.normalize = true
        let ref = try Recurrence.forward(.linearAttention, x, form: .reference)
        for form in [RecurrenceForm.recurrent, .chunked(size: 16)] {
            _ = F.expectClose(try Recurrence.forward(.linearAttention, x, form: form), ref, tolerance: 1e-5, "normalize \(form)")
        }
    }

    /// The independent oracle: the reference at HV = 2H equals the reference on q and k repeated to HV heads.
    @Test(arguments: RecurrentMechanism.allCases)
    func referenceEqualsRepeatedHeads(_ m: RecurrentMechanism) throws {
        var x = try RecurrenceInputs.random(m, B: 2, T: 33, H: 3, HV: 6, K: 16, V: 12, seed: 5)
        x.useQKL2Norm = m.isDelta
        var repeated = x
        repeated.q = try Self.repeatHeads(x.q, 2)
        repeated.k = try Self.repeatHeads(x.k, 2)
        let grouped = try Recurrence.forward(m, x, form: .reference)
        let plain = try Recurrence.forward(m, repeated, form: .reference)
        _ = F.expectClose(grouped, plain, tolerance: 1e-12, "\(m.rawValue) grouped vs repeated")
        // ...and the pairing matters: value head hv reading head hv % H instead gives other numbers.
        var tiled = x
        tiled.q = try Self.repeatHeads(x.q, 2, tiled: true)
        tiled.k = try Self.repeatHeads(x.k, 2, tiled: true)
        #expect(ErrorStats(try Recurrence.forward(m, tiled, form: .reference).o, grouped.o).relativeRMS > 1e-2)
    }

    /// Token-by-token `RecurrentState.step` with `q, k [B,H,K]`, `v [B,HV,V]` == the reference at HV = 2H.
    @Test(arguments: RecurrentMechanism.allCases)
    func stepMatchesReference(_ m: RecurrentMechanism) throws {
        let (B, T, H, HV, K, V) = (2, 5, 2, 4, 16, 8)
        let x = try RecurrenceInputs.random(m, B: B, T: T, H: H, HV: HV, K: K, V: V, seed: 13)
        let ref = try Recurrence.forward(m, x, form: .reference)
        var state = try RecurrentState(state: x.initialState!)
        var outputs: [Tensor] = []
        for t in 0..<T {
            outputs.append(try state.step(m, q: F.token(x.q, t), k: F.token(x.k, t), v: F.token(x.v, t),
                                          g: x.g.map { try F.token($0, t) }, beta: x.beta.map { try F.token($0, t) }))
        }
        var o = [Float](repeating: 0, count: B * T * HV * V)
        for (t, out) in outputs.enumerated() {
            for b in 0..<B {
                for i in 0..<(HV * V) { o[(b * T + t) * HV * V + i] = out.scalars[b * HV * V + i] }
            }
        }
        let got = RecurrenceOutput(o: try Tensor(shape: [B, T, HV, V], scalars: o), finalState: state.state)
        _ = F.expectClose(got, ref, tolerance: 1e-5, "\(m.rawValue) step")
    }

    /// HV not a multiple of H (or gates, beta, state over H instead of HV heads) throws a shape error naming the argument.
    @Test func mismatchedHeadsThrow() throws {
        let x = try RecurrenceInputs.random(.gatedDeltaRule, B: 1, T: 4, H: 2, HV: 4, K: 8, V: 4, seed: 3)
        func expectError(_ y: RecurrenceInputs, _ argument: String, _ expected: String) {
            do {
                _ = try Recurrence.forward(.gatedDeltaRule, y, form: .chunked(size: 64))
                Issue.record("\(argument): no error thrown")
            } catch let LineaError.shapeMismatch(name, want, _) {
                #expect(name == argument && want.contains(expected), "\(name): \(want)")
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
        var y = x
        y.v = try .randomNormal([1, 4, 3, 4], seed: 1)
        expectError(y, "v", "HV a multiple of H = 2")
        y.v = try .randomNormal([1, 4, 1, 4], seed: 1)
        expectError(y, "v", "HV a multiple of H = 2")
        y = x
        y.g = try .randomUniform([1, 4, 2], seed: 1, in: -1...(-0.1))
        expectError(y, "g", "[1, 4, 4]")
        y = x
        y.beta = try .randomUniform([1, 4, 2], seed: 1)
        expectError(y, "beta", "[1, 4, 4]")
        y = x
        y.initialState = try Tensor(zeros: [1, 2, 8, 4])
        expectError(y, "initial_state", "[1, 4, 8, 4]")
        #expect(throws: LineaError.self) {
            var s = try RecurrentState(batch: 1, heads: 3, keyDim: 8, valueDim: 4)
            _ = try s.step(.linearAttention, q: Tensor(zeros: [1, 2, 8]), k: Tensor(zeros: [1, 2, 8]), v: Tensor(zeros: [1, 3, 4]))
        }
    }
}
