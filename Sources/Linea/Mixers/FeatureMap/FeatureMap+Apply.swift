import Foundation

extension FeatureMap {
    /// phi of every row of `x [B,T,H,K]` in Float32, `[B,T,H,F]`: the projections (Performer's, Hedgehog's, the
    /// hashing's) as GEMMs, the rest element-wise. `query` picks Performer's stabilizer: the row's own maximum for a
    /// query, the maximum over the (b, h) sequence for keys (both cancel with the normalizer). `performer` is
    /// `performerProjection` in Float32. O(B·T·H·F·K) with a projection, O(B·T·H·F) without.
    func apply(_ x: Tensor, query: Bool, performer: [Float]?) -> Tensor {
        let (B, T, H, K) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let F = featureCount(K: K), rows = B * T * H
        var out = [Float](repeating: 0, count: rows * F)
        let x = x.scalars
        let quarter = Float(1 / pow(Double(K), 0.25))
        switch kind {
        case .identity:
            out = x
        case .elu:
            for i in 0..<out.count { out[i] = x[i] > 0 ? x[i] + 1 : Foundation.exp(x[i]) }
        case .relu:
            for i in 0..<out.count { out[i] = max(x[i], 0) }
        case .cosformer:
            for r in 0..<rows {
                let t = (r / H) % T
                let theta = Double.pi / 2 * Double(t + 1) / Double(T)
                let (c, s) = (Float(cos(theta)), Float(sin(theta)))
                for i in 0..<K {
                    let v = max(x[r * K + i], 0)
                    out[r * F + i] = v * c
                    out[r * F + K + i] = v * s
                }
            }
        case .taylor2:
            let half = Float(0.5.squareRoot())
            for r in 0..<rows {
                let o = r * F
                out[o] = 1
                for i in 0..<K { out[o + 1 + i] = x[r * K + i] * quarter }
                for i in 0..<K {
                    let a = out[o + 1 + i] * half
                    for j in 0..<K { out[o + 1 + K + i * K + j] = a * out[o + 1 + j] }
                }
            }
        case .performer:
            let m = F
            var proj = [Float](repeating: 0, count: rows * m)
            let scaled = x.map { $0 * quarter }
            scaled.withUnsafeBufferPointer { a in performer!.withUnsafeBufferPointer { w in proj.withUnsafeMutableBufferPointer { c in
                BLAS.sgemm(transB: true, m: rows, n: m, k: K, a: a.baseAddress!, lda: K, b: w.baseAddress!, ldb: K, c: c.baseAddress!, ldc: m)
            } } }
            var stabilizer = [Float](repeating: 0, count: rows)  // per row for queries, per (b, h) for keys
            for r in 0..<rows { stabilizer[r] = proj[r * m..<(r + 1) * m].max()! }
            if !query {
                for b in 0..<B {
                    for h in 0..<H {
                        var top = -Float.infinity
                        for t in 0..<T { top = max(top, stabilizer[(b * T + t) * H + h]) }
                        for t in 0..<T { stabilizer[(b * T + t) * H + h] = top }
                    }
                }
            }
            let norm = 1 / Float(m).squareRoot()
            for r in 0..<rows {
                var half: Float = 0
                for i in 0..<K { half += scaled[r * K + i] * scaled[r * K + i] }
                half /= 2
                for f in 0..<m { out[r * m + f] = Foundation.exp(proj[r * m + f] - half - stabilizer[r]) * norm }
            }
        case .hedgehog, .hashing:
            let w = weights!, n = w.shape[2]
            var proj = [Float](repeating: 0, count: rows * n)
            x.withUnsafeBufferPointer { a in w.withUnsafeBufferPointer { w in proj.withUnsafeMutableBufferPointer { c in
                for h in 0..<H {  // head h's rows are every H-th row of x
                    BLAS.sgemm(m: B * T, n: n, k: K, a: a.baseAddress! + h * K, lda: H * K, b: w.baseAddress! + h * K * n, ldb: n,
                               c: c.baseAddress! + h * n, ldc: H * n)
                }
            } } }
            for r in 0..<rows {
                let p = proj[r * n..<(r + 1) * n], o = r * F
                if kind == .hashing {
                    for i in 0..<n { out[o + (p[p.startIndex + i] >= 0 ? i : n + i)] = 1 }
                } else {
                    let (top, bottom) = (p.max()!, p.min()!)
                    var (up, down): (Float, Float) = (0, 0)
                    for i in 0..<n {
                        out[o + i] = Foundation.exp(p[p.startIndex + i] - top)
                        out[o + n + i] = Foundation.exp(bottom - p[p.startIndex + i])
                        up += out[o + i]
                        down += out[o + n + i]
                    }
                    for i in 0..<n {
                        out[o + i] /= up
                        out[o + n + i] /= down
                    }
                }
            }
        }
        return Tensor(uncheckedShape: [B, T, H, F], scalars: out)
    }

