import Foundation
import Linea

/// Fused recurrent forms on the GPU for the seven mechanisms: the one-token (decode) step, the fp32 state updated in
/// place in one pass, and the whole-sequence scan (fla's fused_recurrent), the state kept in registers over T tokens.
package enum CUDARecurrentStep {
    /// The kernel's mechanism switch: 0 linear_attn, 1 retention, 2 simple_gla, 3 gla, 4 delta_rule, 5 gated_delta_rule, 6 kda.
    static func mechanismCode(_ m: RecurrentMechanism) -> Int32 {
        switch m {
        case .linearAttention: return 0
        case .retention: return 1
        case .simpleGLA: return 2
        case .gla: return 3
        case .deltaRule: return 4
        case .gatedDeltaRule: return 5
        case .kda: return 6
        }
    }

    /// Whether `m` reads a gate g, and whether it is per key (`[.., K]`, gla) rather than scalar.
    static func gate(_ m: RecurrentMechanism) -> (used: Bool, vector: Bool) {
        (m.gateKind.readsGate, m.gateKind == .vector)
    }

    /// One decode step of `mechanism` (the CPU `Recurrence` conventions): q, k `[B,H,K]`, v `[B,HV,V]` (HV a multiple
    /// of H: value head hv reads q/k head hv / (HV/H)), g `[B,HV]` (simple_gla, gated_delta_rule) or `[B,HV,K]` (gla),
    /// nil otherwise; beta `[B,HV]` for the delta rules, nil otherwise; state `[B,HV,K,V]` fp32. Decay (none;
    /// retention's `1 - 2^(-5-h)`; `exp(g)`), write (`k v^T`, or the delta rule), then `o = (scale q)^T S`. Inputs are
    /// uploaded as `dtype` (f32, bf16 or f16); the state stays fp32. Returns o `[B,HV,V]` and the new state. K <= 256.
    /// O(B·HV·K·V) on the device, plus transfers.
    public static func step(
        _ mechanism: RecurrentMechanism, q: Tensor, k: Tensor, v: Tensor, g: Tensor? = nil, beta: Tensor? = nil,
        state: Tensor, scale: Float? = nil, dtype: DType = .float32, context: CUDAContext? = nil
    ) throws -> (o: Tensor, state: Tensor) {
        try q.expectRank(3, "q", layout: "[B, H, K]")
        try v.expectRank(3, "v", layout: "[B, HV, V]")
        let (b, h, kd, hv, vd) = (q.shape[0], q.shape[1], q.shape[2], v.shape[1], v.shape[2])
        try k.expectShape([b, h, kd], "k")
        guard v.shape[0] == b, h > 0 && hv % h == 0 && hv >= h else {
            throw LineaError.shapeMismatch(argument: "v", expected: "[\(b), HV, V] with HV a multiple of H = \(h)", actual: "\(v.shape)")
        }
        try state.expectShape([b, hv, kd, vd], "state")
        let gate = gate(mechanism)
        if gate.used {
            guard let g else {
                throw LineaError.invalidArgument(argument: "g", expected: "a log gate for \(mechanism.rawValue)", actual: "none")
            }
            try g.expectShape(gate.vector ? [b, hv, kd] : [b, hv], "g")
        } else if let g {
            throw LineaError.invalidArgument(argument: "g", expected: "none (\(mechanism.rawValue) takes no gate)", actual: "shape \(g.shape)")
        }
        if mechanism.isDelta {
            guard let beta else {
                throw LineaError.invalidArgument(argument: "beta", expected: "write strengths [\(b),\(hv)] for \(mechanism.rawValue)", actual: "none")
            }
            try beta.expectShape([b, hv], "beta")
        } else if let beta {
            throw LineaError.invalidArgument(argument: "beta", expected: "none (\(mechanism.rawValue) is not a delta rule)", actual: "shape \(beta.shape)")
        }
        let ctx = try context ?? CUDABackend.shared
        let qb = try CUDAUpload.buffer(q, dtype: dtype, context: ctx), kb = try CUDAUpload.buffer(k, dtype: dtype, context: ctx)
        let vb = try CUDAUpload.buffer(v, dtype: dtype, context: ctx)
        let gb = try g.map { try CUDAUpload.buffer($0, dtype: dtype, context: ctx) }
        let betab = try beta.map { try CUDAUpload.buffer($0, dtype: dtype, context: ctx) }
        let sb = try CUDABuffer(context: ctx, copying: state.scalars)
        let ob = try CUDABuffer(context: ctx, byteCount: b * hv * vd * 4)
        try step(mechanism, q: qb, k: kb, v: vb, g: gb, beta: betab, state: sb, o: ob,
                 batch: b, heads: h, valueHeads: hv, keyDim: kd, valueDim: vd, scale: scale, dtype: dtype)
        let o = try Tensor(shape: [b, hv, vd], scalars: ob.download(Float.self, count: b * hv * vd))
        let s = try Tensor(shape: state.shape, scalars: sb.download(Float.self, count: state.count))
        return (o, s)
    }

    /// Device-buffer variant (queues one kernel, no transfers): q, k `[B·H,K]`, v `[B·HV,V]` (HV = `valueHeads`, H when
    /// nil, a multiple of H), g `[B·HV]` or `[B·HV,K]` (gla), beta `[B·HV]`, all `dtype` (f32, bf16 or f16); state
    /// `[B·HV,K,V]` fp32 updated in place; o `[B·HV,V]` fp32. K <= 256. `columnsPerThread` (1 or 4; nil: 4 when
    /// V % 4 == 0) picks scalar or float4 state access; `warpsPerBlock` (8 or 16) the block size. Reads and writes the
    /// state once: O(B·HV·K·V) memory traffic.
    public static func step(
        _ mechanism: RecurrentMechanism, q: CUDABuffer, k: CUDABuffer, v: CUDABuffer, g: CUDABuffer?, beta: CUDABuffer?,
        state: CUDABuffer, o: CUDABuffer, batch: Int, heads: Int, valueHeads: Int? = nil, keyDim: Int, valueDim: Int,
        scale: Float? = nil,
        dtype: DType = .float32, columnsPerThread: Int? = nil, warpsPerBlock: Int = 8
    ) throws {
        guard warpsPerBlock == 8 || warpsPerBlock == 16 else {
            throw LineaError.invalidArgument(argument: "warpsPerBlock", expected: "8 or 16", actual: "\(warpsPerBlock)")
        }
        for (name, value) in [("batch", batch), ("heads", heads), ("keyDim", keyDim), ("valueDim", valueDim)] where value < 1 {
            throw LineaError.invalidArgument(argument: name, expected: ">= 1", actual: "\(value)")
        }
        let valueHeads = valueHeads ?? heads
        guard valueHeads >= heads && valueHeads % heads == 0 else {
            throw LineaError.invalidArgument(argument: "valueHeads", expected: "a multiple of heads = \(heads)", actual: "\(valueHeads)")
        }
        guard keyDim <= 256 else {
            throw LineaError.invalidArgument(argument: "keyDim", expected: "<= 256", actual: "\(keyDim)")
        }
        let suffix = try CUDAUpload.suffix(dtype)
        let scaleValue = scale ?? 1 / Float(keyDim).squareRoot()
        guard scaleValue.isFinite else {
            throw LineaError.invalidArgument(argument: "scale", expected: "a finite value", actual: "\(scaleValue)")
        }
        let bh = batch * valueHeads, e = dtype.byteCount  // state heads
        let gate = gate(mechanism)
        var needs: [(String, CUDABuffer?, Int)] = [
            ("q", q, batch * heads * keyDim * e), ("k", k, batch * heads * keyDim * e), ("v", v, bh * valueDim * e),
            ("state", state, bh * keyDim * valueDim * 4), ("o", o, bh * valueDim * 4),
        ]
        if gate.used { needs.append(("g", g, bh * (gate.vector ? keyDim : 1) * e)) }
        if mechanism.isDelta { needs.append(("beta", beta, bh * e)) }
        for (name, buffer, bytes) in needs {
            guard let buffer else {
                throw LineaError.invalidArgument(argument: name, expected: "a buffer for \(mechanism.rawValue)", actual: "nil")
            }
            if buffer.byteCount < bytes {
                throw LineaError.shapeMismatch(argument: name, expected: ">= \(bytes) bytes", actual: "\(buffer.byteCount) bytes")
            }
        }
        let ctx = state.context
        let vec = columnsPerThread ?? (valueDim % 4 == 0 ? 4 : 1)  // float4 columns when rows stay 16-byte aligned
        guard vec == 1 || (vec == 4 && valueDim % 4 == 0) else {
            throw LineaError.invalidArgument(
                argument: "columnsPerThread", expected: "1, or 4 when valueDim % 4 == 0", actual: "\(vec) (valueDim \(valueDim))")
        }
        let name = "linea_rec_step_\(suffix)_k\(keyDim <= 128 ? 128 : 256)_v\(vec)"
        let f = try ctx.entry(name, of: CUDAKernels.recurrentStep,
                              options: (warpsPerBlock == 8 ? [] : ["-DLINEA_NW=\(warpsPerBlock)"]) + CUDAKernels.options(group: valueHeads / heads))
        try ctx.launch(
            f, grid: (bh, (valueDim + 32 * vec - 1) / (32 * vec), 1), block: (32 * warpsPerBlock, 1, 1),
            arguments: [
                .int32(mechanismCode(mechanism)), .pointer(q.address), .pointer(k.address), .pointer(v.address),
                .pointer(g?.address ?? 0), .pointer(beta?.address ?? 0), .pointer(state.address), .pointer(o.address),
                .int32(Int32(keyDim)), .int32(Int32(valueDim)), .int32(Int32(valueHeads)), .int32(Int32(valueHeads / heads)),
                .float(scaleValue),
            ])
    }

    /// The whole-sequence recurrent scan (fla's fused_recurrent; queues one kernel, no transfers), fla's layout: q, k
    /// `[B,T,H,K]` and v `[B,T,HV,V]` in `dtype` (f32, bf16 or f16), g `[B,T,HV]` (`[B,T,HV,K]` for gla and kda) and beta
    /// `[B,T,HV]` f32, initialState `[B,HV,K,V]` f32 (nil: zeros), finalState `[B,HV,K,V]` f32 written, o `[B,T,HV,V]` in
    /// `outputDType` (f32 or bf16). K <= 256. Each block keeps its state columns in registers for all T tokens: the
    /// state is read and written once; O(B·T·HV·K·V) work, T steps in sequence.
    public static func sequence(
        _ mechanism: RecurrentMechanism, q: CUDABuffer, k: CUDABuffer, v: CUDABuffer, g: CUDABuffer?, beta: CUDABuffer?,
        initialState: CUDABuffer?, finalState: CUDABuffer, o: CUDABuffer, batch: Int, length: Int, heads: Int, valueHeads: Int,
        keyDim: Int, valueDim: Int, scale: Float? = nil, dtype: DType = .float32, outputDType: DType = .float32
    ) throws {
        for (name, value) in [("batch", batch), ("length", length), ("heads", heads), ("keyDim", keyDim), ("valueDim", valueDim)] where value < 1 {
            throw LineaError.invalidArgument(argument: name, expected: ">= 1", actual: "\(value)")
        }
        guard valueHeads >= heads && valueHeads % heads == 0 else {
            throw LineaError.invalidArgument(argument: "valueHeads", expected: "a multiple of heads = \(heads)", actual: "\(valueHeads)")
        }
        guard keyDim <= 256 else { throw LineaError.invalidArgument(argument: "keyDim", expected: "<= 256", actual: "\(keyDim)") }
        guard outputDType == .float32 || outputDType == .bfloat16 else {
            throw LineaError.invalidArgument(argument: "outputDType", expected: "f32 or bf16", actual: outputDType.shortName)
        }
        let suffix = try CUDAUpload.suffix(dtype)
        let scaleValue = scale ?? 1 / Float(keyDim).squareRoot()
        guard scaleValue.isFinite else { throw LineaError.invalidArgument(argument: "scale", expected: "a finite value", actual: "\(scaleValue)") }
        let (tokens, states, e) = (batch * length, batch * valueHeads, dtype.byteCount)
        let gate = gate(mechanism)
        var needs: [(String, CUDABuffer?, Int)] = [
            ("q", q, tokens * heads * keyDim * e), ("k", k, tokens * heads * keyDim * e), ("v", v, tokens * valueHeads * valueDim * e),
            ("final_state", finalState, states * keyDim * valueDim * 4), ("o", o, tokens * valueHeads * valueDim * outputDType.byteCount),
        ]
        if let initialState { needs.append(("initial_state", initialState, states * keyDim * valueDim * 4)) }
        if gate.used { needs.append(("g", g, tokens * valueHeads * (gate.vector ? keyDim : 1) * 4)) }
        if mechanism.isDelta { needs.append(("beta", beta, tokens * valueHeads * 4)) }
        for (name, buffer, bytes) in needs {
            guard let buffer else {
                throw LineaError.invalidArgument(argument: name, expected: "a buffer for \(mechanism.rawValue)", actual: "nil")
            }
            if buffer.byteCount < bytes {
                throw LineaError.shapeMismatch(argument: name, expected: ">= \(bytes) bytes", actual: "\(buffer.byteCount) bytes")
            }
        }
        // float4 columns when rows stay 16-byte aligned and there are blocks enough for the SMs; else one column a lane
        // (four times the blocks: a batch-1 prefill of 16 heads would otherwise run on 16 SMs).
        let vec = valueDim % 4 == 0 && states * ((valueDim + 127) / 128) >= 256 ? 4 : 1
        let name = "linea_rec_seq_\(suffix)_k\(keyDim <= 128 ? 128 : 256)_v\(vec)"
        let ctx = finalState.context
        let f = try ctx.entry(name, of: CUDAKernels.recurrentStep, options: CUDAKernels.options(group: valueHeads / heads))
        try ctx.launch(
            f, grid: (states, (valueDim + 32 * vec - 1) / (32 * vec), 1), block: (256, 1, 1),
            arguments: [
                .int32(mechanismCode(mechanism)), .pointer(q.address), .pointer(k.address), .pointer(v.address),
                .pointer(g?.address ?? 0), .pointer(beta?.address ?? 0), .pointer(initialState?.address ?? 0),
                .pointer(finalState.address), .pointer(o.address), .int32(outputDType == .bfloat16 ? 1 : 0),
                .int32(Int32(length)), .int32(Int32(keyDim)), .int32(Int32(valueDim)), .int32(Int32(valueHeads)),
                .int32(Int32(valueHeads / heads)), .float(scaleValue),
            ])
    }

    /// Gated delta rule step: q, k `[B,H,K]`, v `[B,H,V]`, g, beta `[B,H]`, state `[B,H,K,V]` (fp32, updated):
    /// `S = exp(g) S; S = S + beta k (v - k^T S)^T; o = (scale q)^T S`. Inputs are uploaded as `dtype`
    /// (f32, bf16 or f16). Returns o `[B,H,V]` and the new state. O(B·H·K·V) on the device, plus transfers.
    public static func gatedDeltaRule(
        q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, state: Tensor, scale: Float? = nil,
        dtype: DType = .float32, context: CUDAContext? = nil
    ) throws -> (o: Tensor, state: Tensor) {
        try step(.gatedDeltaRule, q: q, k: k, v: v, g: g, beta: beta, state: state, scale: scale, dtype: dtype, context: context)
    }

    /// Device-buffer gated delta rule step (queues the kernel, no transfers): q, k `[BH,K]`, v `[BH,V]`, g, beta
    /// `[BH]` in `dtype`; state `[BH,K,V]` fp32 updated in place; o `[BH,V]` fp32. K <= 256.
    public static func gatedDeltaRule(
        q: CUDABuffer, k: CUDABuffer, v: CUDABuffer, g: CUDABuffer, beta: CUDABuffer, state: CUDABuffer, o: CUDABuffer,
        batchHeads: Int, keyDim: Int, valueDim: Int, scale: Float? = nil, dtype: DType = .float32,
        columnsPerThread: Int? = nil
    ) throws {
        try step(.gatedDeltaRule, q: q, k: k, v: v, g: g, beta: beta, state: state, o: o, batch: batchHeads, heads: 1,
                 keyDim: keyDim, valueDim: valueDim, scale: scale, dtype: dtype, columnsPerThread: columnsPerThread)
    }

    /// Runs `inputs` (`[B,T,H,..]`, the CPU `Recurrence` layout, grouped value heads too) token by token through the
    /// decode step; returns o `[B,T,HV,V]` and the final state, as `Recurrence.forward` does. For checks (T kernel
    /// launches + transfers); `normalize`, `useQKL2Norm` and kda's in-kernel activations are not supported (throws).
    public static func scan(
        _ mechanism: RecurrentMechanism, _ inputs: RecurrenceInputs, dtype: DType = .float32, context: CUDAContext? = nil
    ) throws -> RecurrenceOutput {
        guard !inputs.normalize && !inputs.useQKL2Norm && inputs.activations.isEmpty else {
            throw LineaError.invalidArgument(argument: "inputs", expected: "normalize, useQKL2Norm and the in-kernel activations off for the decode step",
                                             actual: "normalize \(inputs.normalize), useQKL2Norm \(inputs.useQKL2Norm), \(inputs.activations)")
        }
        try inputs.q.expectRank(4, "q", layout: "[B,T,H,K]")
        try inputs.v.expectRank(4, "v", layout: "[B,T,HV,V]")
        let (b, t, kd, h, vd) = (inputs.q.shape[0], inputs.q.shape[1], inputs.q.shape[3], inputs.v.shape[2], inputs.v.shape[3])
        var state = try inputs.initialState ?? Tensor(zeros: [b, h, kd, vd])
        // Token i of a [B, T, heads, width] tensor as [B, heads, width] (or [B, heads] when `scalar`).
        func token(_ x: Tensor?, _ i: Int, _ scalar: Bool) throws -> Tensor? {
            guard let x, x.rank >= 3 else { return x }
            let h = x.shape[2], width = x.count / max(1, b * t * h)
            var values: [Float] = []
            values.reserveCapacity(b * h * width)
            for bi in 0..<b {
                let start = (bi * t + i) * h * width
                values += x.scalars[start..<(start + h * width)]
            }
            return try Tensor(shape: scalar ? [b, h] : [b, h, width], scalars: values)
        }
        var o = [Float](repeating: 0, count: b * t * h * vd)
        let vectorGate = gate(mechanism).vector
        for i in 0..<t {
            let r = try step(mechanism, q: token(inputs.q, i, false)!, k: token(inputs.k, i, false)!, v: token(inputs.v, i, false)!,
                             g: token(inputs.g, i, !vectorGate), beta: token(inputs.beta, i, true), state: state,
                             scale: inputs.scale, dtype: dtype, context: context)
            state = r.state
            for bi in 0..<b {
                let dst = (bi * t + i) * h * vd
                for x in 0..<(h * vd) { o[dst + x] = r.o.scalars[bi * h * vd + x] }
            }
        }
        return RecurrenceOutput(o: try Tensor(shape: [b, t, h, vd], scalars: o), finalState: state)
    }
}
