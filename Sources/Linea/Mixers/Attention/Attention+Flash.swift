import Foundation

extension Attention {
    /// Flash form: one work item per (batch, head, query tile), keys streamed in tiles through an online softmax.
    /// Extra memory O(queryBlock · keyBlock) per thread; no `T x S` matrix is ever formed. Tiles of the width's
    /// shape (`CPUKernels.queryBlock`, `keyBlock`: 144 x 132 for AVX2, 192 x 132 for AVX-512).
    static func flash(_ p: AttentionProblem, q: Tensor, k: Tensor, v: Tensor) -> AttentionOutput {
        var o = Allocation.zeros(p.B * p.T * p.Hq * p.Dv)
        var lse = [Float](repeating: -.infinity, count: p.B * p.T * p.Hq)
        q.withUnsafeBufferPointer { qb in k.withUnsafeBufferPointer { kb in v.withUnsafeBufferPointer { vb in
            o.withUnsafeMutableBufferPointer { ob in lse.withUnsafeMutableBufferPointer { lb in
                flash(p, AttentionPointers(qb, kb, vb), o: ob.baseAddress!, lse: lb.baseAddress!)
            } }
        } } }
        return AttentionOutput(o: Tensor(uncheckedShape: [p.B, p.T, p.Hq, p.Dv], scalars: o),
                               lse: Tensor(uncheckedShape: [p.B, p.T, p.Hq], scalars: lse))
    }

    /// The flash form on packed Float32 buffers: `o [B,T,Hq,Dv]` and `lse [B,T,Hq]` written whole (the CPU backend
    /// runs it on device tensors' memory, without copies). Same cost as `flash`.
    static func flash(_ p: AttentionProblem, _ ptrs: AttentionPointers, o: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>) {
        let kernels = CPUKernels.current, queryBlock = kernels.queryBlock
        let tiles = (p.T + queryBlock - 1) / queryBlock
        let heads = p.B * p.Hq
        attendTiles(p, kernels, ptrs, o: o, lse: lse, count: heads * tiles) { item in
            // A head's tiles one after another, so the workers share its keys and values in cache; last tiles
            // first: under a causal mask they are the heaviest, so the lightest come last and the load balances.
            let tile = tiles - 1 - item % tiles
            let (b, h) = ((item / tiles) / p.Hq, (item / tiles) % p.Hq)
            let i0 = tile * queryBlock
            return TileItem(b: b, h: h, rows: i0..<min(p.T, i0 + queryBlock), keys: 0..<p.S,
                            row: (b * p.T + i0) * p.Hq + h)
        }
    }

    /// One work item: query `rows` of head `(b, h)` against `keys`; its first output row is `row` of the
    /// `[rows, Dv]` / `[rows]` buffers (output row stride Hq).
    struct TileItem {
        let b: Int, h: Int
        let rows: Range<Int>, keys: Range<Int>
        let row: Int
        /// Block-sparse attention's kept key ranges (ascending, disjoint), attended instead of `keys` when set.
        var keyRuns: [Range<Int>]? = nil
    }

    /// Runs `attendRows` for `count` items in parallel with `kernels`, one scratch per worker, writing into `o` and `lse`.
    static func attendTiles(
        _ p: AttentionProblem, _ kernels: CPUKernels, _ ptrs: AttentionPointers, o: UnsafeMutablePointer<Float>,
        lse: UnsafeMutablePointer<Float>, count: Int, _ item: @Sendable (Int) -> TileItem
    ) {
        let out = SendablePointer(o), lseOut = SendablePointer(lse)
        let scratches = (0..<Parallel.threadCount).map { _ in TileScratch(p, kernels) }
        defer { scratches.forEach { $0.free() } }
        Parallel.forEach(count) { index, worker in
            let t = item(index)
            if let runs = t.keyRuns {
                attendRows(p, ptrs, b: t.b, h: t.h, rows: t.rows, keyRuns: runs, out: out.base + t.row * p.Dv, ldo: p.Hq * p.Dv,
                           lse: lseOut.base + t.row, ldl: p.Hq, scratch: scratches[worker])
                return
            }
            attendRows(p, ptrs, b: t.b, h: t.h, rows: t.rows, keys: t.keys,
                       out: out.base + t.row * p.Dv, ldo: p.Hq * p.Dv,
                       lse: lseOut.base + t.row, ldl: p.Hq, scratch: scratches[worker])
        }
    }

