import Foundation

/// A block mask for block-sparse attention: `values` `[Bm, Hm, ceil(T/blockRows), ceil(S/blockKeys)]` (row-major,
/// non-zero = the block of queries sees the block of keys), with `Bm` in {1, B} and `Hm` in {1, Hq} (broadcast).
public struct BlockMask: Sendable, Equatable {
    /// `[Bm, Hm, query blocks, key blocks]`.
    public let shape: [Int]
    /// Queries per mask row (bm) and keys per mask column (bn).
    public let blockRows: Int, blockKeys: Int
    /// One byte per block, row-major over `shape`; non-zero keeps the block.
    public let values: [UInt8]

    /// Checks `values.count` against `shape` (rank 4) and the block sizes (>= 1); the query/key lengths are checked
    /// against the attention call that uses the mask. O(1).
    public init(shape: [Int], blockRows: Int, blockKeys: Int, values: [UInt8]) throws {
        guard shape.count == 4, shape.allSatisfy({ $0 >= 1 }) else {
            throw LineaError.shapeMismatch(argument: "mask", expected: "[B or 1, H or 1, query blocks, key blocks], all >= 1", actual: "\(shape)")
        }
        guard blockRows >= 1, blockKeys >= 1 else {
            throw LineaError.invalidArgument(argument: "mask block size", expected: ">= 1 queries and keys", actual: "\(blockRows) x \(blockKeys)")
        }
        try Tensor.checkShape(shape)  // bounds the product below
        guard values.count == shape.reduce(1, *) else {
            throw LineaError.shapeMismatch(argument: "mask values", expected: "\(shape.reduce(1, *)) elements for \(shape)", actual: "\(values.count)")
        }
        self.shape = shape
        self.blockRows = blockRows
        self.blockKeys = blockKeys
        self.values = values
    }

    /// A Bool mask of the same layout. O(n).
    public init(shape: [Int], blockRows: Int, blockKeys: Int, bools: [Bool]) throws {
        try self.init(shape: shape, blockRows: blockRows, blockKeys: blockKeys, values: bools.map { $0 ? 1 : 0 })
    }

    /// The mask from a tensor of 0/1 values (non-zero keeps), e.g. read from a safetensors file. O(n).
    public init(tensor: Tensor, blockRows: Int, blockKeys: Int) throws {
        try tensor.expectRank(4, "mask", layout: "[B or 1, H or 1, query blocks, key blocks]")
        try self.init(shape: tensor.shape, blockRows: blockRows, blockKeys: blockKeys, values: tensor.scalars.map { $0 != 0 ? 1 : 0 })
    }

    /// A mask keeping every block (dense attention), `[1, 1, ceil(T/bm), ceil(S/bn)]`. O(blocks).
    public static func dense(T: Int, S: Int, blockRows: Int, blockKeys: Int) throws -> BlockMask {
        try checkBlocks(T: T, S: S, blockRows: blockRows, blockKeys: blockKeys)
        let shape = [1, 1, max(1, blocks(T, blockRows)), max(1, blocks(S, blockKeys))]
        try Tensor.checkShape(shape)
        return try BlockMask(shape: shape, blockRows: blockRows, blockKeys: blockKeys,
                             values: [UInt8](repeating: 1, count: shape.reduce(1, *)))
    }

    /// A seeded random mask of `[1 or B, 1 or H, ..]` blocks keeping about `density` of them. O(blocks).
    public static func random(B: Int, H: Int, T: Int, S: Int, blockRows: Int, blockKeys: Int, density: Float, seed: UInt64) throws -> BlockMask {
        try checkBlocks(T: T, S: S, blockRows: blockRows, blockKeys: blockKeys)
        let shape = [B, H, blocks(T, blockRows), blocks(S, blockKeys)]
        try Tensor.checkShape(shape)
        let u = try Tensor.randomUniform([shape.reduce(1, *)], seed: seed)
        return try BlockMask(shape: shape, blockRows: blockRows, blockKeys: blockKeys, values: u.scalars.map { $0 < density ? 1 : 0 })
    }

    /// `ceil(n / size)` without the `n + size - 1` that overflows for n near Int.max (n >= 0, size >= 1). O(1).
    static func blocks(_ n: Int, _ size: Int) -> Int {
        n / size + (n % size == 0 ? 0 : 1)
    }

    /// Throws unless the lengths are >= 0 and the block sizes >= 1 (they divide). O(1).
    static func checkBlocks(T: Int, S: Int, blockRows: Int, blockKeys: Int) throws {
        guard T >= 0, S >= 0 else {
            throw LineaError.invalidArgument(argument: "mask lengths", expected: "T, S >= 0", actual: "T = \(T), S = \(S)")
        }
        guard blockRows >= 1, blockKeys >= 1 else {
            throw LineaError.invalidArgument(argument: "mask block size", expected: ">= 1 queries and keys", actual: "\(blockRows) x \(blockKeys)")
        }
    }

    /// Whether query `i` of (batch b, head h) sees key `j` through the mask. O(1).
    @inline(__always)
    public func keeps(b: Int, h: Int, query i: Int, key j: Int) -> Bool {
        let bm = shape[0] == 1 ? 0 : b, hm = shape[1] == 1 ? 0 : h
        return values[((bm * shape[1] + hm) * shape[2] + i / blockRows) * shape[3] + j / blockKeys] != 0
    }

    /// Checks the mask fits an attention call with B batches, Hq heads, T queries, S keys. O(1).
    public func validate(B: Int, Hq: Int, T: Int, S: Int) throws {
        let want = [BlockMask.blocks(T, blockRows), BlockMask.blocks(S, blockKeys)]
        guard shape[0] == 1 || shape[0] == B, shape[1] == 1 || shape[1] == Hq, Array(shape[2...]) == want else {
            throw LineaError.shapeMismatch(
                argument: "mask", expected: "[1 or \(B), 1 or \(Hq), \(want[0]), \(want[1])] (blocks of \(blockRows) x \(blockKeys))",
                actual: "\(shape)")
        }
    }
}

