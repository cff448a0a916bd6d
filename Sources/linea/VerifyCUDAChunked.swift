import Foundation
import Linea
import LineaCUDA

/// `linea verify --backend cuda` for the chunked recurrence kernels: `CUDAChunked.forward` against the CPU Float64
/// reference with q, k, v rounded to `dtype` first (outputs and final states), on awkward lengths, with an initial state.
func cudaChunkedChecks(_ r: RecurrentMechanism, dtype: DType, seed: UInt64) throws -> [VerificationCheck] {
    guard CUDAChunked.supported.contains(r) else {
        if r != .gla { printError("verify: \(r.rawValue) has no CUDA chunked kernel yet; skipped") }  // gla: VerifyCUDAGLA
        return []
    }
    // (B, T, H, HV, K, V, gate range): T around the chunk size of 64 and a long multi-chunk case; strong gates once;
    // grouped value heads (HV = 2H, and 4H on a long sequence cut into segments).
    let grid: [(Int, Int, Int, Int, Int, Int, ClosedRange<Float>)] = [
        (1, 1, 2, 2, 64, 64, -1...(-1e-4)), (3, 63, 2, 2, 128, 128, -1...(-1e-4)), (1, 64, 3, 3, 64, 128, -1...(-1e-4)),
        (3, 65, 2, 2, 128, 64, -1...(-1e-4)), (1, 1000, 2, 2, 128, 128, -1...(-1e-4)), (3, 200, 2, 2, 64, 64, -20...(-1e-4)),
        (2, 130, 2, 4, 64, 128, -1...(-1e-4)), (1, 1000, 1, 4, 128, 64, -1...(-1e-4)),
    ]
    // The T = 1000 case (cut into segments by the bf16 kernels) again with a V block these small shapes never pick by
    // themselves: one block per head (BV = 128, bf16, scalar decays), BV = 64 (f32/f16 CUDA-core kernel). The bf16
    // delta kernels take 64 columns only, so they have no extra case.
    let extra: [Int?] = dtype != .bfloat16 ? [64] : r.isDelta ? [] : [128]
    let blocks: [Int?] = Array(repeating: nil, count: grid.count) + extra
    return try blocks.enumerated().map { index, valueBlock in
        let (B, T, H, HV, K, V, gates) = grid[index < grid.count ? index : 4]
        let x = try RecurrenceInputs.random(r, B: B, T: T, H: H, HV: HV, K: K, V: V, seed: seed &+ UInt64(index) &* 10,
                                            gateRange: gates)
        let g = r == .simpleGLA || r == .gatedDeltaRule ? " g in [\(gates.lowerBound), \(gates.upperBound)]" : ""
        let heads = HV == H ? "H\(H)" : "H\(H) HV\(HV)"
        let shape = "B\(B) T\(T) \(heads) K\(K) V\(V)\(g)\(valueBlock.map { " BV\($0)" } ?? "") \(dtype.rawValue.lowercased())"
        return try cudaChunkedCheck(r, x, dtype: dtype, shape: shape) {
            try CUDAChunked.forward(r, $0, dtype: dtype, valueBlock: valueBlock)
        }
    }
}

/// One check of a CUDA chunked forward (`CUDAChunked`, `CUDAChunkedGLA`): `forward` on `inputs` with q, k, v rounded
/// to `dtype`, against the CPU Float64 reference on the same rounded inputs (outputs and final state).
func cudaChunkedCheck(_ r: RecurrentMechanism, _ inputs: RecurrenceInputs, dtype: DType, shape: String,
                      _ forward: (RecurrenceInputs) throws -> RecurrenceOutput) throws -> VerificationCheck {
    var x = inputs
    (x.q, x.k, x.v) = (CUDAUpload.rounded(x.q, dtype), CUDAUpload.rounded(x.k, dtype), CUDAUpload.rounded(x.v, dtype))
    let want = try Recurrence.forward(r, x, form: .reference)
    let got = try forward(x)
    return VerificationCheck(form: "cuda chunked", shape: shape,
                             errors: [("o", ErrorStats(got.o, want.o)), ("state", ErrorStats(got.finalState, want.finalState))])
}