    /// phi of every row of `x [B,T,H,K]` in Float64 (the reference's map, written element by element), `[B,T,H,F]`
    /// flattened; Performer's projection in Float64. O(B·T·H·F·K).
    func referenceApply(_ x: Tensor, query: Bool, performer: [Double]?) -> [Double] {
        let (B, T, H, K) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let F = featureCount(K: K)
        var out = [Double](repeating: 0, count: B * T * H * F)
        let quarter = 1 / pow(Double(K), 0.25)
        var keyMax = [Double](repeating: -.infinity, count: B * H)  // Performer's key stabilizer per (b, h)
        if kind == .performer && !query {
            for b in 0..<B { for t in 0..<T { for h in 0..<H {
                let row = ((b * T + t) * H + h) * K
                for f in 0..<F {
                    var dot = 0.0
                    for i in 0..<K { dot += performer![f * K + i] * Double(x.scalars[row + i]) * quarter }
                    keyMax[b * H + h] = max(keyMax[b * H + h], dot)
                }
            } } }
        }
        for b in 0..<B { for t in 0..<T { for h in 0..<H {
            let r = (b * T + t) * H + h
            let row = (0..<K).map { Double(x.scalars[r * K + $0]) }
            let o = r * F
            switch kind {
            case .identity:
                for i in 0..<K { out[o + i] = row[i] }
            case .elu:
                for i in 0..<K { out[o + i] = row[i] > 0 ? row[i] + 1 : exp(row[i]) }
            case .relu:
                for i in 0..<K { out[o + i] = max(row[i], 0) }
            case .cosformer:
                let theta = Double.pi / 2 * Double(t + 1) / Double(T)
                for i in 0..<K {
                    out[o + i] = max(row[i], 0) * cos(theta)
                    out[o + K + i] = max(row[i], 0) * sin(theta)
                }
            case .taylor2:
                out[o] = 1
                for i in 0..<K {
                    out[o + 1 + i] = row[i] * quarter
                    for j in 0..<K { out[o + 1 + K + i * K + j] = row[i] * row[j] * quarter * quarter / 2.0.squareRoot() }
                }
            case .performer:
                let xs = row.map { $0 * quarter }
                let half = xs.reduce(0) { $0 + $1 * $1 } / 2
                let dots = (0..<F).map { f in (0..<K).reduce(0.0) { $0 + performer![f * K + $1] * xs[$1] } }
                let stabilizer = query ? dots.max()! : keyMax[b * H + h]
                for f in 0..<F { out[o + f] = exp(dots[f] - half - stabilizer) / Double(F).squareRoot() }
            case .hedgehog, .hashing:
                let w = weights!, n = w.shape[2]
                let p = (0..<n).map { j in (0..<K).reduce(0.0) { $0 + row[$1] * Double(w.scalars[(h * K + $1) * n + j]) } }
                if kind == .hashing {
                    for j in 0..<n { out[o + (p[j] >= 0 ? j : n + j)] = 1 }
                } else {
                    let up = p.map { exp($0 - p.max()!) }, down = p.map { exp(p.min()! - $0) }
                    let (su, sd) = (up.reduce(0, +), down.reduce(0, +))
                    for j in 0..<n {
                        out[o + j] = up[j] / su
                        out[o + n + j] = down[j] / sd
                    }
                }
            }
        } } }
        return out
    }
}
