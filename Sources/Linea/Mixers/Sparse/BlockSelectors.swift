import Foundation

/// A block mask chosen by a selector, and how much of the attention it keeps.
public struct BlockSelection: Sendable {
    /// The chosen mask, `[B, Hq, ceil(T/bs), ceil(S/bs)]` with square blocks; with `keys`, the blocks holding them.
    public let mask: BlockMask
    /// Kept blocks, summed over batches and heads (a selector keeps only blocks some query can see).
    public let kept: Int
    /// Blocks holding at least one (query, key) pair the causal mask lets through (all blocks when not causal).
    public let visible: Int
    /// MInference: the pattern each head `[Hq]` ran (chosen by the search or given); empty for the other selectors.
    public let patterns: [MInferencePattern]
    /// The exact keys attended when they are finer than `mask` (MInference's vertical-slash): per (batch, head, query
    /// block) row `[B·Hq·QB]`, ascending disjoint key runs (each query also applies the causal mask); nil: `mask` is exact.
    public let keys: [[Range<Int>]]?
    /// With `keys`: attended (query, key) pairs and causal-visible pairs, summed over batches and heads; nil without.
    public let pairs: (attended: Int, visible: Int)?
    /// Keys of the call, S (the mask's key blocks round it up).
    let keyLength: Int

    /// A selection over S = `keyLength` keys; `keys` and `pairs` only for exact key sets. O(1).
    init(mask: BlockMask, kept: Int, visible: Int, patterns: [MInferencePattern], keyLength: Int, keys: [[Range<Int>]]? = nil,
         pairs: (attended: Int, visible: Int)? = nil) {
        (self.mask, self.kept, self.visible, self.patterns) = (mask, kept, visible, patterns)
        (self.keyLength, self.keys, self.pairs) = (keyLength, keys, pairs)
    }

    /// The share of the attention kept: with `keys`, attended over causal-visible (query, key) pairs (MInference's
    /// density); else `kept / visible` blocks. 0 when nothing is visible. O(1).
    public var density: Double {
        guard let pairs else { return visible == 0 ? 0 : Double(kept) / Double(visible) }
        return pairs.visible == 0 ? 0 : Double(pairs.attended) / Double(pairs.visible)
    }

    /// Relative RMS error `rms(o_sparse - o_dense) / rms(o_dense)` of attention through this selection (the fused
    /// form, over `keys` when set) against dense flash attention over the same q `[B,T,Hq,D]`, k, v. O(B·Hq·T·S·D).
    public func outputError(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = AttentionOptions()) throws -> Double {
        let sparse = try BlockSparseAttention.fused(q: q, k: k, v: v, selection: self, options: options)
        let dense = try Attention.forward(q: q, k: k, v: v, options: options, form: .flash)
        return ErrorStats(sparse.o.scalars, dense.o.scalars).relativeRMS
    }

    /// The mask attending exactly this selection: `mask`, or with `keys` one of `mask.blockRows` x 1-key blocks
    /// `[B, Hq, QB, S]`, for the devices' block-sparse kernels (they take masks only). O(B·Hq·QB·S) with keys.
    public func exactMask() throws -> BlockMask {
        guard let keys else { return mask }
        let shape = [mask.shape[0], mask.shape[1], mask.shape[2], keyLength]
        try MemoryBudget.check([.init("exact key mask", shape, elementBytes: 1)])
        var values = [UInt8](repeating: 0, count: shape.reduce(1, *))
        for (row, runs) in keys.enumerated() { for run in runs { for j in run { values[row * keyLength + j] = 1 } } }
        return try BlockMask(shape: shape, blockRows: mask.blockRows, blockKeys: 1, values: values)
    }
}

/// One of MInference's per-head sparse patterns (Jiang et al. 2024), with its budgets.
public enum MInferencePattern: Sendable, Equatable, CustomStringConvertible {
    /// A-shape (StreamingLLM's): the first `sinks` keys plus a local window of `window` keys before each query.
    case aShape(sinks: Int, window: Int)
    /// Vertical-slash: the `vertical` key columns and `slash` diagonals (query position - key) with the most attention
    /// from the last queries; the first 30 columns and the 100 most local diagonals always count among them, as in MInference.
    case verticalSlash(vertical: Int, slash: Int)
    /// Block-sparse: the `topK` key blocks of highest mean-pooled score per query block (and the diagonal).
    case blockSparse(topK: Int)

    public var description: String {
        switch self {
        case let .aShape(s, w): return "a-shape(sinks \(s), window \(w))"
        case let .verticalSlash(v, s): return "vertical-slash(vertical \(v), slash \(s))"
        case let .blockSparse(k): return "block-sparse(top \(k))"
        }
    }
}

