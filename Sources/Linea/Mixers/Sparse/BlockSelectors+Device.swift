import Foundation

/// The prefill selectors' scoring as a backend receives it: q `[B,T,Hq,D]` and k `[B,S,Hkv,D]` (f32, bf16 or f16) and
/// the f32 arrays `kind` fills, all on one device. The outputs come zeroed: the GPU kernels add into them.
public struct BlockScoresCall: OpCall {
    /// Which scores, with their outputs.
    public enum Kind: Sendable, Equatable {
        /// XAttention's strided antidiagonal scores, softmaxed per query group and summed per block: `blocks
        /// [B,Hq,QB,KB]` (`BlockSelector.xAttention`'s definition). `stride` divides the block size.
        case antidiagonal(stride: Int)
        /// `scale · mean(q rows of block I) · mean(k rows of block J)`: `blocks [B,Hq,QB,KB]`.
        case pooled
        /// Causal attention of the last `count` queries, summed per block into `blocks [B,Hq,rows,KB]` (the query
        /// blocks from (T - n) / bs on, n = min(count, T)), per key column into `columns [B,Hq,S]` and per diagonal
        /// (position - key) into `diagonals [B,Hq,S]`.
        case lastQueries(count: Int)
    }

    /// The scores asked for.
    public let kind: Kind
    /// Inputs.
    public let q: DeviceTensor, k: DeviceTensor
    /// Square block size of the selection (queries and keys).
    public let blockSize: Int
    /// The query scale (resolved: 1/sqrt(D) by default) and the bottom-right causal mask.
    public let scale: Float, causal: Bool
    /// Outputs: the block array of `kind`; the last queries' column and diagonal sums (nil for the others).
    public let blocks: DeviceTensor, columns: DeviceTensor?, diagonals: DeviceTensor?

    public var name: String { "block_scores" }
    public func forEachTensor(_ body: (_ name: String, _ tensor: DeviceTensor) throws -> Void) rethrows {
        try body("q", q)
        try body("k", k)
        try body("blocks", blocks)
        if let columns { try body("columns", columns) }
        if let diagonals { try body("diagonals", diagonals) }
    }

    /// The CPU's scores: the host selectors' own per-head functions (Float64 sums; q, k checked finite), rounded
    /// into the f32 outputs. O(the selector's scoring).
    func runOnCPU() throws {
        let (qh, kh) = (try q.host(), try k.host())
        let g = try BlockSelector.Grid(q: qh, k: kh, blockSize: blockSize, options: AttentionOptions(scale: scale, causal: causal))
        let heads = g.B * g.Hq
        var stride = 1, last = 64
        switch kind {
        case let .antidiagonal(s): stride = s
        case let .lastQueries(n): last = n
        case .pooled: break
        }
        let scorer = BlockSelector.Scorer(q: qh, k: kh, g, stride: stride, lastQueries: last)
        let perHead = blocks.count / max(1, heads)
        var out = [Float](repeating: 0, count: blocks.count)
        var sums = [Float](repeating: 0, count: columns == nil ? 0 : 2 * heads * g.S)
        let kind = self.kind, S = g.S
        out.withUnsafeMutableBufferPointer { o in sums.withUnsafeMutableBufferPointer { c in
            let (op, cp) = (Shared(o.baseAddress!), Shared(c.baseAddress))
            Parallel.forEach(heads) { head in
                let (b, h) = (head / g.Hq, head % g.Hq)
                let values: [Double]
                switch kind {
                case .antidiagonal: values = scorer.antidiagonal(b, h)
                case .pooled: values = scorer.pooled(b, h)
                case .lastQueries:
                    let e = scorer.lastQueries(b, h)
                    values = e.mass
                    for j in 0..<S {
                        cp.base![head * S + j] = Float(e.columns[j])
                        cp.base![(heads + head) * S + j] = Float(e.diagonals[j])
                    }
                }
                for (i, x) in values.prefix(perHead).enumerated() { op.base[head * perHead + i] = Float(x) }
            }
        } }
        try blocks.copy(from: Tensor(shape: blocks.shape, scalars: out))
        if let columns, let diagonals {
            try columns.copy(from: Tensor(shape: columns.shape, scalars: Array(sums[0..<heads * S])))
            try diagonals.copy(from: Tensor(shape: diagonals.shape, scalars: Array(sums.suffix(from: heads * S))))
        }
    }

