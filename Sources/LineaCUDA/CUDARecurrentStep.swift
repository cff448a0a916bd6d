import Foundation
import Linea

/// Fused one-token (decode) recurrent steps on the GPU; the fp32 state is updated in place in one pass.
public enum CUDARecurrentStep {
    /// Gated delta rule step: q, k `[B,H,K]`, v `[B,H,V]`, g, beta `[B,H]`, state `[B,H,K,V]` (fp32, updated):
    /// `S = exp(g) S; S = S + beta k (v - k^T S)^T; o = (scale q)^T S`. Inputs are uploaded as `dtype`
    /// (`.float32` or `.bfloat16`). Returns o `[B,H,V]` and the new state. O(B·H·K·V) on the device, plus transfers.
    public static func gatedDeltaRule(
        q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, state: Tensor, scale: Float? = nil,
        dtype: DType = .float32, context: CUDAContext? = nil
    ) throws -> (o: Tensor, state: Tensor) {
        try q.expectRank(3, "q", layout: "[B, H, K]")
        try v.expectRank(3, "v", layout: "[B, H, V]")
        let (b, h, kd, vd) = (q.shape[0], q.shape[1], q.shape[2], v.shape[2])
        try k.expectShape([b, h, kd], "k")
        try v.expectShape([b, h, vd], "v")
        try g.expectShape([b, h], "g")
        try beta.expectShape([b, h], "beta")
        try state.expectShape([b, h, kd, vd], "state")
        let ctx = try context ?? CUDABackend.shared
        let buffers = try [q, k, v, g, beta].map { try CUDAAttention.upload($0, dtype: dtype, context: ctx, argument: "dtype") }
        let sb = try CUDABuffer(context: ctx, copying: state.scalars)
        let ob = try CUDABuffer(context: ctx, byteCount: b * h * vd * 4)
        try gatedDeltaRule(
            q: buffers[0], k: buffers[1], v: buffers[2], g: buffers[3], beta: buffers[4], state: sb, o: ob,
            batchHeads: b * h, keyDim: kd, valueDim: vd, scale: scale, dtype: dtype)
        let o = try Tensor(shape: [b, h, vd], scalars: ob.download(Float.self, count: b * h * vd))
        let s = try Tensor(shape: state.shape, scalars: sb.download(Float.self, count: state.count))
        return (o, s)
    }

    /// Device-buffer variant (queues the kernel, no transfers): q, k `[BH,K]`, v `[BH,V]`, g, beta `[BH]` in `dtype`;
    /// state `[BH,K,V]` fp32 updated in place; o `[BH,V]` fp32. K <= 256. Reads and writes the state once.
    /// `columnsPerThread` (1 or 4; nil: 4 when V % 4 == 0) picks scalar or float4 state access.
    public static func gatedDeltaRule(
        q: CUDABuffer, k: CUDABuffer, v: CUDABuffer, g: CUDABuffer, beta: CUDABuffer, state: CUDABuffer, o: CUDABuffer,
        batchHeads: Int, keyDim: Int, valueDim: Int, scale: Float? = nil, dtype: DType = .float32,
        columnsPerThread: Int? = nil
    ) throws {
        for (name, value) in [("batchHeads", batchHeads), ("keyDim", keyDim), ("valueDim", valueDim)] where value < 1 {
            throw LineaError.invalidArgument(argument: name, expected: ">= 1", actual: "\(value)")
        }
        guard keyDim <= 256 else {
            throw LineaError.invalidArgument(argument: "keyDim", expected: "<= 256", actual: "\(keyDim)")
        }
        guard dtype == .float32 || dtype == .bfloat16 else {
            throw LineaError.invalidArgument(argument: "dtype", expected: "float32 or bfloat16", actual: "\(dtype)")
        }
        let e = dtype.byteCount
        let needs: [(String, CUDABuffer, Int)] = [
            ("q", q, batchHeads * keyDim * e), ("k", k, batchHeads * keyDim * e), ("v", v, batchHeads * valueDim * e),
            ("g", g, batchHeads * e), ("beta", beta, batchHeads * e), ("state", state, batchHeads * keyDim * valueDim * 4),
            ("o", o, batchHeads * valueDim * 4),
        ]
        for (name, buffer, bytes) in needs where buffer.byteCount < bytes {
            throw LineaError.shapeMismatch(argument: name, expected: ">= \(bytes) bytes", actual: "\(buffer.byteCount) bytes")
        }
        let ctx = state.context
        let vec = columnsPerThread ?? (valueDim % 4 == 0 ? 4 : 1)  // float4 columns when rows stay 16-byte aligned
        guard vec == 1 || (vec == 4 && valueDim % 4 == 0) else {
            throw LineaError.invalidArgument(
                argument: "columnsPerThread", expected: "1, or 4 when valueDim % 4 == 0", actual: "\(vec) (valueDim \(valueDim))")
        }
        let name = "linea_gdr_step_\(dtype == .float32 ? "f32" : "bf16")_k\(keyDim <= 128 ? 128 : 256)_v\(vec)"
        let f = try ctx.function(source: CUDAKernels.recurrentStep, name: name)
        try ctx.launch(
            f, grid: (batchHeads, (valueDim + 32 * vec - 1) / (32 * vec), 1), block: (256, 1, 1),
            arguments: [
                .pointer(q.address), .pointer(k.address), .pointer(v.address), .pointer(g.address), .pointer(beta.address),
                .pointer(state.address), .pointer(o.address), .int32(Int32(keyDim)), .int32(Int32(valueDim)),
                .float(scale ?? 1 / Float(keyDim).squareRoot()),
            ])
    }
}
