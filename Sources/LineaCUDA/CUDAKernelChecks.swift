import Foundation
import Linea

/// GPU-vs-CPU comparisons of the decode steps, split-KV decode attention and block-sparse attention, shared by the
/// tests, `linea verify --backend cuda` and `linea-cuda-check`. Inputs are rounded to the dtype first, so only the
/// kernel's own error is measured; tolerance on relative RMS: 1e-5 for fp32, 2e-3 for bf16 / fp16.
package enum CUDAKernelChecks {
    /// Tolerance on relative RMS for `dtype`.
    public static func tolerance(_ dtype: DType) -> Double { dtype == .float32 ? 1e-5 : 2e-3 }

    /// Decode-step cases (B, H, K, V): K 64/128/256 and odd sizes (V % 4 != 0 takes the scalar path).
    public static let stepCases: [(b: Int, h: Int, k: Int, v: Int)] = [(2, 4, 128, 128), (1, 3, 60, 100), (1, 2, 256, 64), (3, 2, 100, 33)]

    /// Random inputs of `mechanism` in model ranges (`RecurrenceInputs.random`: unit-norm keys for the delta rules, gates
    /// in [-1, -1e-4], beta in [0, 1], a random initial state), `[B,T,H,..]` with `HV` value heads (H when nil), q, k,
    /// v, g and beta rounded to `dtype` (the step uploads them all in it). Reproducible from `seed`.
    public static func recurrenceInputs(
        _ mechanism: RecurrentMechanism, B: Int, T: Int, H: Int, HV: Int? = nil, K: Int, V: Int, dtype: DType, seed: UInt64
    ) throws -> RecurrenceInputs {
        var x = try RecurrenceInputs.random(mechanism, B: B, T: T, H: H, HV: HV, K: K, V: V, seed: seed)
        let round = { (t: Tensor) in CUDAUpload.rounded(t, dtype) }
        (x.q, x.k, x.v, x.g, x.beta) = (round(x.q), round(x.k), round(x.v), x.g.map(round), x.beta.map(round))
        return x
    }

    /// `tokens` decode steps of `mechanism` on the GPU against `Recurrence.forward(.reference)`: outputs of every
    /// token and the final state; `hv` value heads (grouped, a multiple of `h`; h when nil).
    public static func step(
        _ mechanism: RecurrentMechanism, b: Int, h: Int, hv: Int? = nil, k: Int, v: Int, tokens: Int = 4, dtype: DType,
        seed: UInt64 = 11, context: CUDAContext
    ) throws -> CUDASelfCheck.Outcome {
        let inputs = try recurrenceInputs(mechanism, B: b, T: tokens, H: h, HV: hv, K: k, V: v, dtype: dtype, seed: seed)
        let want = try Recurrence.forward(mechanism, inputs, form: .reference)
        let got = try CUDARecurrentStep.scan(mechanism, inputs, dtype: dtype, context: context)
        return CUDASelfCheck.Outcome(
            name: "\(mechanism.rawValue) step x\(tokens) B=\(b) H=\(h)\(hv.map { " HV=\($0)" } ?? "") K=\(k) V=\(v) \(dtype.rawValue)",
            errors: [("o", ErrorStats(got.o, want.o)), ("state", ErrorStats(got.finalState, want.finalState))],
            tolerance: tolerance(dtype))
    }

    /// Split-KV cases (B, T, S, Hq, Hkv, D, causal, partitions): decode T = 1, a few queries, GQA/MQA, D 64/96/128/256,
    /// T > S (rows that see nothing), one partition and many.
    public static let splitKVCases: [(b: Int, t: Int, s: Int, hq: Int, hkv: Int, d: Int, causal: Bool, partitions: Int?)] = [
        (2, 1, 1000, 8, 2, 128, true, nil), (1, 4, 3000, 8, 1, 64, true, 7), (1, 16, 513, 4, 4, 128, true, nil),
        (1, 3, 200, 6, 2, 96, false, 1), (2, 1, 77, 2, 2, 256, true, 3), (1, 8, 5, 2, 1, 64, true, nil),
    ]

    /// Split-KV decode attention on the GPU against `Attention.forward(.reference)`: o and lse.
    public static func splitKV(
        b: Int, t: Int, s: Int, hq: Int, hkv: Int, d: Int, causal: Bool, partitions: Int?, dtype: DType,
        seed: UInt64 = 21, context: CUDAContext
    ) throws -> CUDASelfCheck.Outcome {
        let q = CUDAUpload.rounded(try Tensor.randomNormal([b, t, hq, d], seed: seed), dtype)
        let k = CUDAUpload.rounded(try Tensor.randomNormal([b, s, hkv, d], seed: seed &+ 1), dtype)
        let v = CUDAUpload.rounded(try Tensor.randomNormal([b, s, hkv, d], seed: seed &+ 2), dtype)
        let want = try Attention.forward(q: q, k: k, v: v, options: AttentionOptions(causal: causal), form: .reference)
        let got = try CUDASplitKV.forward(q: q, k: k, v: v, causal: causal, partitions: partitions, dtype: dtype, context: context)
        return CUDASelfCheck.Outcome(
            name: "split_kv B=\(b) T=\(t) S=\(s) Hq=\(hq) Hkv=\(hkv) D=\(d) \(causal ? "causal" : "full") partitions \(partitions.map(String.init) ?? "auto") \(dtype.rawValue)",
            errors: [("o", ErrorStats(got.o, want.o)), ("lse", ErrorStats(got.lse, want.lse))], tolerance: tolerance(dtype))
    }

    /// Block-sparse cases (B, T, S, Hq, Hkv, D, bm, bn, mask batch/heads broadcast, density, causal).
    public static let blockSparseCases: [(b: Int, t: Int, s: Int, hq: Int, hkv: Int, d: Int, bm: Int, bn: Int, perHead: Bool, density: Float, causal: Bool)] = [
        (1, 200, 200, 4, 2, 64, 64, 64, true, 0.5, true), (2, 130, 300, 2, 2, 128, 64, 64, true, 0.4, false),
        (1, 100, 100, 2, 1, 96, 16, 48, false, 0.5, true), (1, 64, 256, 2, 2, 64, 128, 128, false, 1.0, false),
    ]

    /// Block-sparse attention on the GPU against `BlockSparseAttention.reference`: o and lse (rows that see no key
    /// must give o = 0, lse = -inf on both sides).
    public static func blockSparse(
        b: Int, t: Int, s: Int, hq: Int, hkv: Int, d: Int, bm: Int, bn: Int, perHead: Bool, density: Float, causal: Bool,
        dtype: DType, seed: UInt64 = 31, context: CUDAContext
    ) throws -> CUDASelfCheck.Outcome {
        let q = CUDAUpload.rounded(try Tensor.randomNormal([b, t, hq, d], seed: seed), dtype)
        let k = CUDAUpload.rounded(try Tensor.randomNormal([b, s, hkv, d], seed: seed &+ 1), dtype)
        let v = CUDAUpload.rounded(try Tensor.randomNormal([b, s, hkv, d], seed: seed &+ 2), dtype)
        let mask = try BlockMask.random(B: perHead ? b : 1, H: perHead ? hq : 1, T: t, S: s, blockRows: bm, blockKeys: bn,
                                        density: density, seed: seed &+ 3)
        let want = try BlockSparseAttention.reference(q: q, k: k, v: v, mask: mask, options: AttentionOptions(causal: causal))
        let got = try CUDABlockSparse.forward(q: q, k: k, v: v, mask: mask, causal: causal, dtype: dtype, context: context)
        return CUDASelfCheck.Outcome(
            name: "block_sparse B=\(b) T=\(t) S=\(s) Hq=\(hq) Hkv=\(hkv) D=\(d) blocks \(bm)x\(bn) density \(density)\(perHead ? " per head" : "") \(causal ? "causal" : "full") \(dtype.rawValue)",
            errors: [("o", ErrorStats(got.o, want.o)), ("lse", ErrorStats(got.lse, want.lse))], tolerance: tolerance(dtype))
    }

    /// Every comparison of this file for `dtypes`, in order.
    public static func runAll(dtypes: [DType] = CUDAUpload.inputTypes, context: CUDAContext) throws -> [CUDASelfCheck.Outcome] {
        var all: [CUDASelfCheck.Outcome] = []
        for dtype in dtypes {
            for m in RecurrentMechanism.allCases {
                for c in stepCases { all.append(try step(m, b: c.b, h: c.h, k: c.k, v: c.v, dtype: dtype, context: context)) }
            }
            for c in splitKVCases {
                all.append(try splitKV(b: c.b, t: c.t, s: c.s, hq: c.hq, hkv: c.hkv, d: c.d, causal: c.causal,
                                       partitions: c.partitions, dtype: dtype, context: context))
            }
            for c in blockSparseCases {
                all.append(try blockSparse(b: c.b, t: c.t, s: c.s, hq: c.hq, hkv: c.hkv, d: c.d, bm: c.bm, bn: c.bn,
                                           perHead: c.perHead, density: c.density, causal: c.causal, dtype: dtype, context: context))
            }
        }
        return all
    }
}
