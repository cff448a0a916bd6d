import Foundation
import Linea

/// Chunked forward of all six recurrences in fp32 on CUDA cores, for f32 and f16 inputs (the bf16 path is
/// `CUDAChunked` / `CUDAChunkedGLA` on tensor cores; both route `.float32` and `.float16` here). Design
/// (Kernels/ChunkedSIMTKernel.swift): one block per (V slice, head, batch) walks its chunks in order with the fp32
/// state in shared memory; the delta rules solve their WY/UT system per chunk by forward substitution.
package enum CUDAChunkedSIMT {
    /// Input element types of this path: fp32 and fp16.
    public static let inputTypes: [DType] = [.float32, .float16]

    /// Runs `mechanism` (any of `CUDAChunked.covered`) over `inputs` (fla layout, as `Recurrence.forward`) on the GPU.
    /// q, k, v are uploaded as `dtype` (`.float32`, or `.float16` rounded to nearest even); g, beta and the state stay
    /// fp32; math in fp32. Returns o `[B,T,HV,V]` (fp32) and the final state `[B,HV,K,V]`. Takes K and V in {64, 128};
    /// `useQKL2Norm` is applied on the host; the linear_attn normalizer is not supported (throws).
    /// O(B·HV·T·(K·V + C·(K+V))) work on the device (C = 64; gla: C·K exponentials per token), plus the transfers.
    public static func forward(
        _ mechanism: RecurrentMechanism, _ inputs: RecurrenceInputs, dtype: DType, valueBlock: Int? = nil,
        context: CUDAContext? = nil
    ) throws -> RecurrenceOutput {
        try checkMechanism(mechanism)
        try checkInputType(dtype)
        try CUDAChunked.checkOptions(chunkSize: 64, dtype: dtype, normalize: inputs.normalize)
        let shape = try CUDAChunked.checkedShape(mechanism, inputs)
        try checkValueBlock(valueBlock, V: shape.valueDim)
        return try CUDAChunked.run(mechanism, inputs, shape, dtype: dtype, context: context) { q, k, v, g, beta, h0, ht, o in
            try forward(mechanism, q: q, k: k, v: v, g: g, beta: beta, initialState: h0, finalState: ht, o: o,
                        shape: shape, scale: inputs.scale, inputDType: dtype, outputDType: .float32, valueBlock: valueBlock)
        }
    }

    /// Device-buffer variant (queues one kernel on the buffers' context stream, no transfers). q, k `[B,T,H,K]` and
    /// v `[B,T,HV,V]` hold `inputDType` elements (`.float32` or `.float16`); g holds fp32 log gates `[B,T,HV]`
    /// (simple_gla, gated_delta_rule), `[B,T,HV,K]` (gla) or the per-head log decays `[HV]` of
    /// `CUDAChunked.retentionDecays` (retention), nil otherwise; beta fp32 `[B,T,HV]` (delta rules); initialState /
    /// finalState fp32 `[B,HV,K,V]` (optional); o `[B,T,HV,V]` in `outputDType` (`.float32`, `.bfloat16`). `valueBlock`
    /// (32 or 64, dividing V; nil: chosen per shape) is the V slice one block owns. Throws for bad sizes or options.
    /// O(B·HV·T·(K·V + C·(K+V))) work.
    public static func forward(
        _ mechanism: RecurrentMechanism, q: CUDABuffer, k: CUDABuffer, v: CUDABuffer, g: CUDABuffer?, beta: CUDABuffer?,
        initialState: CUDABuffer?, finalState: CUDABuffer?, o: CUDABuffer, shape: CUDAChunkedShape, scale: Float? = nil,
        inputDType: DType, outputDType: DType = .float32, valueBlock: Int? = nil
    ) throws {
        try checkMechanism(mechanism)
        try checkInputType(inputDType, argument: "inputDType")
        let s = shape
        let (B, T, H, HV, K, V) = (s.batch, s.length, s.heads, s.valueHeads, s.keyDim, s.valueDim)
        let scaleValue = try CUDAChunked.launchScale(s, outputDType: outputDType, scale: scale)
        try checkValueBlock(valueBlock, V: V)
        let isDelta = mechanism.isDelta
        let mode = mechanism.gateKind.kernelCode
        let e = inputDType.byteCount
        var needs: [(String, CUDABuffer?, Int)] = [
            ("q", q, B * T * H * K * e), ("k", k, B * T * H * K * e), ("v", v, B * T * HV * V * e),
            ("o", o, B * T * HV * V * outputDType.byteCount),
        ]
        if mode == 1 { needs.append(("g", g, HV * 4)) }
        if mode == 2 { needs.append(("g", g, B * T * HV * 4)) }
        if mode == 3 { needs.append(("g", g, B * T * HV * K * 4)) }
        if isDelta { needs.append(("beta", beta, B * T * HV * 4)) }
        if let initialState { needs.append(("initialState", initialState, B * HV * K * V * 4)) }
        if let finalState { needs.append(("finalState", finalState, B * HV * K * V * 4)) }
        try CUDAChunked.checkBuffers(needs, s, for: mechanism.rawValue)
        let ctx = q.context
        let plan = Plan(mechanism, s, multiprocessors: ctx.multiprocessorCount, maxSharedBytes: ctx.maxSharedMemoryPerBlock,
                        valueBlock: valueBlock)
        let f = try ctx.entry("linea_chunk_simt_\(try CUDAUpload.suffix(inputDType))_k\(K)_v\(plan.valueBlock)",
                              of: CUDAKernels.chunkedSIMT, options: CUDAKernels.options(group: s.group))
        try ctx.launch(
            f, grid: (V / plan.valueBlock, HV, B), block: (256, 1, 1), sharedBytes: plan.sharedBytes,
            arguments: [.pointer(q.address), .pointer(k.address), .pointer(v.address), .pointer(g?.address ?? 0),
                        .pointer(beta?.address ?? 0), .int32(mode), .int32(isDelta ? 1 : 0),
                        .pointer(initialState?.address ?? 0), .pointer(finalState?.address ?? 0), .pointer(o.address),
                        .int32(outputDType == .bfloat16 ? 1 : 0), .int32(Int32(T)), .int32(Int32(HV)),
                        .int32(Int32(s.group)), .int32(Int32(V)), .float(scaleValue), .int32(Int32(plan.chunkSize))])
    }

    /// Launch plan: the V slice per block and the chunk length, and the shared memory they take.
    public struct Plan: Sendable, Equatable {
        /// Columns of V per block (BV: 32 or 64), tokens per chunk (C: 64, or 32 when 64 does not fit).
        public let valueBlock: Int, chunkSize: Int
        /// Dynamic shared memory of one block: state K x BV, q and k C x (K+1), U C x BV, scores C x (C+1), gates.
        public let sharedBytes: Int

        /// The plan on a device with `multiprocessors` SMs and `maxSharedBytes` of shared memory per block; BV = 64
        /// when B·HV·V/64 blocks fill the SMs (else 32), `valueBlock` forces it. O(1).
        public init(_ mechanism: RecurrentMechanism, _ s: CUDAChunkedShape, multiprocessors: Int, maxSharedBytes: Int,
                    valueBlock: Int?) {
            func bytes(_ bv: Int, _ c: Int) -> Int {
                let gates = mechanism == .gla ? c * (s.keyDim + 1) : c
                return 4 * (s.keyDim * bv + 2 * c * (s.keyDim + 1) + c * bv + c * (c + 1) + c + gates)
            }
            var bv = valueBlock ?? (s.valueDim % 64 == 0 && s.batch * s.valueHeads * s.valueDim / 64 >= multiprocessors ? 64 : 32)
            if valueBlock == nil && bv == 64 && bytes(64, 64) > maxSharedBytes { bv = 32 }
            let c = bytes(bv, 64) <= maxSharedBytes ? 64 : 32
            self.valueBlock = bv
            chunkSize = c
            sharedBytes = bytes(bv, c)
        }
    }

    private static func checkMechanism(_ mechanism: RecurrentMechanism) throws {
        guard CUDAChunked.covered.contains(mechanism) else {
            throw LineaError.invalidArgument(
                argument: "mechanism", expected: CUDAChunked.covered.map(\.rawValue).joined(separator: ", ") + " (CUDA chunked)",
                actual: mechanism.rawValue)
        }
    }

    private static func checkValueBlock(_ valueBlock: Int?, V: Int) throws {
        if let valueBlock, ![32, 64].contains(valueBlock) || V % valueBlock != 0 {
            throw LineaError.invalidArgument(argument: "valueBlock", expected: "32 or 64, dividing V = \(V) (f32/f16 chunked kernel)",
                                             actual: "\(valueBlock)")
        }
    }

    private static func checkInputType(_ dtype: DType, argument: String = "dtype") throws {
        guard inputTypes.contains(dtype) else {
            throw LineaError.invalidArgument(argument: argument, expected: "float32 or float16 (f32/f16 chunked kernel)",
                                             actual: "\(dtype)")
        }
    }
}
