import Linea
import LineaCUDA

/// Checks each wgmma variant (a list of NVRTC defines, see `--wgmma-defines`) against the portable kernel on shapes
/// the bench does not cover: GQA with S > T, rows with no visible key (S < T, causal), a sliding window, non-causal,
/// and partial tiles (bf16 inputs, fp32 o and lse; o rel RMS <= 2e-3, lse rel RMS <= 1e-4 with matching -inf rows).
/// Prints one line per (shape, variant) and returns the number of failures; 0 off sm_90.
func wgmmaVariantChecks(_ ctx: CUDAContext, _ variants: [[String]]) -> Int {
    guard ctx.computeCapability.major == 9 else { return 0 }
    func bf16(_ count: Int, seed: UInt64) throws -> CUDABuffer {
        try CUDABuffer(context: ctx, copying: try Tensor.randomNormal([count], seed: seed).scalars.map(HalfPrecision.bfloat16Bits))
    }
    let cases: [(CUDAAttentionShape, Bool, Int?)] = [
        (CUDAAttentionShape(batch: 4, queryLength: 1000, keyLength: 1100, queryHeads: 16, kvHeads: 4, headDim: 128), true, nil),
        (CUDAAttentionShape(batch: 2, queryLength: 1500, keyLength: 700, queryHeads: 8, kvHeads: 2, headDim: 128), true, nil),
        (CUDAAttentionShape(batch: 2, queryLength: 2048, keyLength: 2048, queryHeads: 8, kvHeads: 8, headDim: 128), true, 300),
        (CUDAAttentionShape(batch: 3, queryLength: 700, keyLength: 900, queryHeads: 16, kvHeads: 16, headDim: 128), false, nil),
    ]
    var failed = 0
    for (shape, causal, window) in cases {
        let label = "\(shape) \(causal ? "causal" : "non-causal")\(window.map { " window \($0)" } ?? "")"
        do {
            let nq = shape.batch * shape.queryLength * shape.queryHeads * 128
            let nk = shape.batch * shape.keyLength * shape.kvHeads * 128
            let rows = shape.batch * shape.queryLength * shape.queryHeads
            let q = try bf16(nq, seed: 21), k = try bf16(nk, seed: 22), v = try bf16(nk, seed: 23)
            let o = try CUDABuffer(context: ctx, byteCount: nq * 4), lse = try CUDABuffer(context: ctx, byteCount: rows * 4)
            func run(_ kernel: CUDAAttention.Kernel, _ options: [String]) throws -> (o: [Float], lse: [Float]) {
                try o.upload([Float](repeating: .nan, count: nq))  // unwritten outputs stay NaN and fail
                try lse.upload([Float](repeating: .nan, count: rows))
                var config = CUDAAttention.TensorCoreConfig.default
                config.extraOptions = options
                try CUDAAttention.forward(q: q, k: k, v: v, o: o, lse: lse, shape: shape, causal: causal, window: window,
                                          dtype: .bfloat16, outputDType: .float32, kernel: kernel, tensorCoreConfig: config)
                return (try o.download(Float.self, count: nq), try lse.download(Float.self, count: rows))
            }
            let reference = try run(.portable, [])
            for options in variants {
                let result = try run(.wgmma, options)
                let oStats = ErrorStats(result.o, reference.o)
                // -inf rows must match; finite lse values are compared.
                let lseActual = zip(result.lse, reference.lse).map { $0.isFinite == $1.isFinite ? ($0.isFinite ? $0 : 0) : .nan }
                let lseStats = ErrorStats(lseActual, reference.lse.map { $0.isFinite ? $0 : 0 })
                let ok = oStats.relativeRMS <= 2e-3 && lseStats.relativeRMS <= 1e-4
                if !ok { failed += 1 }
                print("\(ok ? "ok  " : "FAIL") wgmma \(label)\(options.map { " \($0)" }.joined()) vs portable: o \(oStats), lse \(lseStats)")
            }
        } catch {
            print("FAIL wgmma \(label): \(error)")
            failed += 1
        }
    }
    return failed
}
