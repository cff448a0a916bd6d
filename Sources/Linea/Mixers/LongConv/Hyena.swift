import Foundation

/// The Hyena operator of order N >= 2 (Poli et al. 2023) with given filters, as safari's `HyenaOperator.forward` runs
/// it (one head, no inner factor, no post-order FFN): the projections `[B, (N+1)·D, L]` (input projection and short
/// convolution already applied, channel-major) split along channels into gates `x_0 ... x_{N-1}` (chunk c holds
/// channels c·D..<(c+1)·D) and `v` (the last chunk); then for o = 0 ..< N-1, `v = h_o * (v ⊙ x_{N-1-o}) + bias_o ⊙ (v ⊙
/// x_{N-1-o})` (the gate before each causal `LongConv`, safari's `reversed(x[1:])`), and `y = v ⊙ x_0 [B, D, L]`.
/// `filters [N-1, D, Lk]` (row o is h_o; safari's implicit filter holds them as channels (d, o): rearrange first) and
/// the optional `bias [N-1, D]` (the filter's skip term, safari's `filter_fn.bias`).
public enum Hyena {
    /// Order N, width D, batch B and length L of a call; throws naming the first tensor that does not fit. O(1).
    public static func shape(projections: [Int], filters: [Int], bias: [Int]?) throws -> (order: Int, width: Int, batch: Int, length: Int) {
        guard filters.count == 3, filters.allSatisfy({ $0 >= 1 }) else {
            throw LineaError.shapeMismatch(argument: "filters", expected: "[N-1, D, Lk] with N-1, D, Lk >= 1", actual: "\(filters)")
        }
        let (N, D) = (filters[0] + 1, filters[1])
        guard projections.count == 3, projections[0] >= 1, projections[2] >= 1, projections[1] == (N + 1) * D else {
            throw LineaError.shapeMismatch(argument: "projections",
                                           expected: "[B, \((N + 1) * D), L] ((N + 1)·D channels: x_0...x_\(N - 1), v) with B, L >= 1",
                                           actual: "\(projections)")
        }
        if let bias, bias != [N - 1, D] { throw LineaError.shapeMismatch(argument: "bias", expected: "[\(N - 1), \(D)]", actual: "\(bias)") }
        return (N, D, projections[0], projections[2])
    }

    /// The operator on host tensors: `form` `direct` keeps every order in Float64 (the reference, O(N·B·D·L·min(L, Lk)));
    /// `fft` runs each convolution by FFT in f32 and gates in f32 (O(N·B·D·L log L)). Returns `y [B, D, L]`.
    public static func forward(projections: Tensor, filters: Tensor, bias: Tensor? = nil, form: LongConvForm = .fft) throws -> Tensor {
        let (N, D, B, L) = try shape(projections: projections.shape, filters: filters.shape, bias: bias?.shape)
        for (name, t) in [("projections", projections), ("filters", filters), ("bias", bias)] { try t?.expectFinite(name) }
        let Lk = filters.shape[2]
        let conv = LongConv.Shape(batch: B, channels: D, length: L, filterLength: Lk)
        try MemoryBudget.check([.init("z, y", [2, B, D, L], elementBytes: form == .direct ? 8 : 4)] + (form == .fft ? LongConv.fftScratch(conv) : []))
        let p = projections.scalars
        // Channel d of chunk c (x_c for c < N, v for c = N) of batch b starts at ((b·(N+1) + c)·D + d)·L.
        func chunk(_ c: Int, _ b: Int) -> Int { (b * (N + 1) + c) * D * L }
        if form == .direct {
            var z = [Double](repeating: 0, count: B * D * L)
            for b in 0..<B { for i in 0..<(D * L) { z[b * D * L + i] = Double(p[chunk(N, b) + i]) } }
            for o in 0..<(N - 1) {
                for b in 0..<B { for i in 0..<(D * L) { z[b * D * L + i] *= Double(p[chunk(N - 1 - o, b) + i]) } }
                var next = z
                let f = filters.scalars[(o * D * Lk)...], skip = bias?.scalars[(o * D)...]
                for b in 0..<B {
                    for d in 0..<D {
                        let row = (b * D + d) * L, k = f.startIndex + d * Lk
                        let s = Double(skip.map { $0[$0.startIndex + d] } ?? 0)
                        for t in 0..<L {
                            var sum = s * z[row + t]
                            for j in 0...min(t, conv.taps - 1) { sum += Double(f[k + j]) * z[row + t - j] }
                            next[row + t] = sum
                        }
                    }
                }
                z = next
            }
            for b in 0..<B { for i in 0..<(D * L) { z[b * D * L + i] *= Double(p[chunk(0, b) + i]) } }
            return try Tensor(shape: [B, D, L], scalars: z.map { Float($0) })
        }
        var z = [Float](repeating: 0, count: B * D * L), next = z
        for b in 0..<B { for i in 0..<(D * L) { z[b * D * L + i] = p[chunk(N, b) + i] } }
        for o in 0..<(N - 1) {
            for b in 0..<B { for i in 0..<(D * L) { z[b * D * L + i] *= p[chunk(N - 1 - o, b) + i] } }
            try filters.withUnsafeBufferPointer { f in
                let skip = bias.map { Array($0.scalars[(o * D)..<((o + 1) * D)]) }
                try z.withUnsafeBufferPointer { pz in
                    try next.withUnsafeMutableBufferPointer { pn in
                        try skip.withUnsafeBufferPointerIfPresent { pd in
                            try LongConv.fft(conv, u: pz.baseAddress!, k: f.baseAddress! + o * D * Lk, D: pd, o: pn.baseAddress!)
                        }
                    }
                }
            }
            swap(&z, &next)
        }
        for b in 0..<B { for i in 0..<(D * L) { z[b * D * L + i] *= p[chunk(0, b) + i] } }
        return try Tensor(shape: [B, D, L], scalars: z)
    }
}
