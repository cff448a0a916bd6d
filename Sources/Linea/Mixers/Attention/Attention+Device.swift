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

    /// Rows per sequence of the buffers k and v are read from: S when both are packed, a KV cache's capacity when
    /// they are its first S rows per sequence (`[B, capacity, H, D]` narrowed on axis 1: packed within a sequence,
    /// one capacity for both, D = Dv); nil for other views. O(rank).
    public var keyRows: Int? { Self.keyRows(k: k, v: v) }

    /// `keyRows` of `k` and `v`. O(rank).
    public static func keyRows(k: DeviceTensor, v: DeviceTensor) -> Int? {
        if k.isContiguous && v.isContiguous { return k.rank == 4 ? k.shape[1] : nil }
        guard k.rank == 4, v.rank == 4, k.shape[2...] == v.shape[2...] else { return nil }
        let row = k.shape[2] * k.shape[3]
        func packedWithinSequence(_ x: DeviceTensor) -> Bool { x.strides[3] == 1 && x.strides[2] == x.shape[3] && x.strides[1] == row }
        guard row > 0, packedWithinSequence(k), packedWithinSequence(v), k.strides[0] == v.strides[0], k.strides[0] % row == 0,
              k.strides[0] / row >= k.shape[1] else { return nil }
        return k.strides[0] / row
    }
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
        // A GPU's kernels read packed tensors, and k and v as a KV cache's first S rows per sequence (`keyRows`); other
        // views are copied once there (the CPU forms read strided views in place).
        let inPlace = AttentionCall.keyRows(k: k, v: v) != nil
        func packed(_ x: DeviceTensor) throws -> DeviceTensor { q.device == .cpu ? x : try x.contiguous() }
        try Backends.run(AttentionCall(q: packed(q), k: inPlace ? k : packed(k), v: inPlace ? v : packed(v), o: o, lse: lse,
                                       options: options, form: form))
        return (o, lse)
    }
}