/// Prefill selectors: each reads q `[B,T,Hq,D]` and k `[B,S,Hkv,D]` (GQA: query head h reads key head h / (Hq/Hkv))
/// and returns a per-head `BlockMask` of square `blockSize` blocks for `BlockSparseAttention`. With a causal mask
/// (aligned bottom-right: query i sits at position i + S - T) only blocks some query can see are ever kept.
public enum BlockSelector {
    /// XAttention (Xu et al. 2025, mit-han-lab/x-attention's `xattn_estimate`): per head, strided antidiagonal scores
    /// `scale/stride · Σ_q q[r·s + s-1-q] · k[c·s + q]` between groups of `stride` queries and keys (zero past T or S),
    /// softmax over each query group's visible key groups, summed into blocks; per query block the first key block and
    /// the diagonal blocks (causal) are kept, then the others by descending score while the kept sum is below
    /// `tau` times the row's sum: the smallest such prefix reaching tau (tau = 1 keeps every visible block). Not causal:
    /// nothing is forced.
    /// `stride` must divide `blockSize`. O(B·Hq·T·S·D / stride) time, O(S/stride + blocks) memory per worker.
    public static func xAttention(q: Tensor, k: Tensor, blockSize: Int = 128, stride: Int = 8, tau: Double = 0.9,
                                  options: AttentionOptions = AttentionOptions()) throws -> BlockSelection {
        let g = try Grid(q: q, k: k, blockSize: blockSize, options: options)
        try checkXAttention(blockSize: blockSize, stride: stride, tau: tau)
        return try xAttention(g, Scorer(q: q, k: k, g, stride: stride), tau: tau)
    }

    /// Throws unless tau is in (0, 1] and `stride` (>= 1) divides `blockSize`. O(1).
    static func checkXAttention(blockSize: Int, stride: Int, tau: Double) throws {
        guard tau > 0, tau <= 1 else { throw LineaError.invalidArgument(argument: "tau", expected: "a threshold in (0, 1]", actual: "\(tau)") }
        guard stride >= 1 else { throw LineaError.invalidArgument(argument: "stride", expected: ">= 1", actual: "\(stride)") }
        guard blockSize % stride == 0 else {
            throw LineaError.invalidArgument(argument: "stride", expected: "a divisor of the block size \(blockSize)", actual: "\(stride)")
        }
    }

    /// XAttention's selection from `scores.antidiagonal` (the host's or a device's): the part every device shares.
    /// O(B·Hq·QB·KB log KB) plus the scorer.
    static func xAttention(_ g: Grid, _ scores: Scorer, tau: Double) throws -> BlockSelection {
        try g.select { b, h, keep in
            let scores = scores.antidiagonal(b, h)
            for I in 0..<g.QB {
                let row = Array(scores[I * g.KB..<(I + 1) * g.KB])
                for J in xAttentionRow(row, forced: g.causal ? g.forced(I) : [], visible: g.visibleBlocks(I), tau: tau) { keep(I, J) }
            }
        }
    }

    /// XAttention's choice in one query block row: `forced` blocks, then the other `visible` ones by descending `scores`
    /// (ties: lower index first) while the sum kept so far is below `tau · Σ scores`. O(KB log KB).
    static func xAttentionRow(_ scores: [Double], forced: [Int], visible: Range<Int>, tau: Double) -> [Int] {
        if tau >= 1 { return Array(visible) }  // the whole row (a rounded running sum could stop one block short)
        let required = tau * scores.reduce(0, +)
        var kept = forced
        var sum = forced.reduce(0.0) { $0 + scores[$1] }
        let forcedSet = Set(forced)
        let others = visible.filter { !forcedSet.contains($0) }.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
        for j in others where sum < required {
            kept.append(j)
            sum += scores[j]
        }
        return kept
    }

    /// Top-k blocks: per head and query block, the `topK` visible key blocks of highest `scale · mean(q rows) ·
    /// mean(k rows)` (ties: lower index first), plus the diagonal blocks when causal. O(B·Hq·(T + S)·D + B·Hq·QB·KB·(D + log KB)).
    public static func topK(q: Tensor, k: Tensor, blockSize: Int = 64, topK: Int,
                            options: AttentionOptions = AttentionOptions()) throws -> BlockSelection {
        let g = try Grid(q: q, k: k, blockSize: blockSize, options: options)
        guard topK >= 1 else { throw LineaError.invalidArgument(argument: "top-k", expected: ">= 1 blocks per query block", actual: "\(topK)") }
        return try Self.topK(g, Scorer(q: q, k: k, g), topK: topK)
    }