    /// Attends query `rows` of head `(b, h)` to the keys in `keys` that each row may see. Writes the normalized output
    /// rows (stride `ldo`) and their log-sum-exp (stride `ldl`); a row that sees no key gets `o = 0`, `lse = -inf`.
    ///
    /// Scores are formed transposed, `Sᵀ = K·Qᵀ` (keys as rows), so K is read as packed (row-major) and Qᵀ is packed
    /// once per query tile; the online softmax then runs down the columns with every query's max and sum in vector lanes.
    /// Scores carry a log2(e) factor, so only 2^x is needed. The products and the softmax run in `scratch.kernels`
    /// (called once per key tile, so the width's dispatch stays out of the inner loops).
    static func attendRows(
        _ p: AttentionProblem, _ ptrs: AttentionPointers, b: Int, h: Int, rows: Range<Int>, keys: Range<Int>,
        out: UnsafeMutablePointer<Float>, ldo: Int, lse: UnsafeMutablePointer<Float>, ldl: Int, scratch: TileScratch
    ) {
        attendRows(p, ptrs, b: b, h: h, rows: rows, keyRuns: CollectionOfOne(keys), out: out, ldo: ldo, lse: lse, ldl: ldl, scratch: scratch)
    }

    /// `attendRows` over several ascending, disjoint key ranges (block-sparse attention's kept key blocks): one online
    /// softmax runs through all of them, so the cost is that of the keys in `keyRuns` alone.
    static func attendRows<Runs: Collection<Range<Int>>>(
        _ p: AttentionProblem, _ ptrs: AttentionPointers, b: Int, h: Int, rows: Range<Int>, keyRuns: Runs,
        out: UnsafeMutablePointer<Float>, ldo: Int, lse: UnsafeMutablePointer<Float>, ldl: Int, scratch: TileScratch
    ) {
        let m = rows.count, dvPad = scratch.dvPad, lds = scratch.scoreStride, kernels = scratch.kernels
        let mPad = roundUp(m, kernels.rows)
        // Score columns actually used: a decode tile (a few queries) runs its products and softmax on them alone,
        // not on the whole query block (192 columns for one query made decode 2x slower at S = 4096). Rounded up from
        // m, not from mPad (a 64-row block-sparse tile would run 96 columns for its 72 padded rows); P·V reads mPad
        // columns, so those past `cols` are zeroed once here and stay zero (P = 0 for the padded rows).
        let cols = min(lds, roundUp(m, kernels.columns))
        if mPad > cols {
            for r in 0..<kernels.keyBlock { (scratch.scores + r * lds + cols).initialize(repeating: 0, count: mPad - cols) }
        }
        let hk = h / (p.Hq / p.Hkv)
        let log2e: Float = 1.442_695_04, ln2: Float = 0.693_147_18
        let (scores, colMax, colSum, acc) = (scratch.scores, scratch.colMax, scratch.colSum, scratch.output)
        // Qᵀ times scale·log2(e): [D, lds], padded query columns zero.
        let qT = scratch.queries
        qT.initialize(repeating: 0, count: p.D * lds)
        for r in 0..<m {
            let src = ptrs.q + ((b * p.T + rows.lowerBound + r) * p.Hq + h) * p.D
            for d in 0..<p.D { qT[d * lds + r] = src[d] * (p.scale * log2e) }
        }
        acc.initialize(repeating: 0, count: mPad * dvPad)
        colMax.initialize(repeating: -.infinity, count: lds)
        colSum.initialize(repeating: 0, count: lds)
        // Keys any query of the tile may see (ranges grow with the query under a causal mask).
        let first = p.keyRange(query: rows.lowerBound), last = p.keyRange(query: rows.upperBound - 1)
        // One packed range spans every run (packing them one by one would evict each other's rows).
        let span = (keyRuns.first?.lowerBound ?? 0)..<(keyRuns.reduce(0) { max($0, $1.upperBound) })
        let lo = max(span.lowerBound, first.lo), hi = min(span.upperBound, last.hi)
        if lo < hi { scratch.pack(p, ptrs, b: b, hk: hk, keys: lo..<hi) }  // a split-KV part may see none
        // One key tile: Sᵀ = K·Qᵀ, the causal mask where the tile needs it, the online softmax, acc += P·V.
        func attend(_ n: Int, keys tileKeys: UnsafePointer<Float>, values tileValues: UnsafePointer<Float>, needsMask: Bool,
                    key: (Int) -> Int) {
            // The last tile's keys run on to whole row blocks (real keys, the zero rows after S, or earlier gathered
            // keys); their scores are never read.
            let nPad = roundUp(n, kernels.rows)
            // Sᵀ [n, lds] = K_tile · Qᵀ, column blocks outside: Qᵀ [D, lds] exceeds L1, its panels do not.
            kernels.gemm(m: nPad, n: cols, depth: p.D, a: tileKeys, aRowStride: p.D, aDepthStride: 1,
                         b: qT, ldb: lds, c: scores, ldc: lds, accumulate: false, columnBlocksOutside: true)
            // Mask: key j is visible to the queries whose range holds it, a contiguous run of columns.
            if needsMask {
                for r in 0..<n {
                    let (cLo, cHi) = visibleQueries(p, key: key(r), rows: rows)
                    let row = scores + r * lds
                    if cHi <= cLo {
                        row.initialize(repeating: -.infinity, count: m)
                        continue
                    }
                    if cLo > 0 { row.initialize(repeating: -.infinity, count: cLo) }
                    if cHi < m { (row + cHi).initialize(repeating: -.infinity, count: m - cHi) }
                }
            }
            kernels.softmaxColumns(scores: scores, lds: lds, keys: n, columns: cols, colMax: colMax, colSum: colSum,
                                   acc: acc, dvPad: dvPad, accRows: mPad)
            // acc += P·V with P read transposed from Sᵀ; the copied V's padded columns stay zero.
            kernels.gemm(m: mPad, n: dvPad, depth: n, a: scores, aRowStride: 1, aDepthStride: lds,
                         b: tileValues, ldb: dvPad, c: acc, ldc: dvPad, accumulate: true, columnBlocksOutside: false)
        }
        // Several runs (a block-sparse row): their keys are gathered into whole tiles, so the products run on tiles of
        // `keyBlock` keys rather than on one small block each (64-key blocks ran at half of flash's rate).
        let gather = keyRuns.count > 1
        var gathered = 0, gatheredNeedsMask = false
        let (gatherKeys, gatherValues, gatherIndex) = (scratch.gatherKeys, scratch.gatherValues, scratch.gatherIndex)
        for run in keyRuns {
            var j0 = max(run.lowerBound, lo)
            let runEnd = min(run.upperBound, hi)
            while j0 < runEnd {
                // A tile past the first query's keys or before the last query's window needs the mask.
                guard gather else {
                    let n = min(kernels.keyBlock, runEnd - j0)
                    attend(n, keys: scratch.keys + j0 * p.D, values: scratch.values + j0 * dvPad,
                           needsMask: j0 + n > first.hi || j0 < last.lo) { j0 + $0 }
                    j0 += n
                    continue
                }
                let n = min(kernels.keyBlock - gathered, runEnd - j0)
                (gatherKeys + gathered * p.D).update(from: scratch.keys + j0 * p.D, count: n * p.D)
                (gatherValues + gathered * dvPad).update(from: scratch.values + j0 * dvPad, count: n * dvPad)
                for r in 0..<n { gatherIndex[gathered + r] = j0 + r }
                gatheredNeedsMask = gatheredNeedsMask || j0 + n > first.hi || j0 < last.lo
                (gathered, j0) = (gathered + n, j0 + n)
                if gathered == kernels.keyBlock {
                    attend(gathered, keys: gatherKeys, values: gatherValues, needsMask: gatheredNeedsMask) { gatherIndex[$0] }
                    (gathered, gatheredNeedsMask) = (0, false)
                }
            }
        }
        if gathered > 0 { attend(gathered, keys: gatherKeys, values: gatherValues, needsMask: gatheredNeedsMask) { gatherIndex[$0] } }
        for r in 0..<m {
            let dst = out + r * ldo
            if colSum[r] > 0 {
                let inverse = 1 / colSum[r]
                for e in 0..<p.Dv { dst[e] = acc[r * dvPad + e] * inverse }
                lse[r * ldl] = (colMax[r] + log2(colSum[r])) * ln2
            } else {
                dst.initialize(repeating: 0, count: p.Dv)
                lse[r * ldl] = -.infinity
            }
        }
    }

