import Foundation
import Linea
import LineaCUDA

/// `linea verify --backend cuda` for the gla kernel: `CUDAChunkedGLA.forward` against the CPU Float64 reference with
/// q, k, v rounded to `dtype` first (outputs and final states): lengths around the chunk size, a long split sequence,
/// both V blocks, with and without an initial state, ordinary, large and steep gates, grouped value heads (HV = 2H).
/// Empty for other mechanisms.
func cudaGLAChecks(_ r: RecurrentMechanism, dtype: DType, seed: UInt64) throws -> [VerificationCheck] {
    guard r == .gla else { return [] }
    // (B, T, H, HV, K, V, gate range, initial state, V block)
    let normal: ClosedRange<Float> = -1...(-1e-4)
    let grid: [(Int, Int, Int, Int, Int, Int, ClosedRange<Float>, Bool, Int?)] = [
        (1, 1, 2, 2, 64, 64, normal, true, nil), (3, 63, 2, 2, 128, 128, normal, true, nil),
        (1, 64, 3, 3, 64, 128, normal, true, nil), (3, 65, 2, 2, 128, 64, normal, true, nil),
        (2, 100, 2, 2, 64, 128, normal, false, nil), (1, 1000, 2, 2, 128, 128, normal, true, nil),
        (1, 1000, 2, 2, 128, 128, normal, true, 64), (2, 130, 2, 2, 128, 128, -5...(-1e-4), true, nil),
        (3, 200, 2, 2, 64, 64, -20...(-1e-4), true, nil), (2, 130, 2, 4, 64, 128, normal, true, nil),
        (1, 1000, 1, 2, 128, 64, normal, true, nil),
    ]
    return try grid.enumerated().map { index, c in
        let (B, T, H, HV, K, V, gates, initial, valueBlock) = c
        let x = try RecurrenceInputs.random(.gla, B: B, T: T, H: H, HV: HV, K: K, V: V, seed: seed &+ UInt64(index) &* 10,
                                            gateRange: gates, initialState: initial)
        let shape = "B\(B) T\(T) H\(H)\(HV == H ? "" : " HV\(HV)") K\(K) V\(V) g in [\(gates.lowerBound), \(gates.upperBound)]"
            + (initial ? "" : " no h0") + (valueBlock.map { " BV\($0)" } ?? "") + " \(dtype.rawValue.lowercased())"
        return try cudaChunkedCheck(.gla, x, dtype: dtype, shape: shape) { try CUDAChunkedGLA.forward($0, dtype: dtype, valueBlock: valueBlock) }
    }
}