/// Block-sparse softmax attention: exact attention restricted to the (query block, key block) pairs a `BlockMask`
/// keeps, combinable with the causal mask and a sliding window.
public enum BlockSparseAttention {
    /// The oracle: dense attention of q `[B,T,Hq,D]` over k `[B,S,Hkv,D]`, v `[B,S,Hkv,Dv]` (Hkv divides Hq) with the
    /// expanded mask, Float64 accumulation. Rows that see no key get o = 0, lse = -inf (as `Attention.forward`).
    /// O(B·Hq·T·S·D) time whatever the density, O(S) extra memory.
    public static func reference(
        q: Tensor, k: Tensor, v: Tensor, mask: BlockMask, options: AttentionOptions = AttentionOptions()
    ) throws -> AttentionOutput {
        try reference(q: q, k: k, v: v, mask: mask, options: options) { b, h, i, j in mask.keeps(b: b, h: h, query: i, key: j) }
    }

    /// The oracle through a selector's choice: query i of head (b, h) sees key j when j lies in a run of its row of
    /// `selection.keys` (a binary search), else when the mask keeps it; the causal mask on top. Same cost as `reference`.
    public static func reference(
        q: Tensor, k: Tensor, v: Tensor, selection: BlockSelection, options: AttentionOptions = AttentionOptions()
    ) throws -> AttentionOutput {
        guard let keys = selection.keys else { return try reference(q: q, k: k, v: v, mask: selection.mask, options: options) }
        let (Hq, QB, bs) = (selection.mask.shape[1], selection.mask.shape[2], selection.mask.blockRows)
        return try reference(q: q, k: k, v: v, mask: selection.mask, options: options) { b, h, i, j in
            let runs = keys[(b * Hq + h) * QB + i / bs]
            var (lo, hi) = (0, runs.count)  // the first run ending after j
            while lo < hi {
                let mid = (lo + hi) / 2
                if runs[mid].upperBound <= j { lo = mid + 1 } else { hi = mid }
            }
            return lo < runs.count && runs[lo].contains(j)
        }
    }

    /// The oracle with query i of head (b, h) seeing key j when `keeps(b, h, i, j)` (and the causal mask lets it). O(B·Hq·T·S·D).
    static func reference(
        q: Tensor, k: Tensor, v: Tensor, mask: BlockMask, options: AttentionOptions, keeps: (Int, Int, Int, Int) -> Bool
    ) throws -> AttentionOutput {
        let p = try AttentionProblem(q: q, k: k, v: v, options: options)
        try mask.validate(B: p.B, Hq: p.Hq, T: p.T, S: p.S)
        // No query row: nothing to score (a huge key axis must not size the scratch of an empty problem).
        let empty = p.B * p.T * p.Hq == 0
        try MemoryBudget.check(Array(p.buffers(.flash).prefix(2)) + [.init("scores", [empty ? 0 : p.S], elementBytes: 8)])
        if empty {
            return AttentionOutput(o: Tensor(uncheckedShape: [p.B, p.T, p.Hq, p.Dv], scalars: []),
                                   lse: Tensor(uncheckedShape: [p.B, p.T, p.Hq], scalars: []))
        }
        var o = [Float](repeating: 0, count: p.B * p.T * p.Hq * p.Dv)
        var lse = [Float](repeating: -.infinity, count: p.B * p.T * p.Hq)
        var scores = [Double](repeating: 0, count: max(1, p.S))
        var acc = [Double](repeating: 0, count: p.Dv)
        let group = p.Hq / p.Hkv
        for b in 0..<p.B {
            for h in 0..<p.Hq {
                let hk = h / group
                for i in 0..<p.T {
                    let (lo, hi) = p.keyRange(query: i)
                    let qBase = ((b * p.T + i) * p.Hq + h) * p.D
                    var m = -Double.infinity
                    for j in 0..<p.S {
                        guard j >= lo, j < hi, keeps(b, h, i, j) else { scores[j] = -.infinity; continue }
                        let kBase = ((b * p.S + j) * p.Hkv + hk) * p.D
                        var dot = 0.0
                        for d in 0..<p.D { dot += Double(q.scalars[qBase + d]) * Double(k.scalars[kBase + d]) }
                        scores[j] = dot * Double(p.scale)
                        m = max(m, scores[j])
                    }
                    guard m > -.infinity else { continue }  // no visible key: o stays 0, lse stays -inf
                    var sum = 0.0
                    for e in 0..<p.Dv { acc[e] = 0 }
                    for j in 0..<p.S where scores[j] > -.infinity {
                        let w = Foundation.exp(scores[j] - m)
                        sum += w
                        let vBase = ((b * p.S + j) * p.Hkv + hk) * p.Dv
                        for e in 0..<p.Dv { acc[e] += w * Double(v.scalars[vBase + e]) }
                    }
                    let oBase = ((b * p.T + i) * p.Hq + h) * p.Dv
                    for e in 0..<p.Dv { o[oBase + e] = Float(acc[e] / sum) }
                    lse[(b * p.T + i) * p.Hq + h] = Float(m + Foundation.log(sum))
                }
            }
        }
        let out = AttentionOutput(o: Tensor(uncheckedShape: [p.B, p.T, p.Hq, p.Dv], scalars: o),
                                  lse: Tensor(uncheckedShape: [p.B, p.T, p.Hq], scalars: lse))
        if !options.allowNonFiniteOutputs { try out.checkFinite(.reference) }
        return out
    }
}