    /// Top-k's selection from `scores.pooled` (the host's or a device's). O(B·Hq·QB·KB log KB) plus the scorer.
    static func topK(_ g: Grid, _ scores: Scorer, topK: Int) throws -> BlockSelection {
        try g.select { b, h, keep in
            let scores = scores.pooled(b, h)
            for I in 0..<g.QB {
                for J in topKRow(scores, I, g, topK) { keep(I, J) }
            }
        }
    }

    /// One query block row of `topK`. O(KB log KB).
    static func topKRow(_ scores: [Double], _ I: Int, _ g: Grid, _ topK: Int) -> [Int] {
        let ranked = g.visibleBlocks(I).sorted { a, b in
            let (x, y) = (scores[I * g.KB + a], scores[I * g.KB + b])
            return x > y || (x == y && a < b)
        }
        return Array(ranked.prefix(topK)) + (g.causal ? g.diagonal(I) : [])
    }

    /// MInference: per head, one of `patterns` (one for every head, or one per query head, `[1 or Hq]`). A-shape and
    /// block-sparse are block masks (a block is kept when it holds any key of the A-shape); vertical-slash attends
    /// MInference's exact keys (`verticalSlashKeys`; the selection's `keys`, its `mask` the blocks holding them; T == S).
    /// With `search`, each head instead takes the pattern among `patterns` whose mask keeps the largest share of the
    /// exact attention of the last `lastQueries` queries (MInference's estimate window, 64), ties to the fewer blocks
    /// (vertical-slash by its blocks: an upper bound of its keys' share); budgets are the caller's, so compare patterns
    /// of similar cost. Causal only.
    /// O(B·Hq·(lastQueries·S·D + QB·KB·(budgets + D))).
    public static func mInference(q: Tensor, k: Tensor, blockSize: Int = 64, patterns: [MInferencePattern], search: Bool = false,
                                  lastQueries: Int = 64, options: AttentionOptions = AttentionOptions()) throws -> BlockSelection {
        let g = try Grid(q: q, k: k, blockSize: blockSize, options: options)
        try checkMInference(g, patterns: patterns, search: search, lastQueries: lastQueries)
        return try mInference(g, Scorer(q: q, k: k, g, lastQueries: lastQueries), patterns: patterns, search: search)
    }

    /// Throws unless the call is causal, `patterns` fit `search` and the heads, their budgets are >= 1 and the last
    /// queries' scratch fits the memory budget. O(patterns).
    static func checkMInference(_ g: Grid, patterns: [MInferencePattern], search: Bool, lastQueries: Int) throws {
        guard g.causal else { throw LineaError.invalidArgument(argument: "causal", expected: "causal attention (MInference's patterns are causal)", actual: "causal = false") }
        guard !patterns.isEmpty, search || patterns.count == 1 || patterns.count == g.Hq else {
            throw LineaError.invalidArgument(argument: "patterns", expected: search ? ">= 1 candidates" : "1 or \(g.Hq) (one per query head)",
                                             actual: "\(patterns.count)")
        }
        guard lastQueries >= 1 else { throw LineaError.invalidArgument(argument: "last queries", expected: ">= 1", actual: "\(lastQueries)") }
        // Per worker: one query's scores, the column and diagonal sums ([S] each), the block mass (below [S] too).
        try MemoryBudget.check([.init("last queries' attention", [Parallel.threadCount, 4, g.S], elementBytes: 8)])
        for pattern in patterns {
            switch pattern {
            case let .aShape(sinks, window):
                guard sinks >= 0, window >= 1 else {
                    throw LineaError.invalidArgument(argument: "a-shape", expected: "sinks >= 0 and window >= 1", actual: "sinks \(sinks), window \(window)")
                }
            case let .verticalSlash(vertical, slash):
                guard vertical >= 1, slash >= 1 else {
                    throw LineaError.invalidArgument(argument: "vertical-slash", expected: "vertical >= 1 and slash >= 1", actual: "vertical \(vertical), slash \(slash)")
                }
                // MInference's key sets are defined for a square causal problem (its kernels take one length).
                guard g.T == g.S else {
                    throw LineaError.shapeMismatch(argument: "q, k (vertical-slash)", expected: "as many queries as keys (T == S)",
                                                   actual: "T = \(g.T), S = \(g.S)")
                }
            case let .blockSparse(top):
                guard top >= 1 else { throw LineaError.invalidArgument(argument: "top-k", expected: ">= 1 blocks per query block", actual: "\(top)") }
            }
        }
    }

