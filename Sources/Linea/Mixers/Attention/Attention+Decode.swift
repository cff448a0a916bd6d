import CLineaCPU
import Foundation

extension Attention {
    /// One query per (batch, head) (a decode step, T = 1) on packed Float32 buffers: for each (batch, kv head) the
    /// scores of its Hq/Hkv query heads against the visible keys, a softmax, the weighted sum of the values. The flash
    /// form pads the single query to a whole tile of columns (32 with AVX-512), so it did 32 times the work here
    /// (llama 130M f32 decode after 512 tokens measured 101-121 -> 145-149 tokens/s). Writes `o [B,1,Hq,Dv]` and `lse [B,1,Hq]` whole.
    /// O(B·Hq·S·(D + Dv)), parallel over B·Hkv when the cache is long enough to pay for it.
    static func decodeOne(_ p: AttentionProblem, _ ptrs: AttentionPointers, o: UnsafeMutablePointer<Float>,
                          lse: UnsafeMutablePointer<Float>) {
        precondition(p.T == 1, "decodeOne takes one query per head")
        let out = SendablePointer(o), lseOut = SendablePointer(lse)
        // The query sits at position S - 1: it sees every key, or the last W with a window (a window is causal).
        let first = p.window.map { max(0, p.S - $0) } ?? 0
        let keys = p.S - first, group = p.Hq / p.Hkv
        // The query heads of one key/value head go together: each key and value row is read once for all of them
        // (with grouped heads the cache is the bulk of a long decode's attention traffic). Per head the sums run in
        // the same order as one head alone.
        let kvHead: @Sendable (Int, Int) -> Void = { item, _ in
            let (b, hk) = item.quotientAndRemainder(dividingBy: p.Hkv)
            let heads = (b * p.Hq + hk * group)..<(b * p.Hq + (hk + 1) * group)
            for h in heads { (out.base + h * p.Dv).initialize(repeating: 0, count: p.Dv) }
            guard keys > 0 else {
                for h in heads { lseOut.base[h] = -.infinity }
                return
            }
            withUnsafeTemporaryAllocation(of: Float.self, capacity: keys * group + 2 * group) { buffer in
                let s = buffer.baseAddress!, high = s + keys * group, sum = high + group  // s[g * keys + j]
                high.initialize(repeating: -.infinity, count: group)
                sum.initialize(repeating: 0, count: group)
                // Between two tokens the whole model streams through the caches, so the head's rows come from memory:
                // D floats each, strided by every head's row, a pattern the hardware prefetcher dropped at each 4 KiB
                // page, so the loads waited on memory (qwen3_5_text 130M, 516 keys, 3 kv heads of 64: 42% of this function's
                // samples on one value load). Key rows are asked for 8 ahead and each value row with its key, so the
                // value pass finds them in L2.
                let keyRow = p.Hkv * p.D  // floats from one key row of this head to the next
                for j in 0..<keys {
                    let k = ptrs.k + ((b * p.S + first + j) * p.Hkv + hk) * p.D
                    if j + 8 < keys { linea_prefetch(k + 8 * keyRow, 4 * p.D) }
                    linea_prefetch(ptrs.v + ((b * p.S + first + j) * p.Hkv + hk) * p.Dv, 4 * p.Dv)
                    for g in 0..<group {
                        let score = p.scale * CPUOps.dot(ptrs.q + (heads.lowerBound + g) * p.D, k, count: p.D)
                        s[g * keys + j] = score
                        high[g] = max(high[g], score)
                    }
                }
                for g in 0..<group {
                    let row = s + g * keys
                    var j = 0
                    while j + 8 <= keys {
                        let e = VectorMath.exp(UnsafeRawPointer(row + j).loadUnaligned(as: SIMD8<Float>.self) - high[g])
                        UnsafeMutableRawPointer(row + j).storeBytes(of: e, as: SIMD8<Float>.self)
                        sum[g] += e.sum()
                        j += 8
                    }
                    while j < keys {
                        row[j] = VectorMath.exp(row[j] - high[g])
                        sum[g] += row[j]
                        j += 1
                    }
                }
                for j in 0..<keys {
                    let v = ptrs.v + ((b * p.S + first + j) * p.Hkv + hk) * p.Dv
                    for g in 0..<group { addScaled(out.base + (heads.lowerBound + g) * p.Dv, v, s[g * keys + j] / sum[g], count: p.Dv) }
                }
                for g in 0..<group { lseOut.base[heads.lowerBound + g] = high[g] + log(sum[g]) }
            }
        }
        // A short cache is a few microseconds of work: handing half of it to a helper thread cost more (llama 130M f32,
        // 45 keys on the 2-core Zen 3 host: 17 us a call on one thread, 42 us on two).
        if p.B * p.Hq * keys * (p.D + p.Dv) < 4 * CPUOps.elementsPerItem {
            for item in 0..<(p.B * p.Hkv) { kvHead(item, 0) }
        } else {
            Parallel.forEach(p.B * p.Hkv, kvHead)
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
