/// Block-sparse attention as a backend receives it: attention's tensors plus the block mask `[Bm,Hm,QB,KB]`
/// (u8 or bool, non-zero keeps) on the same device.
public struct BlockSparseCall: OpCall {
    /// Inputs and the mask.
    public let q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, mask: DeviceTensor
    /// Queries per mask row and keys per mask column.
    public let blockRows: Int, blockKeys: Int
    /// Outputs `o [B,T,Hq,Dv]`, `lse [B,T,Hq]` (f32), written by the call.
    public let o: DeviceTensor, lse: DeviceTensor
    /// Masking and scaling on top of the block mask.
    public let options: AttentionOptions

    public var name: String { "block_sparse" }
    public func forEachTensor(_ body: (_ name: String, _ tensor: DeviceTensor) throws -> Void) rethrows {
        try body("q", q)
        try body("k", k)
        try body("v", v)
        try body("mask", mask)
        try body("o", o)
        try body("lse", lse)
    }
}

extension BlockSparseAttention {
    /// Block-sparse attention where the inputs live: `q [B,T,Hq,D]`, `k [B,S,Hkv,D]`, `v [B,S,Hkv,Dv]`, `mask`
    /// `[Bm,Hm,ceil(T/blockRows),ceil(S/blockKeys)]` u8 or bool (Bm in {1,B}, Hm in {1,Hq}); returns `o`, `lse` (f32)
    /// on that device. Both devices skip dropped blocks (the CPU runs `fused`): O(kept blocks · block area · (D + Dv)).
    public static func forward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, mask: DeviceTensor, blockRows: Int, blockKeys: Int,
                               options: AttentionOptions = AttentionOptions()) throws -> (o: DeviceTensor, lse: DeviceTensor) {
        let p = try AttentionProblem(q: q.shape, k: k.shape, v: v.shape, options: options)
        try mask.expectDType([.uint8, .bool], "mask")
        let layout = try BlockMask(shape: mask.shape, blockRows: blockRows, blockKeys: blockKeys,
                                   values: [UInt8](repeating: 0, count: mask.rank == 4 ? mask.count : 0))
        try layout.validate(B: p.B, Hq: p.Hq, T: p.T, S: p.S)
        try MemoryBudget.check([.init("o", [p.B, p.T, p.Hq, p.Dv]), .init("lse", [p.B, p.T, p.Hq])])
        let o = try DeviceTensor.zeros([p.B, p.T, p.Hq, p.Dv], on: q.device)
        let lse = try DeviceTensor.zeros([p.B, p.T, p.Hq], on: q.device)
        try Backends.run(BlockSparseCall(q: q, k: k, v: v, mask: mask, blockRows: blockRows, blockKeys: blockKeys, o: o, lse: lse,
                                         options: options))
        return (o, lse)
    }
}