    /// Whether MInference reads the last queries' attention: a search, or a vertical-slash pattern. O(patterns).
    static func needsEstimate(_ patterns: [MInferencePattern], search: Bool) -> Bool {
        search || hasVerticalSlash(patterns)
    }

    /// Whether any of `patterns` is vertical-slash (whose selection then carries exact keys). O(patterns).
    static func hasVerticalSlash(_ patterns: [MInferencePattern]) -> Bool {
        patterns.contains { if case .verticalSlash = $0 { return true } else { return false } }
    }

    /// MInference's masks and search from `scores.lastQueries` and `scores.pooled` (the host's or a device's), the
    /// part every device shares. O(B·Hq·QB·KB·(budgets + patterns)) plus the scorer.
    static func mInference(_ g: Grid, _ scores: Scorer, patterns: [MInferencePattern], search: Bool) throws -> BlockSelection {
        let chosenOut = SendableArray(repeating: patterns[0], count: g.B * g.Hq)
        let exact = hasVerticalSlash(patterns)
        let keysOut = SendableArray<[Range<Int>]?>(repeating: nil, count: exact ? g.B * g.Hq * g.QB : 0)
        let selection = try g.select { b, h, keep in
            let estimate = needsEstimate(patterns, search: search) ? scores.lastQueries(b, h) : nil
            var pooled: [Double]?
            // A pattern's blocks, and for vertical-slash its exact key runs per query block (empty for the others).
            func mask(_ pattern: MInferencePattern) -> (blocks: [UInt8], keys: [[Range<Int>]]) {
                var m = [UInt8](repeating: 0, count: g.QB * g.KB)
                var keys: [[Range<Int>]] = []
                switch pattern {
                case let .aShape(sinks, window):
                    for I in 0..<g.QB {
                        let first = max(0, g.positions(I).first)
                        for J in g.visibleBlocks(I) where J * g.bs < sinks || (J + 1) * g.bs - 1 >= first - window + 1 { m[I * g.KB + J] = 1 }
                    }
                case let .verticalSlash(vertical, slash):
                    // vertical_and_slash_kernel's budgets: at least 30 columns and 50 diagonals (at most T, by prefix).
                    let e = estimate!
                    let columns = topIndices(e.columns, forcedBelow: 30, count: max(vertical, 30))
                    let diagonals = topIndices(e.diagonals, forcedBelow: 100, count: max(slash, 50))
                    keys = verticalSlashKeys(T: g.T, blockSize: g.bs, columns: columns, diagonals: diagonals)
                    for (I, runs) in keys.enumerated() {
                        for run in runs { for J in (run.lowerBound / g.bs)...((run.upperBound - 1) / g.bs) { m[I * g.KB + J] = 1 } }
                    }
                case let .blockSparse(top):
                    if pooled == nil { pooled = scores.pooled(b, h) }
                    for I in 0..<g.QB { for J in topKRow(pooled!, I, g, top) { m[I * g.KB + J] = 1 } }
                }
                return (m, keys)
            }
            var pattern = patterns[search || patterns.count == 1 ? 0 : h]
            var (best, bestKeys) = mask(pattern)
            if search, let e = estimate {
                var bestRecall = e.recall(best, g)
                for candidate in patterns.dropFirst() {
                    let (m, keys) = mask(candidate), r = e.recall(m, g)
                    if r > bestRecall + 1e-12 || (abs(r - bestRecall) <= 1e-12 && m.reduce(0) { $0 + Int($1) } < best.reduce(0) { $0 + Int($1) }) {
                        (pattern, best, bestRecall, bestKeys) = (candidate, m, r, keys)
                    }
                }
            }
            chosenOut.base[b * g.Hq + h] = pattern
            for (I, runs) in bestKeys.enumerated() { keysOut.base[(b * g.Hq + h) * g.QB + I] = runs }
            for I in 0..<g.QB { for J in 0..<g.KB where best[I * g.KB + J] != 0 { keep(I, J) } }
        }
        let chosen = Array(chosenOut.take().prefix(g.Hq))
        guard exact else {
            return BlockSelection(mask: selection.mask, kept: selection.kept, visible: selection.visible, patterns: chosen, keyLength: g.S)
        }
        // Every row gets keys: a block pattern's head attends its blocks' keys.
        let blockRuns = BlockSparseAttention.keyRuns(selection.mask, S: g.S)
        let keys = keysOut.take().enumerated().map { row, runs in runs ?? blockRuns[row] }
        return BlockSelection(mask: selection.mask, kept: selection.kept, visible: selection.visible, patterns: chosen, keyLength: g.S,
                              keys: keys, pairs: g.pairs(keys))
    }

