import Foundation

extension Attention {
    /// Query rows per tile (GEMM M dimension).
    static let queryBlock = 128
    /// Keys per tile (GEMM N dimension of QKᵀ, K dimension of PV).
    static let keyBlock = 256

    /// Flash form: one work item per (batch, head, query tile), keys streamed in tiles through an online softmax.
    /// Extra memory O(queryBlock · keyBlock) per thread; no `T x S` matrix is ever formed.
    static func flash(_ p: AttentionProblem, q: Tensor, k: Tensor, v: Tensor) -> AttentionOutput {
        var o = [Float](repeating: 0, count: p.B * p.T * p.Hq * p.Dv)
        var lse = [Float](repeating: -.infinity, count: p.B * p.T * p.Hq)
        let tiles = (p.T + queryBlock - 1) / queryBlock
        let heads = p.B * p.Hq
        BLAS.setThreads(1)
        q.withUnsafeBufferPointer { qb in k.withUnsafeBufferPointer { kb in v.withUnsafeBufferPointer { vb in
            o.withUnsafeMutableBufferPointer { ob in lse.withUnsafeMutableBufferPointer { lb in
                let ptrs = AttentionPointers(qb, kb, vb)
                let out = SendablePointer(ob.baseAddress!), lseOut = SendablePointer(lb.baseAddress!)
                Parallel.forEach(heads * tiles) { item in
                    // Last tiles first: under a causal mask they are the heaviest, so the load balances.
                    let tile = tiles - 1 - item / heads
                    let (b, h) = ((item % heads) / p.Hq, item % p.Hq)
                    let i0 = tile * queryBlock, i1 = min(p.T, i0 + queryBlock)
                    let scratch = TileScratch()
                    defer { scratch.free() }
                    attendRows(p, ptrs, b: b, h: h, rows: i0..<i1, keys: 0..<p.S,
                               out: out.base + ((b * p.T + i0) * p.Hq + h) * p.Dv, ldo: p.Hq * p.Dv,
                               lse: lseOut.base + (b * p.T + i0) * p.Hq + h, ldl: p.Hq, scratch: scratch)
                }
            } }
        } } }
        return AttentionOutput(o: Tensor(uncheckedShape: [p.B, p.T, p.Hq, p.Dv], scalars: o),
                               lse: Tensor(uncheckedShape: [p.B, p.T, p.Hq], scalars: lse))
    }

    /// Attends query `rows` of head `(b, h)` to the keys in `keys` that each row may see. Writes the normalized output
    /// rows (stride `ldo`) and their log-sum-exp (stride `ldl`); a row that sees no key gets `o = 0`, `lse = -inf`.
    /// Scores come from one GEMM per key tile, then an online softmax rescales the running output, then a second GEMM.
    static func attendRows(
        _ p: AttentionProblem, _ ptrs: AttentionPointers, b: Int, h: Int, rows: Range<Int>, keys: Range<Int>,
        out: UnsafeMutablePointer<Float>, ldo: Int, lse: UnsafeMutablePointer<Float>, ldl: Int, scratch: TileScratch
    ) {
        let m = rows.count, bc = keyBlock
        let hk = h / (p.Hq / p.Hkv)
        let (scores, rowMax, rowSum) = (scratch.scores, scratch.rowMax, scratch.rowSum)
        for r in 0..<m {
            (out + r * ldo).initialize(repeating: 0, count: p.Dv)
            rowMax[r] = -.infinity
            rowSum[r] = 0
        }
        // Keys any row of the tile may see (ranges grow with the row under a causal mask).
        let lo = max(keys.lowerBound, p.keyRange(query: rows.lowerBound).lo)
        let hi = min(keys.upperBound, p.keyRange(query: rows.upperBound - 1).hi)
        let qRows = ptrs.q + ((b * p.T + rows.lowerBound) * p.Hq + h) * p.D
        var j0 = lo
        while j0 < hi {
            let n = min(bc, hi - j0)
            BLAS.sgemm(transB: true, m: m, n: n, k: p.D, alpha: p.scale,
                       a: qRows, lda: p.Hq * p.D,
                       b: ptrs.k + ((b * p.S + j0) * p.Hkv + hk) * p.D, ldb: p.Hkv * p.D,
                       c: scores, ldc: bc)
            for r in 0..<m {
                let row = scores + r * bc
                let visible = p.keyRange(query: rows.lowerBound + r)
                let cLo = max(0, max(visible.lo, keys.lowerBound) - j0)
                let cHi = min(n, min(visible.hi, keys.upperBound) - j0)
                if cHi <= cLo {
                    row.initialize(repeating: 0, count: n)  // this row sees nothing in the tile
                    continue
                }
                if cLo > 0 { row.initialize(repeating: -.infinity, count: cLo) }
                if cHi < n { (row + cHi).initialize(repeating: -.infinity, count: n - cHi) }
                let newMax = Swift.max(rowMax[r], VectorMath.max(row + cLo, count: cHi - cLo))
                let tileSum = VectorMath.expShiftedInPlace(row, count: n, shift: newMax)
                if rowMax[r] != newMax, rowSum[r] > 0 {
                    let correction = VectorMath.exp(rowMax[r] - newMax)
                    VectorMath.scale(out + r * ldo, count: p.Dv, by: correction)
                    rowSum[r] *= correction
                }
                rowSum[r] += tileSum
                rowMax[r] = newMax
            }
            BLAS.sgemm(m: m, n: p.Dv, k: n,
                       a: scores, lda: bc,
                       b: ptrs.v + ((b * p.S + j0) * p.Hkv + hk) * p.Dv, ldb: p.Hkv * p.Dv,
                       beta: 1, c: out, ldc: ldo)
            j0 += n
        }
        for r in 0..<m {
            if rowSum[r] > 0 {
                VectorMath.scale(out + r * ldo, count: p.Dv, by: 1 / rowSum[r])
                lse[r * ldl] = rowMax[r] + log(rowSum[r])
            } else {
                lse[r * ldl] = -.infinity
            }
        }
    }
}

/// Base addresses of q, k, v for parallel work items (read only).
struct AttentionPointers: @unchecked Sendable {
    let q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>

    /// Callers return early for empty problems, so every buffer here has a base address.
    init(_ q: UnsafeBufferPointer<Float>, _ k: UnsafeBufferPointer<Float>, _ v: UnsafeBufferPointer<Float>) {
        self.q = q.baseAddress!
        self.k = k.baseAddress!
        self.v = v.baseAddress!
    }
}

/// Per-work-item buffers of one tile: scores `[queryBlock, keyBlock]`, running row max and row sum.
struct TileScratch {
    let scores: UnsafeMutablePointer<Float>
    let rowMax: UnsafeMutablePointer<Float>
    let rowSum: UnsafeMutablePointer<Float>

    init() {
        scores = .allocate(capacity: Attention.queryBlock * Attention.keyBlock)
        rowMax = .allocate(capacity: Attention.queryBlock)
        rowSum = .allocate(capacity: Attention.queryBlock)
    }

    func free() {
        scores.deallocate()
        rowMax.deallocate()
        rowSum.deallocate()
    }
}
