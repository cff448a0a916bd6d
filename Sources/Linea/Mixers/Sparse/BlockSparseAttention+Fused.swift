import Foundation

extension BlockSparseAttention {
    /// The fused CPU form: flash attention's tiles (GEMM products, online softmax) run over the kept key blocks only,
    /// one work item per (batch, head, query block); q `[B,T,Hq,D]`, k `[B,S,Hkv,D]`, v `[B,S,Hkv,Dv]`, `mask` as in
    /// `reference`. Rows that see no key get o = 0, lse = -inf. O(kept blocks · blockRows · blockKeys · (D + Dv)) time,
    /// O(threads · (S·(D + Dv) + tile)) extra memory; dropped blocks cost nothing.
    public static func fused(
        q: Tensor, k: Tensor, v: Tensor, mask: BlockMask, options: AttentionOptions = AttentionOptions()
    ) throws -> AttentionOutput {
        try fused(q: q, k: k, v: v, mask: mask, runs: nil, options: options)
    }

    /// `fused` through a selector's choice: its exact `keys` when it has them (each row's runs, the causal mask on
    /// top), else its mask. O(attended keys · blockRows · (D + Dv)) plus flash's tile padding.
    public static func fused(
        q: Tensor, k: Tensor, v: Tensor, selection: BlockSelection, options: AttentionOptions = AttentionOptions()
    ) throws -> AttentionOutput {
        try fused(q: q, k: k, v: v, mask: selection.mask, runs: selection.keys, options: options)
    }

    /// `fused` over `runs` (key runs per mask row `[Bm·Hm·QB]`, as `keyRuns` gives) when set, else the mask's. Same cost.
    static func fused(
        q: Tensor, k: Tensor, v: Tensor, mask: BlockMask, runs: [[Range<Int>]]?, options: AttentionOptions
    ) throws -> AttentionOutput {
        let p = try AttentionProblem(q: q, k: k, v: v, options: options)
        try mask.validate(B: p.B, Hq: p.Hq, T: p.T, S: p.S)
        let empty = p.B * p.T * p.Hq == 0 || p.S == 0
        try MemoryBudget.check(empty ? Array(p.buffers(.flash).prefix(2)) : p.buffers(.flash))
        var o = Allocation.zeros(p.B * p.T * p.Hq * p.Dv)
        var lse = [Float](repeating: -.infinity, count: p.B * p.T * p.Hq)
        if !empty {
            try Attention.checkFloat32Range(q: q, k: k, v: v, scale: p.scale, form: .flash)
            q.withUnsafeBufferPointer { qb in k.withUnsafeBufferPointer { kb in v.withUnsafeBufferPointer { vb in
                o.withUnsafeMutableBufferPointer { ob in lse.withUnsafeMutableBufferPointer { lb in
                    fused(p, AttentionPointers(qb, kb, vb), mask: mask, runs: runs, o: ob.baseAddress!, lse: lb.baseAddress!)
                } }
            } } }
        }
        let out = AttentionOutput(o: Tensor(uncheckedShape: [p.B, p.T, p.Hq, p.Dv], scalars: o),
                                  lse: Tensor(uncheckedShape: [p.B, p.T, p.Hq], scalars: lse))
        if !options.allowNonFiniteOutputs { try out.checkFinite(.flash) }
        return out
    }