    /// MInference's vertical-slash keys (`convert_vertical_slash_indexes`, blocks of `blockSize`, 64 there) for T
    /// queries over as many keys: per query block [m0, m1 = m0 + bs) (m1 unclipped), each diagonal offset d < m1
    /// (query position - key; farthest first) gives the key range [max(m1 - d, bs) - bs, max(m1 - d, bs)); a range
    /// starting within bs keys after the current one's end extends it by bs, else a new one starts; the `columns`
    /// before the last range's end are attended too (no diagonal below m1, or none at all: the range [m1, m1 + bs), so
    /// every column below it; the selector always has one, and the kernel, which never gets an empty list, would read
    /// an empty one as offset -1). Runs are clipped to the keys the block's last query can see (the causal mask then
    /// applies per query; MInference's kernel skips it for columns, which lie before the block when a diagonal is below
    /// m1). Returns `[QB]` ascending disjoint runs. O(QB·(V + D)·log(V + D)) for V columns and D diagonals.
    public static func verticalSlashKeys(T: Int, blockSize bs: Int = 64, columns: [Int], diagonals: [Int]) -> [[Range<Int>]] {
        let offsets = diagonals.sorted(by: >), sortedColumns = columns.sorted()
        return (0..<BlockMask.blocks(T, bs)).map { I in
            let (m1, visible) = ((I + 1) * bs, min(T, (I + 1) * bs))
            var ranges: [Range<Int>] = []
            for d in offsets where d < m1 {
                let end = max(m1 - d, bs)
                if let last = ranges.last, end <= last.upperBound + bs {
                    if end > last.upperBound { ranges[ranges.count - 1] = last.lowerBound..<last.upperBound + bs }
                } else {
                    ranges.append(end - bs..<end)
                }
            }
            if ranges.isEmpty { ranges = [m1..<m1 + bs] }
            let lastEnd = ranges.last!.upperBound
            let pieces = (ranges + sortedColumns.filter { $0 >= 0 && $0 < lastEnd }.map { $0..<$0 + 1 })
                .map { $0.clamped(to: 0..<visible) }.filter { !$0.isEmpty }.sorted { $0.lowerBound < $1.lowerBound }
            var runs: [Range<Int>] = []
            for piece in pieces {
                if let last = runs.last, piece.lowerBound <= last.upperBound {
                    runs[runs.count - 1] = last.lowerBound..<max(last.upperBound, piece.upperBound)
                } else {
                    runs.append(piece)
                }
            }
            return runs
        }
    }

    /// The `count` indices of largest `values` (ties: lower index first), the indices below `forcedBelow` first. O(n log n).
    static func topIndices(_ values: [Double], forcedBelow: Int, count: Int) -> [Int] {
        let ranked = values.indices.sorted { a, b in
            let (fa, fb) = (a < forcedBelow, b < forcedBelow)
            if fa != fb { return fa }
            return values[a] > values[b] || (values[a] == values[b] && a < b)
        }
        return Array(ranked.prefix(count))
    }
}

/// A buffer parallel workers write disjoint elements of; `take()` returns it as an array and frees it.
private struct SendableArray<T>: @unchecked Sendable {
    let base: UnsafeMutablePointer<T>
    let count: Int
    init(repeating value: T, count: Int) {
        (base, self.count) = (.allocate(capacity: max(1, count)), count)
        base.initialize(repeating: value, count: count)
    }
    func take() -> [T] {
        defer { base.deinitialize(count: count); base.deallocate() }
        return Array(UnsafeBufferPointer(start: base, count: count))
    }
}

extension BlockSelector {
    /// Shapes and block geometry of one selector call.
    struct Grid: Sendable {
        let B: Int, T: Int, S: Int, Hq: Int, Hkv: Int, D: Int
        let bs: Int, QB: Int, KB: Int
        let scale: Double
        let causal: Bool

        /// Checks q `[B,T,Hq,D]`, k `[B,S,Hkv,D]` (finite), the options (no window) and the block size. O(q + k).
        init(q: Tensor, k: Tensor, blockSize: Int, options: AttentionOptions) throws {
            try self.init(q: q.shape, k: k.shape, blockSize: blockSize, options: options)
            try q.expectFinite("q")
            try k.expectFinite("k")
        }