    /// Columns (queries `rows.lowerBound + c`) that may see `key`, as `[cLo, cHi)` within the tile.
    @inline(__always)
    static func visibleQueries(_ p: AttentionProblem, key j: Int, rows: Range<Int>) -> (Int, Int) {
        guard p.causal else { return (0, rows.count) }
        // Query i sits at position i + S - T and sees j when j <= pos and (with a window W) j > pos - W.
        let offset = p.S - p.T
        let firstQuery = j - offset
        let lastQuery = p.window.map { j - offset + $0 - 1 } ?? Int.max - 1
        let cLo = max(0, firstQuery - rows.lowerBound)
        let cHi = min(rows.count, lastQuery - rows.lowerBound + 1)
        return (cLo, max(cLo, cHi))
    }
}

/// Smallest multiple of `step` that is >= `n`.
@inline(__always)
func roundUp(_ n: Int, _ step: Int) -> Int { (n + step - 1) / step * step }

/// Base addresses of q, k, v for parallel work items (read only).
struct AttentionPointers: @unchecked Sendable {
    let q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>

    /// Callers return early for empty problems, so every buffer here has a base address.
    init(_ q: UnsafeBufferPointer<Float>, _ k: UnsafeBufferPointer<Float>, _ v: UnsafeBufferPointer<Float>) {
        (self.q, self.k, self.v) = (q.baseAddress!, k.baseAddress!, v.baseAddress!)
    }
}

