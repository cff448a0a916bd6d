import Foundation

extension NeighborhoodAttention {
    /// The oracle: for every query, every key of the grid through the mask predicate, then an exact softmax in Float64.
    /// The predicate is written as NATTEN's Flex Attention mask states it (flex.py `get_na_flex_mask`: a clamped window
    /// center, w0/w1 distances), apart from the fused form's start/end formulas (the reference kernel's), so the two
    /// forms check each other's reading of NATTEN. O(B·Hq·N²) predicate tests plus O(B·Hq·N·keys·(D + Dv)).
    static func reference(_ p: NeighborhoodProblem, q: Tensor, k: Tensor, v: Tensor) -> AttentionOutput {
        let N = p.N, group = p.Hq / p.Hkv
        var o = [Float](repeating: 0, count: p.B * N * p.Hq * p.Dv)
        var lse = [Float](repeating: -.infinity, count: p.B * N * p.Hq)
        // Per-token coordinates on the three (padded) axes.
        let coords: [[Int]] = (0..<N).map { t in
            [t / (p.axes[1].length * p.axes[2].length), (t / p.axes[2].length) % p.axes[1].length, t % p.axes[2].length]
        }
        var scores = [Double](repeating: 0, count: N)
        var acc = [Double](repeating: 0, count: p.Dv)
        for i in 0..<N {
            let visible = (0..<N).filter { j in (0..<3).allSatisfy { a in sees(p.axes[a], query: coords[i][a], key: coords[j][a]) } }
            for b in 0..<p.B {
                for h in 0..<p.Hq {
                    let hk = h / group
                    let qBase = ((b * N + i) * p.Hq + h) * p.D
                    var m = -Double.infinity
                    for j in visible {
                        let kBase = ((b * N + j) * p.Hkv + hk) * p.D
                        var dot = 0.0
                        for d in 0..<p.D { dot += Double(q.scalars[qBase + d]) * Double(k.scalars[kBase + d]) }
                        scores[j] = dot * Double(p.scale)
                        m = max(m, scores[j])
                    }
                    guard m > -.infinity else { continue }  // every query sees itself; kept for safety
                    var sum = 0.0
                    for e in 0..<p.Dv { acc[e] = 0 }
                    for j in visible {
                        let w = Foundation.exp(scores[j] - m)
                        sum += w
                        let vBase = ((b * N + j) * p.Hkv + hk) * p.Dv
                        for e in 0..<p.Dv { acc[e] += w * Double(v.scalars[vBase + e]) }
                    }
                    let oBase = ((b * N + i) * p.Hq + h) * p.Dv
                    for e in 0..<p.Dv { o[oBase + e] = Float(acc[e] / sum) }
                    lse[(b * N + i) * p.Hq + h] = Float(m + Foundation.log(sum))
                }
            }
        }
        let heads = [p.B] + p.spatial + [p.Hq]
        return AttentionOutput(o: Tensor(uncheckedShape: heads + [p.Dv], scalars: o), lse: Tensor(uncheckedShape: heads, scalars: lse))
    }

    /// Whether the query at coordinate `x` sees the key at `y` along `axis`, as flex.py's `single_dim_tiling_mask`. O(1).
    static func sees(_ axis: NeighborhoodAxis, query x: Int, key y: Int) -> Bool {
        let d = axis.dilation, s = axis.stride, k = axis.kernel
        guard x % d == y % d else { return false }  // keys only from the query's dilation group
        let (xi, yi, n) = (x / d, y / d, axis.groupLength(x % d))
        if axis.causal {
            let leader = min(xi / s * s + s - 1, n - 1)  // the last query of the stride group
            return xi - yi >= 0 && leader - yi < k
        }
        let leader = min(xi / s * s + s / 2, n - 1)  // the middle query of the stride group (right-hand for even s)
        let left = k / 2, right = k / 2 + (k % 2 - 1)
        let center = min(max(leader, left), n - 1 - right)
        let (w0, w1) = (center - yi, yi - center)
        return (0 <= w0 && w0 <= left) || (0 <= w1 && w1 <= right)
    }
}