    /// A pointer the parallel workers write disjoint elements through.
    private struct Shared: @unchecked Sendable {
        let base: UnsafeMutablePointer<Float>!
        init(_ base: UnsafeMutablePointer<Float>?) { self.base = base }
    }
}

extension BlockSelector {
    /// The selectors' scores of q `[B,T,Hq,D]`, k `[B,S,Hkv,D]` where they live (the CPU's Float64 functions, or a
    /// GPU's kernels: no value checks there), as f32 tensors on that device: `blocks` as `BlockScoresCall.Kind` says,
    /// plus `columns` and `diagonals` for `.lastQueries`. O(the scoring): antidiagonal O(B·Hq·T·S·D / stride), pooled
    /// O(B·Hq·((T + S)·D + QB·KB·D)), last queries O(B·Hq·n·S·D).
    public static func scores(_ kind: BlockScoresCall.Kind, q: DeviceTensor, k: DeviceTensor, blockSize: Int,
                              options: AttentionOptions = AttentionOptions()) throws
        -> (blocks: DeviceTensor, columns: DeviceTensor?, diagonals: DeviceTensor?) {
        let g = try Grid(q: q.shape, k: k.shape, blockSize: blockSize, options: options)
        var rows = g.QB
        switch kind {
        case let .antidiagonal(stride): try checkXAttention(blockSize: blockSize, stride: stride, tau: 1)
        case let .lastQueries(n):
            guard n >= 1 else { throw LineaError.invalidArgument(argument: "last queries", expected: ">= 1", actual: "\(n)") }
            guard g.causal else { throw LineaError.invalidArgument(argument: "causal", expected: "causal attention (the last queries' estimate is causal)", actual: "causal = false") }
            rows = LastQueries(g, last: n).rows(g)
        case .pooled: break
        }
        try MemoryBudget.check([.init("block scores", [g.B, g.Hq, rows, g.KB])])
        let blocks = try DeviceTensor.zeros([g.B, g.Hq, rows, g.KB], on: q.device)
        let sums = !isLastQueries(kind) ? nil
            : (try DeviceTensor.zeros([g.B, g.Hq, g.S], on: q.device), try DeviceTensor.zeros([g.B, g.Hq, g.S], on: q.device))
        try Backends.run(BlockScoresCall(kind: kind, q: q, k: k, blockSize: blockSize, scale: Float(g.scale), causal: g.causal,
                                         blocks: blocks, columns: sums?.0, diagonals: sums?.1))
        return (blocks, sums?.0, sums?.1)
    }

    private static func isLastQueries(_ kind: BlockScoresCall.Kind) -> Bool {
        if case .lastQueries = kind { return true } else { return false }
    }

    /// `xAttention` on q, k where they live: the block scores on their device (a GPU's kernels), downloaded
    /// (`[B,Hq,QB,KB]` f32), then the host's selection, the same code as the host form. O(B·Hq·T·S·D / stride) on the device.
    public static func xAttention(q: DeviceTensor, k: DeviceTensor, blockSize: Int = 128, stride: Int = 8, tau: Double = 0.9,
                                  options: AttentionOptions = AttentionOptions()) throws -> BlockSelection {
        let g = try Grid(q: q.shape, k: k.shape, blockSize: blockSize, options: options)
        try checkXAttention(blockSize: blockSize, stride: stride, tau: tau)
        let s = try scores(.antidiagonal(stride: stride), q: q, k: k, blockSize: blockSize, options: options)
        return try xAttention(g, Scorer(g, antidiagonal: s.blocks.host().scalars), tau: tau)
    }