    /// The CPU backend's call run on the tensors' own memory when q, k, v, o and lse are packed f32 with finite inputs
    /// (no host copies); false when they are not, for the caller to go through host tensors. Same cost as `fused`.
    static func fusedInPlace(_ c: BlockSparseCall, mask: BlockMask) throws -> Bool {
        guard [c.q, c.k, c.v, c.o, c.lse].allSatisfy({ $0.dtype == .float32 && $0.isContiguous }) else { return false }
        let p = try AttentionProblem(q: c.q.shape, k: c.k.shape, v: c.v.shape, options: c.options)
        try mask.validate(B: p.B, Hq: p.Hq, T: p.T, S: p.S)
        guard p.B * p.T * p.Hq > 0, p.S > 0 else { return false }
        let (q, k, v) = (c.q.floats, c.k.floats, c.v.floats)
        guard let maxQ = Tensor.finiteMaxMagnitude(q), let maxK = Tensor.finiteMaxMagnitude(k), let maxV = Tensor.finiteMaxMagnitude(v) else {
            return false  // the host path names the non-finite input
        }
        try Attention.checkFloat32Range(maxQ: maxQ, maxK: maxK, maxV: maxV, D: p.D, S: p.S, scale: p.scale, form: .flash)
        try MemoryBudget.check(Array(p.buffers(.flash).dropFirst(2)))
        fused(p, AttentionPointers(q, k, v), mask: mask, o: c.o.mutableFloats.baseAddress!, lse: c.lse.mutableFloats.baseAddress!)
        if !c.options.allowNonFiniteOutputs && !RecurrenceSIMD.allFinite(c.o.floats) {
            try AttentionOutput(o: c.o.host(), lse: c.lse.host()).checkFinite(.flash)
        }
        return true
    }

    /// The fused form on packed Float32 buffers (a non-empty, validated problem), over `runs` per mask row when set,
    /// else the mask's; writes every element of `o` and `lse`. Same cost as `fused`.
    static func fused(_ p: AttentionProblem, _ ptrs: AttentionPointers, mask: BlockMask, runs given: [[Range<Int>]]? = nil,
                      o: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>) {
        let kernels = CPUKernels.current
        // A mask row of more queries than flash's tile runs as several tiles with the same key blocks.
        let tileRows = min(mask.blockRows, kernels.queryBlock)
        let rowBlocks = mask.shape[2]
        let tilesPerBlock = BlockMask.blocks(min(mask.blockRows, p.T), tileRows)
        let tiles = rowBlocks * tilesPerBlock
        let runs = given ?? keyRuns(mask, S: p.S)
        let (Bm, Hm) = (mask.shape[0], mask.shape[1])
        Attention.attendTiles(p, kernels, ptrs, o: o, lse: lse, count: p.B * p.Hq * tiles) { item in
            // A head's tiles one after another (workers share its packed keys), the last (heaviest, causal) first.
            let tile = tiles - 1 - item % tiles
            let (b, h) = ((item / tiles) / p.Hq, (item / tiles) % p.Hq)
            let (block, part) = (tile / tilesPerBlock, tile % tilesPerBlock)
            let i0 = min(p.T, block * mask.blockRows + part * tileRows)
            let i1 = min(p.T, block * mask.blockRows + min(mask.blockRows, (part + 1) * tileRows))
            let row = ((Bm == 1 ? 0 : b) * Hm + (Hm == 1 ? 0 : h)) * rowBlocks + block
            return Attention.TileItem(b: b, h: h, rows: i0..<i1, keys: 0..<0, row: (b * p.T + i0) * p.Hq + h,
                                      keyRuns: i0 < i1 ? runs[row] : [])
        }
    }

    /// Per mask row `[Bm·Hm·QB]`, its kept key blocks merged into ascending runs of key positions (clipped to S). O(blocks).
    static func keyRuns(_ mask: BlockMask, S: Int) -> [[Range<Int>]] {
        let keyBlocks = mask.shape[3]
        let rows = mask.shape[0] * mask.shape[1] * mask.shape[2]
        return (0..<rows).map { r in
            var runs: [Range<Int>] = []
            var j = 0
            while j < keyBlocks {
                guard mask.values[r * keyBlocks + j] != 0 else { j += 1; continue }
                let start = j
                while j < keyBlocks, mask.values[r * keyBlocks + j] != 0 { j += 1 }
                runs.append(start * mask.blockKeys..<min(S, j * mask.blockKeys))
            }
            return runs
        }
    }
}
