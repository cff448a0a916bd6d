import Foundation

/// The Hyena operator of order N (Poli et al. 2023, Definition 3.1) with given filters: the projections
/// `[B, (N+1)·D, L]` (the input projection and short convolution already applied, channel-major as safari's
/// `HyenaOperator` holds them) split along channels into `v` (channels 0..<D) and gates `x_1 ... x_N` (channels
/// n·D..<(n+1)·D), then `z_1 = v`, `z_{n+1} = x_n ⊙ (h_n * z_n + bias_n ⊙ z_n)`, `y = z_{N+1} [B, D, L]`, where
/// `h_n * ·` is the causal `LongConv` with `filters [N, D, Lk]` (row n-1 is h_n) and the optional `bias [N, D]` its
/// skip (safari's filter bias).
public enum Hyena {
    /// Order N, width D, batch B and length L of a call; throws naming the first tensor that does not fit. O(1).
    public static func shape(projections: [Int], filters: [Int], bias: [Int]?) throws -> (order: Int, width: Int, batch: Int, length: Int) {
        guard filters.count == 3, filters.allSatisfy({ $0 >= 1 }) else {
            throw LineaError.shapeMismatch(argument: "filters", expected: "[N, D, Lk] with N, D, Lk >= 1", actual: "\(filters)")
        }
        let (N, D) = (filters[0], filters[1])
        guard projections.count == 3, projections[0] >= 1, projections[2] >= 1, projections[1] == (N + 1) * D else {
            throw LineaError.shapeMismatch(argument: "projections", expected: "[B, \((N + 1) * D), L] ((N + 1)·D channels: v, x_1...x_\(N)) with B, L >= 1",
                                           actual: "\(projections)")
        }
        if let bias, bias != [N, D] { throw LineaError.shapeMismatch(argument: "bias", expected: "[\(N), \(D)]", actual: "\(bias)") }
        return (N, D, projections[0], projections[2])
    }

    /// The operator on host tensors: `form` `direct` keeps every order in Float64 (the reference, O(N·B·D·L·min(L, Lk)));
    /// `fft` runs each order's convolution by FFT in f32 and gates in f32 (O(N·B·D·L log L)). Returns `y [B, D, L]`.
    public static func forward(projections: Tensor, filters: Tensor, bias: Tensor? = nil, form: LongConvForm = .fft) throws -> Tensor {
        let (N, D, B, L) = try shape(projections: projections.shape, filters: filters.shape, bias: bias?.shape)
        for (name, t) in [("projections", projections), ("filters", filters), ("bias", bias)] { try t?.expectFinite(name) }
        let Lk = filters.shape[2]
        let conv = LongConv.Shape(batch: B, channels: D, length: L, filterLength: Lk)
        try MemoryBudget.check([.init("z, y", [2, B, D, L], elementBytes: form == .direct ? 8 : 4)] + (form == .fft ? LongConv.fftScratch(conv) : []))
        let p = projections.scalars
        // Channel d of chunk c (0: v, n: x_n) of batch b starts at ((b·(N+1) + c)·D + d)·L.
        func chunk(_ c: Int, _ b: Int) -> Int { (b * (N + 1) + c) * D * L }
        if form == .direct {
            var z = [Double](repeating: 0, count: B * D * L), next = z
            for b in 0..<B { for i in 0..<(D * L) { z[b * D * L + i] = Double(p[chunk(0, b) + i]) } }
            for n in 1...N {
                let f = filters.scalars[((n - 1) * D * Lk)...], skip = bias?.scalars[((n - 1) * D)...]
                for b in 0..<B {
                    for d in 0..<D {
                        let row = (b * D + d) * L, k = f.startIndex + d * Lk, gate = chunk(n, b) + d * L
                        let s = Double(skip.map { $0[$0.startIndex + d] } ?? 0)
                        for t in 0..<L {
                            var sum = s * z[row + t]
                            for j in 0...min(t, conv.taps - 1) { sum += Double(f[k + j]) * z[row + t - j] }
                            next[row + t] = Double(p[gate + t]) * sum
                        }
                    }
                }
                swap(&z, &next)
            }
            return try Tensor(shape: [B, D, L], scalars: z.map { Float($0) })
        }
        var z = [Float](repeating: 0, count: B * D * L), next = z
        for b in 0..<B { for i in 0..<(D * L) { z[b * D * L + i] = p[chunk(0, b) + i] } }
        for n in 1...N {
            try filters.withUnsafeBufferPointer { f in
                let skip = bias.map { Array($0.scalars[((n - 1) * D)..<(n * D)]) }
                try z.withUnsafeBufferPointer { pz in
                    try next.withUnsafeMutableBufferPointer { pn in
                        try skip.withUnsafeBufferPointerIfPresent { pd in
                            try LongConv.fft(conv, u: pz.baseAddress!, k: f.baseAddress! + (n - 1) * D * Lk, D: pd, o: pn.baseAddress!)
                        }
                    }
                }
            }
            for b in 0..<B {
                let gate = chunk(n, b), row = b * D * L
                for i in 0..<(D * L) { next[row + i] *= p[gate + i] }
            }
            swap(&z, &next)
        }
        return try Tensor(shape: [B, D, L], scalars: z)
    }
}