    /// `topK` on q, k where they live: the pooled scores on their device, downloaded, then the host's selection.
    /// O(B·Hq·((T + S)·D + QB·KB·D)) on the device.
    public static func topK(q: DeviceTensor, k: DeviceTensor, blockSize: Int = 64, topK: Int,
                            options: AttentionOptions = AttentionOptions()) throws -> BlockSelection {
        let g = try Grid(q: q.shape, k: k.shape, blockSize: blockSize, options: options)
        guard topK >= 1 else { throw LineaError.invalidArgument(argument: "top-k", expected: ">= 1 blocks per query block", actual: "\(topK)") }
        let s = try scores(.pooled, q: q, k: k, blockSize: blockSize, options: options)
        return try Self.topK(g, Scorer(g, pooled: s.blocks.host().scalars), topK: topK)
    }

    /// `mInference` on q, k where they live: the last queries' sums (when a search or vertical-slash reads them) and
    /// the pooled scores (when a block-sparse pattern does) on their device, downloaded, then the host's patterns and
    /// search. O(B·Hq·lastQueries·S·D) on the device.
    public static func mInference(q: DeviceTensor, k: DeviceTensor, blockSize: Int = 64, patterns: [MInferencePattern], search: Bool = false,
                                  lastQueries: Int = 64, options: AttentionOptions = AttentionOptions()) throws -> BlockSelection {
        let g = try Grid(q: q.shape, k: k.shape, blockSize: blockSize, options: options)
        try checkMInference(g, patterns: patterns, search: search, lastQueries: lastQueries)
        var (pooled, columns, diagonals, mass) = ([Float](), [Float](), [Float](), [Float]())
        if patterns.contains(where: { if case .blockSparse = $0 { return true } else { return false } }) {
            pooled = try scores(.pooled, q: q, k: k, blockSize: blockSize, options: options).blocks.host().scalars
        }
        if needsEstimate(patterns, search: search) {
            let s = try scores(.lastQueries(count: lastQueries), q: q, k: k, blockSize: blockSize, options: options)
            (mass, columns, diagonals) = (try s.blocks.host().scalars, try s.columns!.host().scalars, try s.diagonals!.host().scalars)
        }
        let scorer = Scorer(g, pooled: pooled, columns: columns, diagonals: diagonals, mass: mass, lastQueries: lastQueries)
        return try mInference(g, scorer, patterns: patterns, search: search)
    }
}

extension BlockMask {
    /// The mask's values as a u8 tensor of its shape on `device`, as `BlockSparseAttention.forward` takes them. O(mask).
    public func deviceTensor(on device: Device) throws -> DeviceTensor {
        try DeviceTensor(integers: values.map(Int.init), shape: shape, dtype: .uint8, on: device)
    }
}

extension BlockSelection {
    /// `exactMask()` as a u8 tensor on `device` (`[B, Hq, QB, KB]`, or `[B, Hq, QB, S]` of 1-key blocks with exact
    /// keys), as `BlockSparseAttention.forward` takes it. O(that mask).
    public func deviceMask(on device: Device) throws -> DeviceTensor {
        try exactMask().deviceTensor(on: device)
    }
}

extension BlockSparseAttention {
    /// Block-sparse attention through a selector's choice where q `[B,T,Hq,D]`, k, v live: its `exactMask()` uploaded
    /// (exact keys as 1-key blocks: on CUDA the portable kernel takes them), then `forward(q:k:v:mask:...)`.
    /// O(kept blocks · block area · (D + Dv)), or with exact keys O(attended keys · blockRows · (D + Dv)) plus the mask.
    public static func forward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, selection: BlockSelection,
                               options: AttentionOptions = AttentionOptions()) throws -> (o: DeviceTensor, lse: DeviceTensor) {
        let exact = try selection.exactMask()
        return try forward(q: q, k: k, v: v, mask: exact.deviceTensor(on: q.device), blockRows: exact.blockRows,
                           blockKeys: exact.blockKeys, options: options)
    }
}
