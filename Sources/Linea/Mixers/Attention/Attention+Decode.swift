import Foundation

extension Attention {
    /// One query per (batch, head) (a decode step, T = 1) on packed Float32 buffers: for each (batch, kv head) the
    /// scores of its Hq/Hkv query heads against the visible keys, a softmax, the weighted sum of the values. The flash
    /// form pads the single query to a whole tile of columns (32 with AVX-512), so it did 32 times the work here
    /// (llama 130M f32 decode after 512 tokens measured 101-121 -> 145-149 tokens/s). Writes `o [B,1,Hq,Dv]` and `lse [B,1,Hq]` whole.
    /// O(B·Hq·S·(D + Dv)), parallel over B·Hkv.
    static func decodeOne(_ p: AttentionProblem, _ ptrs: AttentionPointers, o: UnsafeMutablePointer<Float>,
                          lse: UnsafeMutablePointer<Float>) {
        precondition(p.T == 1, "decodeOne takes one query per head")
        let out = SendablePointer(o), lseOut = SendablePointer(lse)
        // The query sits at position S - 1: it sees every key, or the last W with a window (a window is causal).
        let first = p.window.map { max(0, p.S - $0) } ?? 0
        let keys = p.S - first, group = p.Hq / p.Hkv
        Parallel.forEach(p.B * p.Hkv) { item, _ in
            let (b, hk) = item.quotientAndRemainder(dividingBy: p.Hkv)
            withUnsafeTemporaryAllocation(of: Float.self, capacity: max(keys, 1)) { scores in
                let s = scores.baseAddress!
                for g in 0..<group {
                    let h = hk * group + g
                    let q = ptrs.q + (b * p.Hq + h) * p.D
                    let row = out.base + (b * p.Hq + h) * p.Dv
                    row.initialize(repeating: 0, count: p.Dv)
                    guard keys > 0 else {
                        lseOut.base[b * p.Hq + h] = -.infinity
                        continue
                    }
                    var high = -Float.infinity
                    for j in 0..<keys {
                        let k = ptrs.k + ((b * p.S + first + j) * p.Hkv + hk) * p.D
                        s[j] = p.scale * CPUOps.dot(q, k, count: p.D)
                        high = max(high, s[j])
                    }
                    var sum: Float = 0
                    var j = 0
                    while j + 8 <= keys {
                        let e = VectorMath.exp(UnsafeRawPointer(s + j).loadUnaligned(as: SIMD8<Float>.self) - high)
                        UnsafeMutableRawPointer(s + j).storeBytes(of: e, as: SIMD8<Float>.self)
                        sum += e.sum()
                        j += 8
                    }
                    while j < keys {
                        s[j] = VectorMath.exp(s[j] - high)
                        sum += s[j]
                        j += 1
                    }
                    for j in 0..<keys {
                        addScaled(row, ptrs.v + ((b * p.S + first + j) * p.Hkv + hk) * p.Dv, s[j] / sum, count: p.Dv)
                    }
                    lseOut.base[b * p.Hq + h] = high + log(sum)
                }
            }
        }
    }

    /// `y[i] += a · x[i]` for `i < count`, 16 lanes at a time. O(count).
    @inline(__always)
    static func addScaled(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ a: Float, count: Int) {
        var i = 0
        while i + 16 <= count {
            var acc = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD16<Float>.self)
            acc.addProduct(SIMD16(repeating: a), UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self))
            UnsafeMutableRawPointer(y + i).storeBytes(of: acc, as: SIMD16<Float>.self)
            i += 16
        }
        while i < count {
            y[i] += a * x[i]
            i += 1
        }
    }
}