        /// The shape checks of `init(q:k:blockSize:options:)` alone, for tensors on a device (values not read). O(1).
        init(q: [Int], k: [Int], blockSize: Int, options: AttentionOptions) throws {
            guard blockSize >= 1 else { throw LineaError.invalidArgument(argument: "block size", expected: ">= 1", actual: "\(blockSize)") }
            guard options.window == nil else {
                throw LineaError.invalidArgument(argument: "window", expected: "none (a selector's mask replaces the window)", actual: "\(options.window!)")
            }
            let p = try AttentionProblem(q: q, k: k, v: k, options: options)
            (B, T, S, Hq, Hkv, D) = (p.B, p.T, p.S, p.Hq, p.Hkv, p.D)
            guard T >= 1, S >= 1 else {
                throw LineaError.shapeMismatch(argument: "q, k", expected: "T >= 1 queries and S >= 1 keys to select blocks over", actual: "T = \(T), S = \(S)")
            }
            (bs, QB, KB) = (blockSize, BlockMask.blocks(T, blockSize), BlockMask.blocks(S, blockSize))
            (scale, causal) = (Double(p.scale), p.causal)
            try MemoryBudget.check([.init("selected mask", [B, Hq, QB, KB], elementBytes: 1),
                                    .init("block scores", [Parallel.threadCount, 3, QB, KB], elementBytes: 8)])
        }

        /// Positions (as keys) of query block I's first and last query: `[I·bs, min(T, (I+1)·bs) - 1] + S - T`. O(1).
        func positions(_ I: Int) -> (first: Int, last: Int) {
            let offset = causal ? S - T : 0
            return (I * bs + offset, min(T, (I + 1) * bs) - 1 + offset)
        }

        /// Key blocks holding a pair query block I may see: all when not causal, else those starting at or before its
        /// last query's position. O(1).
        func visibleBlocks(_ I: Int) -> Range<Int> {
            guard causal else { return 0..<KB }
            let last = positions(I).last
            return 0..<(last < 0 ? 0 : min(KB, last / bs + 1))
        }

        /// Causal: the key blocks holding query block I's own positions. O(1).
        func diagonal(_ I: Int) -> [Int] {
            let (first, last) = positions(I)
            guard last >= 0 else { return [] }
            return Array((max(0, first) / bs)...(last / bs))
        }

        /// XAttention's always-kept blocks of row I: the first key block and the diagonal ones (those it can see). O(1).
        func forced(_ I: Int) -> [Int] {
            let d = diagonal(I)
            return d.isEmpty ? [] : (d.first == 0 ? d : [0] + d)
        }

        /// Runs `choose` per (batch, head) in parallel; it marks blocks through `keep(I, J)`. Builds the mask
        /// `[B, Hq, QB, KB]` and counts the kept and the visible blocks. O(mask) plus `choose`.
        func select(_ choose: @Sendable (_ b: Int, _ h: Int, _ keep: (Int, Int) -> Void) -> Void) throws -> BlockSelection {
            let out = SendableArray(repeating: UInt8(0), count: B * Hq * QB * KB)
            let (QB, KB) = (self.QB, self.KB)
            Parallel.forEach(B * Hq) { head in
                let base = out.base + head * QB * KB
                choose(head / Hq, head % Hq) { I, J in base[I * KB + J] = 1 }
            }
            let values = out.take()
            var visible = 0
            for I in 0..<QB { visible += visibleBlocks(I).count }
            let kept = values.reduce(0) { $0 + Int($1) }
            let mask = try BlockMask(shape: [B, Hq, QB, KB], blockRows: bs, blockKeys: bs, values: values)
            return BlockSelection(mask: mask, kept: kept, visible: visible * B * Hq, patterns: [], keyLength: S)
        }

        /// Attended (query, key) pairs of exact key runs `[B·Hq·QB]` (each query's runs cut at its position when
        /// causal) and the pairs visible to all queries of the B·Hq heads. O(rows · (runs + bs · runs past the block's start)).
        func pairs(_ keys: [[Range<Int>]]) -> (attended: Int, visible: Int) {
            var attended = 0, visible = 0
            for (row, runs) in keys.enumerated() {
                let I = row % QB, total = runs.reduce(0) { $0 + $1.count }
                for i in I * bs..<min(T, (I + 1) * bs) {
                    let end = causal ? i + S - T + 1 : S  // keys below `end` are visible to query i
                    var count = total
                    for run in runs.reversed() {
                        guard run.upperBound > end else { break }
                        count -= run.upperBound - max(run.lowerBound, end)
                    }
                    attended += max(0, count)
                    visible += max(0, min(S, end))
                }
            }
            return (attended, visible)
        }