/// Per-worker buffers: one query tile's, and the keys and values of the (batch, kv head) the worker last packed.
/// Each worker owns one (`Parallel.forEach` hands out worker indices), so the raw buffers are never shared.
///
/// Keys and values are packed into contiguous rows before the products read them: in place, their rows lie Hkv·D
/// floats apart (2 KiB at 8 heads of 64), so they fall into a few cache sets and evict each other while the products
/// sweep them again and again (measured at T = 16384, H = 8: 12-15% faster on one thread, 22-28% on two). They are
/// packed once per head and worker, not once per query tile: a head's query tiles run one after another, and
/// copying each key tile afresh for every query tile cost 8-15% of flash's time (one AVX-512 thread, T = 4096-16384).
struct TileScratch: @unchecked Sendable {
    let scores: UnsafeMutablePointer<Float>   // Sᵀ [keyBlock + rows, scoreStride] (the ragged tail block writes whole rows)
    let queries: UnsafeMutablePointer<Float>  // Qᵀ [D, scoreStride]
    let keys: UnsafeMutablePointer<Float>     // [S + rows, D]: packed keys of one (b, kv head); rows S... zero
    let values: UnsafeMutablePointer<Float>   // [S, dvPad]: packed values, padded columns zero
    let packed: UnsafeMutablePointer<Int>     // [3]: the packed (b · Hkv + kv head) or -1, and its packed key range
    let output: UnsafeMutablePointer<Float>   // [scoreStride, dvPad]
    let colMax: UnsafeMutablePointer<Float>   // [scoreStride]
    let colSum: UnsafeMutablePointer<Float>   // [scoreStride]
    let gatherKeys: UnsafeMutablePointer<Float>    // [keyBlock + rows, D]: block-sparse keys gathered into one tile
    let gatherValues: UnsafeMutablePointer<Float>  // [keyBlock, dvPad]: their values
    let gatherIndex: UnsafeMutablePointer<Int>     // [keyBlock]: their key positions
    let dvPad: Int
    let scoreStride: Int
    let kernels: CPUKernels

