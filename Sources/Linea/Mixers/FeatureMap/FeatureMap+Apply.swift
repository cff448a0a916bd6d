import Foundation

extension FeatureMap {
    /// phi of every row of `x [B,T,H,K]` in Float32, `[B,T,H,F]`: the projections (Performer's, Hedgehog's, the
    /// hashing's) as GEMMs, then the rows in parallel blocks with the vector exp. `query` picks Performer's
    /// stabilizer when `stabilized` (only then: they cancel with the normalizer alone): the row's own maximum for a
    /// query, the maximum over the (b, h) sequence for keys. `performer` is `performerProjection` in Float32.
    /// O(B·T·H·F·K) with a projection, else O(B·T·H·F).
    func apply(_ x: Tensor, query: Bool, performer: [Float]?, stabilized: Bool) -> Tensor {
        let (B, T, H, K) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let F = featureCount(K: K), rows = B * T * H
        guard rows > 0 else { return Tensor(uncheckedShape: [B, T, H, F], scalars: []) }
        let quarter = Float(1 / pow(Double(K), 0.25))
        let xs = kind == .performer ? x.scalars.map { $0 * quarter } : x.scalars
        // Projections `[rows, n]`: Performer's x' wᵀ (n = m), or x W_h per head (n = F or b).
        var proj: [Float] = []
        var n = 0
        if kind == .performer {
            n = F
            proj = Allocation.zeros(rows * n)
            xs.withUnsafeBufferPointer { a in performer!.withUnsafeBufferPointer { w in proj.withUnsafeMutableBufferPointer { c in
                BLAS.sgemm(transB: true, m: rows, n: n, k: K, a: a.baseAddress!, lda: K, b: w.baseAddress!, ldb: K, c: c.baseAddress!, ldc: n)
            } } }
        } else if let w = weights {
            n = w.shape[2]
            proj = Allocation.zeros(rows * n)
            xs.withUnsafeBufferPointer { a in w.withUnsafeBufferPointer { w in proj.withUnsafeMutableBufferPointer { c in
                for h in 0..<H {  // head h's rows are every H-th row of x
                    BLAS.sgemm(m: B * T, n: n, k: K, a: a.baseAddress! + h * K, lda: H * K, b: w.baseAddress! + h * K * n, ldb: n,
                               c: c.baseAddress! + h * n, ldc: H * n)
                }
            } } }
        }
        // Performer's stabilizer per row: its own maximum (queries) or its (b, h) sequence's (keys).
        var stabilizer = [Float](repeating: 0, count: kind == .performer ? rows : 0)
        if kind == .performer && stabilized {
            proj.withUnsafeBufferPointer { p in for r in 0..<rows { stabilizer[r] = VectorMath.max(p.baseAddress! + r * n, count: n) } }
            if !query {
                for b in 0..<B {
                    for h in 0..<H {
                        var top = -Float.infinity
                        for t in 0..<T { top = max(top, stabilizer[(b * T + t) * H + h]) }
                        for t in 0..<T { stabilizer[(b * T + t) * H + h] = top }
                    }
                }
            }
        }
        var out = Allocation.zeros(rows * F)  // large: huge pages, zeroed in parallel
        let blocks = max(1, min(rows, 8 * Parallel.threadCount))
        let (kind, width) = (self.kind, n)
        if proj.isEmpty { proj = [0] }  // pointers below need an element
        if stabilizer.isEmpty { stabilizer = [0] }
        out.withUnsafeMutableBufferPointer { buffer in xs.withUnsafeBufferPointer { xb in
        proj.withUnsafeBufferPointer { pb in stabilizer.withUnsafeBufferPointer { sb in
            // Raw pointers: arrays captured by the parallel closure cost a retain and a bounds check per element.
            let (outP, xP, pP, sP) = (SendablePointer(buffer.baseAddress!), SendableConstPointer(xb.baseAddress!),
                                      SendableConstPointer(pb.baseAddress!), SendableConstPointer(sb.baseAddress!))
            Parallel.forEach(blocks) { block in
                let (xs, projection, stabilizers) = (xP.base, pP.base, sP.base)
                var scratch = [Float](repeating: 0, count: max(2 * width, K))
                scratch.withUnsafeMutableBufferPointer { tmp in
                    let tmp = tmp.baseAddress!
                    for r in rows * block / blocks..<rows * (block + 1) / blocks {
                        let o = outP.base + r * F
                        let xr = r * K
                        switch kind {
                        case .identity:
                            o.update(from: xs + xr, count: K)
                        case .elu:  // 8 lanes with masks: a branch per element mispredicts half the time on real data
                            var i = 0
                            while i + 8 <= K {
                                let v = UnsafeRawPointer(xs + xr + i).loadUnaligned(as: SIMD8<Float>.self)
                                let positive = v .> 0
                                let e = VectorMath.exp(v.replacing(with: 0, where: positive))
                                UnsafeMutableRawPointer(o + i).storeBytes(of: e.replacing(with: v + 1, where: positive), as: SIMD8<Float>.self)
                                i += 8
                            }
                            while i < K {
                                o[i] = xs[xr + i] > 0 ? xs[xr + i] + 1 : VectorMath.exp(xs[xr + i])
                                i += 1
                            }
                        case .relu:
                            FeatureMap.relu(xs + xr, into: o, K)
                        case .cosformer:
                            let theta = Double.pi / 2 * Double((r / H) % T + 1) / Double(T)
                            FeatureMap.relu(xs + xr, into: tmp, K)
                            FeatureMap.scale(tmp, by: Float(cos(theta)), into: o, K)
                            FeatureMap.scale(tmp, by: Float(sin(theta)), into: o + K, K)
                        case .taylor2:
                            o[0] = 1
                            FeatureMap.scale(xs + xr, by: quarter, into: o + 1, K)
                            let half = Float(0.5.squareRoot())
                            for i in 0..<K { FeatureMap.scale(o + 1, by: o[1 + i] * half, into: o + 1 + K + i * K, K) }
                        case .performer:
                            var half: Float = 0
                            for i in 0..<K { half += xs[xr + i] * xs[xr + i] }
                            FeatureMap.shift(projection + r * width, by: -(half / 2 + stabilizers[r]), into: tmp, width)
                            RecurrenceSIMD.expInto(o, tmp, width)
                            VectorMath.scale(o, count: width, by: 1 / Float(width).squareRoot())
                        case .hashing:
                            for i in 0..<width { o[projection[r * width + i] >= 0 ? i : width + i] = 1 }
                        case .hedgehog:
                            let p = r * width
                            var (top, bottom) = (projection[p], projection[p])
                            for i in 0..<width {
                                top = max(top, projection[p + i])
                                bottom = min(bottom, projection[p + i])
                            }
                            for i in 0..<width {
                                tmp[i] = projection[p + i] - top
                                tmp[width + i] = bottom - projection[p + i]
                            }
                            RecurrenceSIMD.expInto(o, tmp, 2 * width)
                            var (up, down): (Float, Float) = (0, 0)
                            for i in 0..<width {
                                up += o[i]
                                down += o[width + i]
                            }
                            VectorMath.scale(o, count: width, by: 1 / up)
                            VectorMath.scale(o + width, count: width, by: 1 / down)
                        }
                    }
                }
            }
        } } } }
        return Tensor(uncheckedShape: [B, T, H, F], scalars: out)
    }