        /// XAttention's block scores of head (b, h), `[QB, KB]`: per query group r of `stride` queries, the softmax of
        /// its antidiagonal scores over the visible key groups (those whose first key is at or before the group's last
        /// query position), summed into the blocks holding the groups. O(T·S·D / stride).
        func antidiagonalBlockScores(q: Tensor, k: Tensor, b: Int, h: Int, stride s: Int) -> [Double] {
            let hk = h / (Hq / Hkv)
            let (R, C) = (BlockMask.blocks(T, s), BlockMask.blocks(S, s))
            var blocks = [Double](repeating: 0, count: QB * KB)
            var row = [Double](repeating: 0, count: C)
            let factor = scale / Double(s)
            q.scalars.withUnsafeBufferPointer { qs in k.scalars.withUnsafeBufferPointer { ks in
                for r in 0..<R {
                    let lastPosition = min(T - 1, r * s + s - 1) + (causal ? S - T : 0)
                    guard lastPosition >= 0 else { continue }
                    let visible = causal ? min(C, lastPosition / s + 1) : C
                    var m = -Double.infinity
                    for c in 0..<visible {
                        var dot: Float = 0
                        // Only the t with i < T and j < S: a stride far beyond T or S must not loop over it.
                        let (first, end) = (max(0, r * s + s - T), min(s, S - c * s))
                        for t in first..<max(first, end) {
                            let (i, j) = (r * s + s - 1 - t, c * s + t)
                            let qp = qs.baseAddress! + ((b * T + i) * Hq + h) * D, kp = ks.baseAddress! + ((b * S + j) * Hkv + hk) * D
                            for d in 0..<D { dot += qp[d] * kp[d] }
                        }
                        row[c] = Double(dot) * factor
                        m = max(m, row[c])
                    }
                    var sum = 0.0
                    for c in 0..<visible {
                        row[c] = Foundation.exp(row[c] - m)
                        sum += row[c]
                    }
                    let I = r * s / bs
                    for c in 0..<visible { blocks[I * KB + c * s / bs] += row[c] / sum }
                }
            } }
            return blocks
        }

        /// `scale · mean(q rows of block I) · mean(k rows of block J)` for head (b, h), `[QB, KB]`. O((T + S)·D + QB·KB·D).
        func pooledBlockScores(q: Tensor, k: Tensor, b: Int, h: Int) -> [Double] {
            let hk = h / (Hq / Hkv)
            func pool(_ x: Tensor, length: Int, heads: Int, head: Int, blocks: Int) -> [Double] {
                var out = [Double](repeating: 0, count: blocks * D)
                for t in 0..<length {
                    let base = ((b * length + t) * heads + head) * D
                    for d in 0..<D { out[t / bs * D + d] += Double(x.scalars[base + d]) }
                }
                for I in 0..<blocks {
                    let n = Double(min(length, (I + 1) * bs) - I * bs)
                    for d in 0..<D { out[I * D + d] /= n }
                }
                return out
            }
            let qm = pool(q, length: T, heads: Hq, head: h, blocks: QB), km = pool(k, length: S, heads: Hkv, head: hk, blocks: KB)
            var scores = [Double](repeating: 0, count: QB * KB)
            for I in 0..<QB {
                for J in 0..<KB {
                    var dot = 0.0
                    for d in 0..<D { dot += qm[I * D + d] * km[J * D + d] }
                    scores[I * KB + J] = scale * dot
                }
            }
            return scores
        }

        /// Exact causal attention of head (b, h)'s last `last` queries (MInference's estimate), summed per key column,
        /// per diagonal (position - key) and per (query block, key block). O(last · S · D) time, O(S) memory.
        func lastQueryAttention(q: Tensor, k: Tensor, b: Int, h: Int, last: Int) -> LastQueries {
            let hk = h / (Hq / Hkv)
            var e = LastQueries(self, last: last)
            var p = [Double](repeating: 0, count: S)
            for r in 0..<e.count {
                let i = T - e.count + r
                let position = i + S - T
                guard position >= 0 else { continue }
                let visible = min(S, position + 1)
                var m = -Double.infinity
                for j in 0..<visible {
                    var dot = 0.0
                    let qb = ((b * T + i) * Hq + h) * D, kb = ((b * S + j) * Hkv + hk) * D
                    for d in 0..<D { dot += Double(q.scalars[qb + d]) * Double(k.scalars[kb + d]) }
                    p[j] = scale * dot
                    m = max(m, scale * dot)
                }
                var sum = 0.0
                for j in 0..<visible {
                    p[j] = Foundation.exp(p[j] - m)
                    sum += p[j]
                }
                let row = (i / bs - e.firstBlock) * KB
                for j in 0..<visible {
                    p[j] /= sum
                    e.columns[j] += p[j]
                    e.diagonals[position - j] += p[j]
                    e.mass[row + j / bs] += p[j]
                }
            }
            return e
        }
    }

