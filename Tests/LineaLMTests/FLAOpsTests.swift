import Foundation
import Linea
import LineaLM
import Testing

/// The device-op compositions fla's models need: elu + 1, and linear attention with a running normalizer carried
/// across calls. (The model fixtures cannot check the normalizer: the RMSNorm
/// after it cancels a positive per-head divisor.)
@Suite struct FLAOpsTests {
    @Test func eluPlusOneMatchesItsDefinition() throws {
        let x: [Float] = [-90, -20, -3, -0.5, -1e-3, 0, 1e-3, 0.5, 3, 20]
        let got = try FLALinearAttention.eluPlusOne(DeviceTensor(Tensor(shape: [x.count], scalars: x))).host().scalars
        for (a, y) in zip(x, got) {
            let want = a > 0 ? a + 1 : exp(a)
            #expect(abs(y - want) <= 1e-6 * max(1, abs(want)) || abs(y - want) / want <= 1e-6, "elu(\(a)) + 1: \(y) vs \(want)")
        }
    }

    /// One call equals the recurrence's own normalized reference, and two calls carrying the state equal one.
    @Test func normalizedLinearAttentionCarriesItsKeySum() throws {
        let (B, T, H, K, V) = (2, 20, 2, 8, 4)
        let q = try Tensor.randomUniform([B, T, H, K], seed: 1, in: 0.01...1)
        let k = try Tensor.randomUniform([B, T, H, K], seed: 2, in: 0.01...1)
        let v = try Tensor.randomNormal([B, T, H, V], seed: 3)
        var inputs = RecurrenceInputs(q: q, k: k, v: v)
        inputs.normalize = true
        let reference = try Recurrence.forward(.linearAttention, inputs, form: .reference).o
        let zero = try DeviceTensor.zeros([B, H, K, V + 1])
        let one = try FLALinearAttention.normalized(q: DeviceTensor(q), k: DeviceTensor(k), v: DeviceTensor(v), state: zero)
        #expect(ErrorStats(try one.o.host(), reference).relativeRMS <= 1e-6)
        func part(_ x: Tensor, _ r: Range<Int>) throws -> DeviceTensor { try DeviceTensor(x).narrowed(axis: 1, r).contiguous() }
        let first = try FLALinearAttention.normalized(q: part(q, 0..<7), k: part(k, 0..<7), v: part(v, 0..<7), state: zero)
        let second = try FLALinearAttention.normalized(q: part(q, 7..<T), k: part(k, 7..<T), v: part(v, 7..<T), state: first.finalState)
        let split = try first.o.host().scalars.chunks(B, 7 * H * V).enumerated().flatMap { b, head in
            head + (try second.o.host().scalars.chunks(B, (T - 7) * H * V)[b])
        }
        #expect(ErrorStats(split, try one.o.host().scalars).relativeRMS <= 1e-6)
    }
}

extension Array where Element == Float {
    /// `count` consecutive runs of `length` elements.
    func chunks(_ count: Int, _ length: Int) -> [[Float]] { (0..<count).map { Array(self[($0 * length)..<(($0 + 1) * length)]) } }
}
