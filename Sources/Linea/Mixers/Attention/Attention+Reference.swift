import Foundation

extension Attention {
    /// The oracle: per (batch, head), materializes the `T x S` scaled scores in Float64, masks, softmaxes, multiplies by v.
    /// Throws `LineaError.tooLarge` when one head's score matrix would exceed `referenceLimitBytes`.
    static func reference(_ p: AttentionProblem, q: Tensor, k: Tensor, v: Tensor) throws -> AttentionOutput {
        let needed = Double(p.T) * Double(p.S) * 8  // Float64: T·S may overflow Int
        guard needed <= Double(referenceLimitBytes) else {
            throw LineaError.tooLarge(what: "reference attention's T x S score matrix (T = \(p.T), S = \(p.S))",
                                      limitBytes: referenceLimitBytes, neededBytes: Int(min(needed, 0x1p62)))
        }
        var o = [Float](repeating: 0, count: p.B * p.T * p.Hq * p.Dv)
        var lse = [Float](repeating: -.infinity, count: p.B * p.T * p.Hq)
        var scores = [Double](repeating: 0, count: p.T * p.S)
        let group = p.Hq / p.Hkv
        for b in 0..<p.B {
            for h in 0..<p.Hq {
                let hk = h / group
                for i in 0..<p.T {
                    let qBase = ((b * p.T + i) * p.Hq + h) * p.D
                    for j in 0..<p.S {
                        let kBase = ((b * p.S + j) * p.Hkv + hk) * p.D
                        var dot = 0.0
                        for d in 0..<p.D { dot += Double(q.scalars[qBase + d]) * Double(k.scalars[kBase + d]) }
                        scores[i * p.S + j] = dot * Double(p.scale)
                    }
                }
                for i in 0..<p.T {
                    let (lo, hi) = p.keyRange(query: i)
                    guard hi > lo else { continue }  // no visible key: o stays 0, lse stays -inf
                    var m = -Double.infinity
                    for j in lo..<hi { m = max(m, scores[i * p.S + j]) }
                    var sum = 0.0
                    for j in lo..<hi {
                        let w = Foundation.exp(scores[i * p.S + j] - m)
                        scores[i * p.S + j] = w  // the row now holds unnormalized weights
                        sum += w
                    }
                    let oBase = ((b * p.T + i) * p.Hq + h) * p.Dv
                    for e in 0..<p.Dv {
                        var acc = 0.0
                        for j in lo..<hi {
                            acc += scores[i * p.S + j] * Double(v.scalars[((b * p.S + j) * p.Hkv + hk) * p.Dv + e])
                        }
                        o[oBase + e] = Float(acc / sum)
                    }
                    lse[(b * p.T + i) * p.Hq + h] = Float(m + Foundation.log(sum))
                }
            }
        }
        return AttentionOutput(o: Tensor(uncheckedShape: [p.B, p.T, p.Hq, p.Dv], scalars: o),
                               lse: Tensor(uncheckedShape: [p.B, p.T, p.Hq], scalars: lse))
    }
}