    /// The last queries' attention of one head, summed three ways: per key column and per diagonal (position - key),
    /// `[S]` each, and per block, `mass [rows, KB]` for the query blocks `firstBlock ..< firstBlock + rows` that hold
    /// the last queries: all that vertical-slash and the search read, so a device downloads only these.
    struct LastQueries: Sendable {
        /// The queries averaged over, min(last, T) (those at negative positions count, with no attention).
        let count: Int
        /// The query block of the first of them, (T - count) / bs.
        let firstBlock: Int
        var columns: [Double], diagonals: [Double], mass: [Double]

        /// Zeros for `last` queries of grid `g`. O(S + KB).
        init(_ g: Grid, last: Int) {
            count = min(last, g.T)
            firstBlock = (g.T - count) / g.bs
            let rows = (g.T - 1) / g.bs - firstBlock + 1
            (columns, diagonals, mass) = ([Double](repeating: 0, count: g.S), [Double](repeating: 0, count: g.S),
                                          [Double](repeating: 0, count: rows * g.KB))
        }

        /// Query blocks `mass` covers. O(1).
        func rows(_ g: Grid) -> Int { mass.count / g.KB }

        /// The mean over these queries of the attention a block mask `[QB, KB]` keeps. O(rows · KB).
        func recall(_ mask: [UInt8], _ g: Grid) -> Double {
            var total = 0.0
            for r in 0..<rows(g) {
                let I = firstBlock + r
                for J in 0..<g.KB where mask[I * g.KB + J] != 0 { total += mass[r * g.KB + J] }
            }
            return total / Double(max(1, count))
        }
    }

    /// Where a selection's scores come from, per head (b, h): XAttention's antidiagonal block scores and the pooled
    /// block scores (`[QB, KB]` each) and MInference's last-queries sums. The host's computes each head when asked
    /// (in the selection's parallel loop); a device's reads arrays downloaded once. The selection code is the same.
    struct Scorer: Sendable {
        var antidiagonal: @Sendable (_ b: Int, _ h: Int) -> [Double] = { _, _ in [] }
        var pooled: @Sendable (_ b: Int, _ h: Int) -> [Double] = { _, _ in [] }
        var lastQueries: @Sendable (_ b: Int, _ h: Int) -> LastQueries

        /// The host's scores of q and k (Float64 sums but for XAttention's dot products, in Float32 as before). O(1)
        /// here; each call costs its `Grid` method.
        init(q: Tensor, k: Tensor, _ g: Grid, stride: Int = 1, lastQueries last: Int = 64) {
            antidiagonal = { b, h in g.antidiagonalBlockScores(q: q, k: k, b: b, h: h, stride: stride) }
            pooled = { b, h in g.pooledBlockScores(q: q, k: k, b: b, h: h) }
            lastQueries = { b, h in g.lastQueryAttention(q: q, k: k, b: b, h: h, last: last) }
        }

        /// Scores read from arrays: `blocks` `[B, Hq, QB, KB]` (the antidiagonal or pooled scores, as `kind` says),
        /// `pooled` likewise, and the last queries' `columns`, `diagonals` `[B, Hq, S]` and `mass` `[B, Hq, rows, KB]`
        /// (empty when unused). O(1); each call copies one head's slice, O(QB·KB) or O(S).
        init(_ g: Grid, antidiagonal: [Float] = [], pooled: [Float] = [], columns: [Float] = [], diagonals: [Float] = [],
             mass: [Float] = [], lastQueries last: Int = 64) {
            let area = g.QB * g.KB
            let slice: @Sendable ([Float], Int, Int) -> [Double] = { x, head, n in x[head * n..<(head + 1) * n].map(Double.init) }
            self.antidiagonal = { b, h in slice(antidiagonal, b * g.Hq + h, area) }
            self.pooled = { b, h in slice(pooled, b * g.Hq + h, area) }
            self.lastQueries = { b, h in
                var e = LastQueries(g, last: last)
                let head = b * g.Hq + h
                (e.columns, e.diagonals, e.mass) = (slice(columns, head, g.S), slice(diagonals, head, g.S),
                                                    slice(mass, head, e.mass.count))
                return e
            }
        }
    }
}
