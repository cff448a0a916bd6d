import Foundation

extension Attention {
    /// The partitions split-KV runs: `requested` up to one per 16 keys (smaller partitions only multiply the
    /// partial outputs and the per-item setup: `split_kv:100000` would ask for gigabytes and minutes), or (nil)
    /// enough to give every thread two items, at most one per key tile. O(1).
    static func splitKVPartitions(_ p: AttentionProblem, requested: Int?, kernels: CPUKernels = .current) -> Int {
        let (queryBlock, keyBlock) = (kernels.queryBlock, kernels.keyBlock)
        let tiles = (p.T + queryBlock - 1) / queryBlock
        let heads = p.B * p.Hq
        let maxUseful = max(1, (p.S + keyBlock - 1) / keyBlock)
        let automatic = (2 * Parallel.threadCount + heads * tiles - 1) / max(1, heads * tiles)
        return max(1, min(requested ?? automatic, requested == nil ? maxUseful : (p.S + 15) / 16))
    }

    /// Split-KV form for decode: each (batch, head, query tile, key partition) is an independent work item writing a
    /// partial normalized output and lse; a merge weights the partials by `exp(lse_p - lse)`.
    /// Extra memory O(partitions · B · T · Hq · Dv): meant for few queries against a long KV.
    static func splitKV(_ p: AttentionProblem, q: Tensor, k: Tensor, v: Tensor, partitions requested: Int?) -> AttentionOutput {
        let kernels = CPUKernels.current, queryBlock = kernels.queryBlock
        let tiles = (p.T + queryBlock - 1) / queryBlock
        let heads = p.B * p.Hq
        let parts = splitKVPartitions(p, requested: requested, kernels: kernels)
        let partLength = (p.S + parts - 1) / max(1, parts)
        let rowCount = p.B * p.T * p.Hq
        var partialO = [Float](repeating: 0, count: parts * rowCount * p.Dv)
        var partialLSE = [Float](repeating: -.infinity, count: parts * rowCount)
        q.withUnsafeBufferPointer { qb in k.withUnsafeBufferPointer { kb in v.withUnsafeBufferPointer { vb in
            partialO.withUnsafeMutableBufferPointer { ob in partialLSE.withUnsafeMutableBufferPointer { lb in
                attendTiles(p, kernels, AttentionPointers(qb, kb, vb), o: ob.baseAddress!, lse: lb.baseAddress!,
                            count: parts * heads * tiles) { item in
                    let part = item % parts, rest = item / parts
                    let tile = rest / heads
                    let (b, h) = ((rest % heads) / p.Hq, rest % p.Hq)
                    let i0 = tile * queryBlock
                    return TileItem(b: b, h: h, rows: i0..<min(p.T, i0 + queryBlock),
                                    keys: min(p.S, part * partLength)..<min(p.S, (part + 1) * partLength),
                                    row: part * rowCount + (b * p.T + i0) * p.Hq + h)
                }
            } }
        } } }
        // Merge: lse = log Σ_p exp(lse_p), o = Σ_p exp(lse_p - lse) o_p.
        var o = [Float](repeating: 0, count: rowCount * p.Dv)
        var lse = [Float](repeating: -.infinity, count: rowCount)
        for row in 0..<rowCount {
            var top = -Float.infinity
            for part in 0..<parts { top = max(top, partialLSE[part * rowCount + row]) }
            guard top > -.infinity else { continue }
            var total: Float = 0
            for part in 0..<parts {
                let weight = VectorMath.exp(partialLSE[part * rowCount + row] - top)
                guard weight > 0 else { continue }
                total += weight
                let base = (part * rowCount + row) * p.Dv
                for e in 0..<p.Dv { o[row * p.Dv + e] += weight * partialO[base + e] }
            }
            for e in 0..<p.Dv { o[row * p.Dv + e] /= total }
            lse[row] = top + log(total)
        }
        return AttentionOutput(o: Tensor(uncheckedShape: [p.B, p.T, p.Hq, p.Dv], scalars: o),
                               lse: Tensor(uncheckedShape: [p.B, p.T, p.Hq], scalars: lse))
    }
}