    /// phi of every row of `x [B,T,H,K]` in Float64 (the reference's map, written element by element), `[B,T,H,F]`
    /// flattened; Performer's projection in Float64, its stabilizers as in `apply`. O(B·T·H·F·K).
    func referenceApply(_ x: Tensor, query: Bool, performer: [Double]?, stabilized: Bool) -> [Double] {
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
                let stabilizer = stabilized ? (query ? dots.max()! : keyMax[b * H + h]) : 0
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

    /// `y[i] = f(x[i])` for `i < n`, 8 lanes at a time (the last partial vector zero-padded). O(n).
    @inline(__always)
    static func lanes(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, _ n: Int, _ f: (SIMD8<Float>) -> SIMD8<Float>) {
        var i = 0
        while i + 8 <= n {
            UnsafeMutableRawPointer(y + i).storeBytes(of: f(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)), as: SIMD8<Float>.self)
            i += 8
        }
        if i < n {
            var v = SIMD8<Float>()
            for j in 0..<(n - i) { v[j] = x[i + j] }
            let r = f(v)
            for j in 0..<(n - i) { y[i + j] = r[j] }
        }
    }

    /// `y[i] = max(x[i], 0)` for `i < n`. O(n).
    @inline(__always)
    static func relu(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, _ n: Int) {
        lanes(x, into: y, n) { $0.replacing(with: 0, where: $0 .< 0) }
    }

    /// `y[i] = a * x[i]` for `i < n`. O(n).
    @inline(__always)
    static func scale(_ x: UnsafePointer<Float>, by a: Float, into y: UnsafeMutablePointer<Float>, _ n: Int) {
        lanes(x, into: y, n) { $0 * a }
    }

    /// `y[i] = x[i] + b` for `i < n`. O(n).
    @inline(__always)
    static func shift(_ x: UnsafePointer<Float>, by b: Float, into y: UnsafeMutablePointer<Float>, _ n: Int) {
        lanes(x, into: y, n) { $0 + b }
    }
}
