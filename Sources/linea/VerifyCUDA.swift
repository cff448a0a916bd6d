import Foundation
import Linea
import LineaCUDA

/// `linea verify --backend cuda`: the CUDA kernels against the CPU Float64 reference (inputs rounded to the
/// dtype first, so only the kernel's own error is measured).
func cudaVerificationChecks(_ m: Mechanism, dtype: DType, seed: UInt64) throws -> [VerificationCheck] {
    if let reason = CUDABackend.unavailableReason { throw Failure(description: reason) }
    func round(_ x: Tensor) -> Tensor { dtype == .bfloat16 ? HalfPrecision.roundedToBFloat16(x) : x }
    switch m.kind {
    case .attention:
        // (B, T, S, Hq, Hkv, D, causal, window): the CUDA kernels take Dv == D.
        let grid: [(Int, Int, Int, Int, Int, Int, Bool, Int?)] = [
            (1, 1, 1, 2, 2, 64, true, nil), (1, 63, 63, 2, 1, 64, true, nil), (2, 65, 65, 4, 4, 128, false, nil),
            (1, 1000, 1000, 4, 2, 128, true, nil), (1, 1000, 1000, 2, 2, 64, true, 129), (3, 4, 1000, 8, 2, 128, true, nil),
        ]
        return try grid.enumerated().map { index, c in
            let (B, T, S, Hq, Hkv, D, causal, window) = c
            let s = seed &+ UInt64(index) &* 10
            let q = round(try Tensor.randomNormal([B, T, Hq, D], seed: s))
            let k = round(try Tensor.randomNormal([B, S, Hkv, D], seed: s + 1))
            let v = round(try Tensor.randomNormal([B, S, Hkv, D], seed: s + 2))
            let want = try Attention.forward(q: q, k: k, v: v, options: AttentionOptions(causal: causal, window: window), form: .reference)
            let got = try CUDAAttention.forward(q: q, k: k, v: v, causal: causal, window: window, dtype: dtype)
            let shape = "B\(B) T\(T) S\(S) Hq\(Hq) Hkv\(Hkv) D\(D) \(causal ? "causal" : "full")\(window.map { " W\($0)" } ?? "") \(dtype.rawValue)"
            return VerificationCheck(form: "cuda flash", shape: shape,
                                     errors: [("o", ErrorStats(got.o, want.o)), ("lse", ErrorStats(got.lse, want.lse))])
        }
    case .recurrence(.linearAttention): return try cudaChunkedChecks(.linearAttention, dtype: dtype, seed: seed)
    case .recurrence(.retention): return try cudaChunkedChecks(.retention, dtype: dtype, seed: seed)
    case .recurrence(.simpleGLA): return try cudaChunkedChecks(.simpleGLA, dtype: dtype, seed: seed)
    case .recurrence(.deltaRule): return try cudaChunkedChecks(.deltaRule, dtype: dtype, seed: seed)
    case .recurrence(.gatedDeltaRule):
        // The fused decode step against the CPU reference over a few tokens.
        return try cudaChunkedChecks(.gatedDeltaRule, dtype: dtype, seed: seed) + [(2, 4, 128, 128), (64, 32, 128, 128), (1, 3, 60, 100)].enumerated().map { index, c in
            let (B, H, K, V) = c
            var inputs = try Mechanism.randomInputs(.gatedDeltaRule, B: B, T: 4, H: H, K: K, V: V, seed: seed &+ UInt64(index) &* 10)
            (inputs.q, inputs.k, inputs.v) = (round(inputs.q), round(inputs.k), round(inputs.v))
            inputs.g = round(inputs.g!)
            inputs.beta = round(inputs.beta!)
            let want = try Recurrence.forward(.gatedDeltaRule, inputs, form: .reference)
            var state = inputs.initialState!
            var outputs: [Tensor] = []
            for t in 0..<4 {
                // Token t of a [B, 4, H, width] tensor as [B, H, width] (or [B, H] when width is 1).
                func token(_ x: Tensor, _ width: Int) throws -> Tensor {
                    var values: [Float] = []
                    for b in 0..<B {
                        let start = (b * 4 + t) * H * width
                        values += x.scalars[start..<(start + H * width)]
                    }
                    return try Tensor(shape: width == 1 ? [B, H] : [B, H, width], scalars: values)
                }
                let step = try CUDARecurrentStep.gatedDeltaRule(
                    q: try token(inputs.q, K), k: try token(inputs.k, K), v: try token(inputs.v, V),
                    g: try token(inputs.g!, 1), beta: try token(inputs.beta!, 1), state: state, dtype: dtype)
                state = step.state
                outputs.append(step.o)
            }
            // Interleave the per-token outputs [B,H,V] back into [B,T,H,V].
            var o = [Float](); o.reserveCapacity(B * 4 * H * V)
            for b in 0..<B { for t in 0..<4 { o += outputs[t].scalars[(b * H * V)..<((b + 1) * H * V)] } }
            return VerificationCheck(form: "cuda step", shape: "B\(B) T4 H\(H) K\(K) V\(V) \(dtype.rawValue)", errors: [
                ("o", ErrorStats(o, want.o.scalars)), ("state", ErrorStats(state, want.finalState))])
        }
    default:
        printError("verify: \(m.name) has no CUDA kernel yet; skipped")
        return []
    }
}
