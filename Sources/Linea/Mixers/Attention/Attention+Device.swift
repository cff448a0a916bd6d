/// Exact attention as a backend receives it: `q [B,T,Hq,D]`, `k [B,S,Hkv,D]`, `v [B,S,Hkv,Dv]` (one float dtype),
/// `o [B,T,Hq,Dv]` and `lse [B,T,Hq]` (f32) preallocated on the inputs' device.
public struct AttentionCall: OpCall {
    /// Inputs.
    public let q: DeviceTensor, k: DeviceTensor, v: DeviceTensor
    /// Outputs, written by the call.
    public let o: DeviceTensor, lse: DeviceTensor
    /// Masking and scaling.
    public let options: AttentionOptions
    /// The form asked for (`nil`: flash, or split-KV for a few queries against many keys where the backend has it).
    public let form: AttentionForm?

    public var name: String { "attention" + (form.map { " \($0)" } ?? "") }
    public func forEachTensor(_ body: (_ name: String, _ tensor: DeviceTensor) throws -> Void) rethrows {
        try body("q", q)
        try body("k", k)
        try body("v", v)
        try body("o", o)
        try body("lse", lse)
    }
}

extension Attention {
    /// Exact softmax attention where the inputs live (all on one device): `q [B,T,Hq,D]`, `k [B,S,Hkv,D]`,
    /// `v [B,S,Hkv,Dv]` (GQA: Hkv divides Hq), causal and sliding-window masks as `AttentionOptions`; returns
    /// `o [B,T,Hq,Dv]` (`outputDType`: f32, bf16 or f16) and `lse [B,T,Hq]` (f32) on that device. A preallocated KV cache is passed as its first S
    /// rows (`cache.narrowed(axis: 1, 0..<S)`). O(B·Hq·T·S·D).
    public static func forward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, options: AttentionOptions = AttentionOptions(),
                               form: AttentionForm? = nil, outputDType: DType = .float32) throws -> (o: DeviceTensor, lse: DeviceTensor) {
        let p = try AttentionProblem(q: q.shape, k: k.shape, v: v.shape, options: options)
        if case .splitKV(let n?) = form, n < 1 {
            throw LineaError.invalidArgument(argument: "partitions", expected: ">= 1", actual: "\(n)")
        }
        try DeviceTensor.expectOutputDType(outputDType)
        try MemoryBudget.check([.init("o", [p.B, p.T, p.Hq, p.Dv]), .init("lse", [p.B, p.T, p.Hq])])
        // Every row of o and lse is written by the op (o = 0, lse = -inf for a row that sees no key).
        let o = try DeviceTensor.uninitialized([p.B, p.T, p.Hq, p.Dv], dtype: outputDType, on: q.device)
        let lse = try DeviceTensor.uninitialized([p.B, p.T, p.Hq], on: q.device)
        // A GPU's kernels read packed tensors: a KV cache read as its first S rows of several sequences is a strided
        // view there, copied once (the CPU forms read strided views in place).
        func packed(_ x: DeviceTensor) throws -> DeviceTensor { x.device == .cpu ? x : try x.contiguous() }
        try Backends.run(AttentionCall(q: packed(q), k: packed(k), v: packed(v), o: o, lse: lse, options: options, form: form))
        return (o, lse)
    }
}