    init(_ p: AttentionProblem, _ kernels: CPUKernels) {
        self.kernels = kernels
        let (rows, columns, keyBlock) = (kernels.rows, kernels.columns, kernels.keyBlock)
        dvPad = roundUp(p.Dv, columns)
        scoreStride = roundUp(roundUp(kernels.queryBlock, rows), columns)
        scores = .allocate(capacity: (keyBlock + rows) * scoreStride)
        queries = .allocate(capacity: p.D * scoreStride)
        keys = .allocate(capacity: (p.S + rows) * p.D)
        (keys + p.S * p.D).initialize(repeating: 0, count: rows * p.D)
        values = .allocate(capacity: p.S * dvPad)
        packed = .allocate(capacity: 3)
        packed.initialize(repeating: -1, count: 3)
        output = .allocate(capacity: scoreStride * dvPad)
        colMax = .allocate(capacity: scoreStride)
        colSum = .allocate(capacity: scoreStride)
        gatherKeys = .allocate(capacity: (keyBlock + rows) * p.D)
        gatherKeys.initialize(repeating: 0, count: (keyBlock + rows) * p.D)  // padding rows stay finite
        gatherValues = .allocate(capacity: keyBlock * dvPad)
        gatherIndex = .allocate(capacity: keyBlock)
    }

    /// Makes `keys` rows `range` of kv head `hk` of batch `b` (and up to `rows - 1` more, which the last tile's row
    /// block reads) packed in `keys` and `values`, copying only rows not packed yet for this head. O(D + Dv) per row.
    func pack(_ p: AttentionProblem, _ ptrs: AttentionPointers, b: Int, hk: Int, keys range: Range<Int>) {
        let head = b * p.Hkv + hk
        let lo = range.lowerBound, hi = min(p.S, range.upperBound + kernels.rows - 1)
        guard lo < hi else { return }
        let (oldLo, oldHi) = (packed[1], packed[2])
        if packed[0] != head || hi < oldLo || lo > oldHi {
            copyRows(p, ptrs, b: b, hk: hk, lo..<hi)
            (packed[0], packed[1], packed[2]) = (head, lo, hi)
            return
        }
        if lo < oldLo { copyRows(p, ptrs, b: b, hk: hk, lo..<oldLo) }
        if hi > oldHi { copyRows(p, ptrs, b: b, hk: hk, oldHi..<hi) }
        (packed[1], packed[2]) = (min(lo, oldLo), max(hi, oldHi))
    }

    private func copyRows(_ p: AttentionProblem, _ ptrs: AttentionPointers, b: Int, hk: Int, _ rows: Range<Int>) {
        for j in rows {
            (keys + j * p.D).update(from: ptrs.k + ((b * p.S + j) * p.Hkv + hk) * p.D, count: p.D)
            let dst = values + j * dvPad
            dst.update(from: ptrs.v + ((b * p.S + j) * p.Hkv + hk) * p.Dv, count: p.Dv)
            (dst + p.Dv).update(repeating: 0, count: dvPad - p.Dv)
        }
    }

    func free() {
        for buffer in [scores, queries, keys, values, output, colMax, colSum, gatherKeys, gatherValues] { buffer.deallocate() }
        packed.deallocate()
        gatherIndex.deallocate()
    }
}
