import Foundation
import Linea
import LineaCUDA

/// `linea verify --backend cuda`: the CUDA kernels against the CPU Float64 reference (inputs rounded to the
/// dtype first, so only the kernel's own error is measured).
func cudaVerificationChecks(_ m: Mechanism, dtype: DType, seed: UInt64) throws -> [VerificationCheck] {
    if let reason = CUDABackend.unavailableReason { throw Failure(description: reason) }
    switch m.kind {
    case .attention:
        return try cudaFlashChecks(dtype: dtype, seed: seed) + cudaSplitKVChecks(dtype: dtype, seed: seed)
            + cudaBlockSparseChecks(dtype: dtype, seed: seed)
    case .recurrence(let r):
        return try cudaChunkedChecks(r, dtype: dtype, seed: seed) + cudaGLAChecks(r, dtype: dtype, seed: seed)
            + cudaStepChecks(r, dtype: dtype, seed: seed)
    }
}

/// An outcome of `CUDAKernelChecks` as a row of the verify table: the kernel name, then the case.
private func check(_ form: String, _ outcome: CUDASelfCheck.Outcome) -> VerificationCheck {
    VerificationCheck(form: form, shape: outcome.name, errors: outcome.errors.map { ($0.output, $0.stats) })
}

/// Flash attention (`CUDAAttention.forward`) on awkward shapes.
private func cudaFlashChecks(dtype: DType, seed: UInt64) throws -> [VerificationCheck] {
    // (B, T, S, Hq, Hkv, D, causal, window): the CUDA kernels take Dv == D.
    let grid: [(Int, Int, Int, Int, Int, Int, Bool, Int?)] = [
        (1, 1, 1, 2, 2, 64, true, nil), (1, 63, 63, 2, 1, 64, true, nil), (2, 65, 65, 4, 4, 128, false, nil),
        (1, 1000, 1000, 4, 2, 128, true, nil), (1, 1000, 1000, 2, 2, 64, true, 129), (3, 4, 1000, 8, 2, 128, true, nil),
    ]
    var checks: [VerificationCheck] = []
    for (index, c) in grid.enumerated() {
        let (B, T, S, Hq, Hkv, D, causal, window) = c
        let s = seed &+ UInt64(index) &* 10
        let q = CUDAUpload.rounded(try Tensor.randomNormal([B, T, Hq, D], seed: s), dtype)
        let k = CUDAUpload.rounded(try Tensor.randomNormal([B, S, Hkv, D], seed: s + 1), dtype)
        let v = CUDAUpload.rounded(try Tensor.randomNormal([B, S, Hkv, D], seed: s + 2), dtype)
        let want = try Attention.forward(q: q, k: k, v: v, options: AttentionOptions(causal: causal, window: window), form: .reference)
        let got: (o: Tensor, lse: Tensor)
        do {
            got = try CUDAAttention.forward(q: q, k: k, v: v, causal: causal, window: window, dtype: dtype)
        } catch LineaError.invalidArgument(let argument, _, _) where argument == "dtype" {
            printError("verify: cuda flash takes no \(dtype.rawValue) inputs yet; skipped")
            return []
        }
        let shape = "B\(B) T\(T) S\(S) Hq\(Hq) Hkv\(Hkv) D\(D) \(causal ? "causal" : "full")\(window.map { " W\($0)" } ?? "") \(dtype.rawValue)"
        checks.append(VerificationCheck(form: "cuda flash", shape: shape,
                                        errors: [("o", ErrorStats(got.o, want.o)), ("lse", ErrorStats(got.lse, want.lse))]))
    }
    return checks
}

/// Split-KV decode attention (`CUDASplitKV.forward`) against `Attention.forward(.reference)`.
private func cudaSplitKVChecks(dtype: DType, seed: UInt64) throws -> [VerificationCheck] {
    try CUDAKernelChecks.splitKVCases.enumerated().map { index, c in
        check("cuda split_kv", try CUDAKernelChecks.splitKV(
            b: c.b, t: c.t, s: c.s, hq: c.hq, hkv: c.hkv, d: c.d, causal: c.causal, partitions: c.partitions, dtype: dtype,
            seed: seed &+ UInt64(index) &* 10, context: CUDABackend.shared))
    }
}

/// Block-sparse attention (`CUDABlockSparse.forward`) against `BlockSparseAttention.reference`.
private func cudaBlockSparseChecks(dtype: DType, seed: UInt64) throws -> [VerificationCheck] {
    try CUDAKernelChecks.blockSparseCases.enumerated().map { index, c in
        check("cuda block_sparse", try CUDAKernelChecks.blockSparse(
            b: c.b, t: c.t, s: c.s, hq: c.hq, hkv: c.hkv, d: c.d, bm: c.bm, bn: c.bn, perHead: c.perHead, density: c.density,
            causal: c.causal, dtype: dtype, seed: seed &+ UInt64(index) &* 10, context: CUDABackend.shared))
    }
}

/// The fused decode step of `r` over 4 tokens against `Recurrence.forward(.reference)`, plus the gated delta rule at
/// the bench shape (B 64, H 32, K = V = 128) and grouped value heads (HV = 2H).
private func cudaStepChecks(_ r: RecurrentMechanism, dtype: DType, seed: UInt64) throws -> [VerificationCheck] {
    var cases = CUDAKernelChecks.stepCases.map { ($0.b, $0.h, $0.h, $0.k, $0.v) }
    if r == .gatedDeltaRule { cases.append((64, 32, 32, 128, 128)) }
    cases.append((2, 2, 4, 128, 128))
    return try cases.enumerated().map { index, c in
        check("cuda step", try CUDAKernelChecks.step(r, b: c.0, h: c.1, hv: c.2 == c.1 ? nil : c.2, k: c.3, v: c.4, dtype: dtype,
                                                     seed: seed &+ UInt64(index) &* 10, context: CUDABackend.shared))
    }
}
