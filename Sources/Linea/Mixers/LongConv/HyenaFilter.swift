import Foundation

/// Hyena's implicit long filter (safari's `HyenaFilter`) from given weights: each position l of a sequence of at most
/// `maxLength` gets a positional embedding `z_l [E]` (normalized time `t_l = l/(maxLength-1)`, then the real and
/// imaginary parts of `e^(-i·f_j·2πl/maxLength)` for `(E-1)/2` frequencies `f_j` spread from 1e-4 to `(E-1)/2 - 1`), an
/// MLP maps it to one tap per channel (`Linear, Sin, (Linear, Sin) x inner, Linear without bias`, `Sin(x) = sin(freq ⊙
/// x)`), optionally divided by its L1 norm over channels (`normalized`), and an exponential window multiplies it
/// (`modulate`: `h ⊙ (e^(-t_l·|deltas|) + shift)`). The C = (N-1)·D channels are safari's `(d o)` layout: channel
/// `d·(N-1) + o` is tap l of filter h_o of channel d. Tensors may keep safari's leading ones (`freq [1, F]`,
/// `deltas [1, 1, C]`, `z [1, maxLength, E]`).
public struct HyenaFilter: Sendable {
    /// Operator order N >= 2 (N-1 filters per channel).
    public let order: Int
    /// Channels D of the operator (C = (N-1)·D filter channels).
    public let width: Int
    /// The longest sequence the filter serves (safari's `seq_len`, the operator's `l_max`): it sets the embedding's time scale.
    public let maxLength: Int
    /// Positional embedding `z [maxLength, E]` (`[t, cos, -sin]` bands); computed from E unless given.
    public let embedding: Tensor
    /// The MLP's linear weights `[out, in]` (torch's layout): `[F, E]`, then `[F, F]` per inner layer, then `[C, F]`.
    public let weights: [Tensor]
    /// Biases `[F]` of every linear layer but the last.
    public let biases: [Tensor]
    /// Each Sin layer's frequency `[F]` (one per linear layer but the last; safari shares one module, so they are equal there).
    public let frequencies: [Tensor]
    /// Modulation decay rates `[C]` (their magnitudes are used).
    public let deltas: Tensor
    /// Added to the decay window before it multiplies the taps.
    public let shift: Float
    /// Whether the exponential window is applied (safari's `modulate`).
    public let modulate: Bool
    /// Whether each position's taps are divided by their L1 norm over the C channels (safari's `normalized`).
    public let normalized: Bool
    /// The filters' skip term `[C]` in safari's `(d o)` layout, or nil for none (safari's `bias=False`).
    public let bias: Tensor?

    /// Checks every weight's shape against the others and `order`, `maxLength` and `embeddingDim` E (odd, >= 3; ignored
    /// when `embedding` is given), throwing a `LineaError` naming the first misfit; computes the embedding unless given.
    /// O(maxLength·E + weights).
    public init(order: Int, maxLength: Int, embeddingDim: Int = 3, embedding: Tensor? = nil, weights: [Tensor], biases: [Tensor],
                frequencies: [Tensor], deltas: Tensor, shift: Float = 0, modulate: Bool = true, normalized: Bool = false,
                bias: Tensor?) throws {
        guard order >= 2 else { throw LineaError.invalidArgument(argument: "order", expected: "an operator order N >= 2", actual: "\(order)") }
        guard maxLength >= 1 else { throw LineaError.invalidArgument(argument: "maxLength", expected: "a length >= 1", actual: "\(maxLength)") }
        let E: Int
        if let embedding {
            let s = embedding.shape
            guard (s.count == 2 || (s.count == 3 && s[0] == 1)), s[s.count - 2] == maxLength, s[s.count - 1] >= 3, s[s.count - 1] % 2 == 1 else {
                throw LineaError.shapeMismatch(argument: "embedding", expected: "[\(maxLength), E] or [1, \(maxLength), E] with E odd and >= 3",
                                               actual: "\(s)")
            }
            E = s[s.count - 1]
        } else {
            guard embeddingDim >= 3, embeddingDim % 2 == 1 else {
                throw LineaError.invalidArgument(argument: "embeddingDim", expected: "an odd E >= 3 (time, cosine and sine bands)", actual: "\(embeddingDim)")
            }
            E = embeddingDim
        }
        guard weights.count >= 2 else {
            throw LineaError.invalidArgument(argument: "weights", expected: "at least 2 linear layers (first and last)", actual: "\(weights.count)")
        }
        let layers = weights.count
        guard weights[0].rank == 2, weights[0].shape[0] >= 1, weights[0].shape[1] == E else {
            throw LineaError.shapeMismatch(argument: "weights[0]", expected: "[F, \(E)] with F >= 1 (the MLP width, embedding dim)", actual: "\(weights[0].shape)")
        }
        let F = weights[0].shape[0]
        for i in 1..<(layers - 1) where weights[i].shape != [F, F] {
            throw LineaError.shapeMismatch(argument: "weights[\(i)]", expected: "[\(F), \(F)]", actual: "\(weights[i].shape)")
        }
        let last = weights[layers - 1].shape
        guard last.count == 2, last[1] == F, last[0] >= order - 1, last[0] % (order - 1) == 0 else {
            throw LineaError.shapeMismatch(argument: "weights[\(layers - 1)]",
                                           expected: "[(N-1)·D, \(F)] with N-1 = \(order - 1), D >= 1", actual: "\(last)")
        }
        let C = last[0]
        guard biases.count == layers - 1 else {
            throw LineaError.invalidArgument(argument: "biases", expected: "\(layers - 1) (one per linear layer but the last)", actual: "\(biases.count)")
        }
        guard frequencies.count == layers - 1 else {
            throw LineaError.invalidArgument(argument: "frequencies", expected: "\(layers - 1) (one per Sin layer)", actual: "\(frequencies.count)")
        }
        for (i, b) in biases.enumerated() { try Self.expectVector(b, F, "biases[\(i)]") }
        for (i, f) in frequencies.enumerated() { try Self.expectVector(f, F, "frequencies[\(i)]") }
        try Self.expectVector(deltas, C, "deltas")
        if let bias { try Self.expectVector(bias, C, "bias") }
        for (i, w) in weights.enumerated() { try w.expectFinite("weights[\(i)]") }
        for (i, b) in biases.enumerated() { try b.expectFinite("biases[\(i)]") }
        for (i, f) in frequencies.enumerated() { try f.expectFinite("frequencies[\(i)]") }
        try deltas.expectFinite("deltas")
        try bias?.expectFinite("bias")
        guard shift.isFinite else { throw LineaError.invalidArgument(argument: "shift", expected: "a finite value", actual: "\(shift)") }
        if let embedding { try embedding.expectFinite("embedding") }
        (self.order, self.width, self.maxLength) = (order, C / (order - 1), maxLength)
        self.embedding = try embedding?.reshaped([maxLength, E]) ?? Self.positionalEmbedding(maxLength: maxLength, dim: E)
        (self.weights, self.biases) = (weights, biases)
        self.frequencies = try frequencies.map { try $0.reshaped([F]) }
        self.deltas = try deltas.reshaped([C])
        self.bias = try bias?.reshaped([C])
        (self.shift, self.modulate, self.normalized) = (shift, modulate, normalized)
    }

    /// Throws unless `t` holds n values in a shape of leading ones then n (`[n]`, `[1, n]`, `[1, 1, n]`). O(rank).
    static func expectVector(_ t: Tensor, _ n: Int, _ name: String) throws {
        guard t.rank >= 1, t.shape.last == n, t.shape.dropLast().allSatisfy({ $0 == 1 }) else {
            throw LineaError.shapeMismatch(argument: name, expected: "[\(n)] (leading ones allowed)", actual: "\(t.shape)")
        }
    }

    /// Safari's initial positional embedding `z [maxLength, E]`: column 0 is `t_l = l/(maxLength-1)` (0 when maxLength
    /// is 1); with `bands = (E-1)/2`, `f_j` evenly spaced from 1e-4 to `bands - 1` (just 1e-4 for one band) and
    /// `w_l = 2πl/maxLength`, columns `1+j` hold `cos(f_j·w_l)` and `1+bands+j` hold `-sin(f_j·w_l)`. O(maxLength·E).
    public static func positionalEmbedding(maxLength: Int, dim E: Int) throws -> Tensor {
        guard maxLength >= 1 else { throw LineaError.invalidArgument(argument: "maxLength", expected: "a length >= 1", actual: "\(maxLength)") }
        guard E >= 3, E % 2 == 1 else {
            throw LineaError.invalidArgument(argument: "embeddingDim", expected: "an odd E >= 3 (time, cosine and sine bands)", actual: "\(E)")
        }
        let bands = (E - 1) / 2
        var z = [Float](repeating: 0, count: maxLength * E)
        for l in 0..<maxLength {
            let w = 2 * Double.pi * Double(l) / Double(maxLength)
            z[l * E] = Float(time(l, maxLength))
            for j in 0..<bands {
                let f = bands == 1 ? 1e-4 : 1e-4 + Double(j) * (Double(bands - 1) - 1e-4) / Double(bands - 1)
                z[l * E + 1 + j] = Float(Foundation.cos(f * w))
                z[l * E + 1 + bands + j] = Float(-Foundation.sin(f * w))
            }
        }
        return try Tensor(shape: [maxLength, E], scalars: z)
    }

    /// Normalized time of position l: evenly spaced from 0 to 1 over maxLength positions.
    static func time(_ l: Int, _ maxLength: Int) -> Double { maxLength == 1 ? 0 : Double(l) / Double(maxLength - 1) }

    /// The taps as safari's `filter(L)` returns them, `[L, C]` (channels in the `(d o)` layout), computed in Float64 and
    /// rounded to f32. Throws naming `length` unless 1 <= L <= maxLength. O(L·(E·F + inner·F² + F·C)), positions in parallel.
    public func implicitFilter(length L: Int) throws -> Tensor {
        guard L >= 1, L <= maxLength else {
            throw LineaError.invalidArgument(argument: "length", expected: "1...\(maxLength) (the filter's maxLength)", actual: "\(L)")
        }
        let C = width * (order - 1), E = embedding.shape[1], F = weights[0].shape[0]
        try MemoryBudget.check([.init("implicit filter", [L, C])])
        var out = [Float](repeating: 0, count: L * C)
        let (z, w, b, freq, deltas) = (embedding.scalars, weights.map(\.scalars), biases.map(\.scalars), frequencies.map(\.scalars), deltas.scalars)
        let (shift, modulate, normalized, maxLength) = (Double(shift), modulate, normalized, maxLength)
        out.withUnsafeMutableBufferPointer { o in
            let po = SendablePointer(o.baseAddress!)
            Parallel.forEach(L) { l in
                var x = (0..<E).map { Double(z[l * E + $0]) }, y = [Double](repeating: 0, count: F)
                for layer in 0..<(w.count - 1) {
                    let n = x.count
                    for r in 0..<F {
                        var s = Double(b[layer][r])
                        for c in 0..<n { s += Double(w[layer][r * n + c]) * x[c] }
                        y[r] = Foundation.sin(Double(freq[layer][r]) * s)
                    }
                    x = y
                }
                var h = [Double](repeating: 0, count: C), norm = 0.0
                for r in 0..<C {
                    var s = 0.0
                    for c in 0..<F { s += Double(w[w.count - 1][r * F + c]) * x[c] }
                    h[r] = s
                    norm += abs(s)
                }
                let t = Self.time(l, maxLength)
                for r in 0..<C {
                    var v = normalized ? h[r] / norm : h[r]
                    if modulate { v *= Foundation.exp(-t * abs(Double(deltas[r]))) + shift }
                    po.base[l * C + r] = Float(v)
                }
            }
        }
        let k = try Tensor(shape: [L, C], scalars: out)
        try k.checkFiniteOutput("implicit filter", hint: normalized ? "a position whose taps are all 0 divides by a zero L1 norm" : "")
        return k
    }

    /// The filters in `Hyena.forward`'s layout, `[N-1, D, L]` (`filters[o, d, l]` is channel `d·(N-1) + o` at l, as
    /// safari's `rearrange(k, 'c l (v o) -> c o v l')` for one head), and the skip `[N-1, D]` likewise (nil without a
    /// bias). Throws naming `length` unless 1 <= L <= maxLength. O(implicitFilter + N·D·L).
    public func filters(length L: Int) throws -> (filters: Tensor, bias: Tensor?) {
        let k = try implicitFilter(length: L)
        let (O, D) = (order - 1, width)
        var f = [Float](repeating: 0, count: O * D * L)
        for l in 0..<L { for d in 0..<D { for o in 0..<O { f[(o * D + d) * L + l] = k.scalars[l * O * D + d * O + o] } } }
        let skip = try bias.map { b in
            try Tensor(shape: [O, D], scalars: (0..<(O * D)).map { i in b.scalars[(i % D) * O + i / D] })
        }
        return (try Tensor(shape: [O, D, L], scalars: f), skip)
    }
}

extension Hyena {
    /// The operator with `filter`'s generated filters and bias for the projections' length L (`[B, (N+1)·D, L]`, L <=
    /// `filter.maxLength`), in `form` as `forward(projections:filters:bias:form:)`. Returns `y [B, D, L]`. O(filter
    /// generation + the operator).
    public static func forward(projections: Tensor, filter: HyenaFilter, form: LongConvForm = .fft) throws -> Tensor {
        let (N, D) = (filter.order, filter.width)
        let s = projections.shape
        guard s.count == 3, s[0] >= 1, s[1] == (N + 1) * D, s[2] >= 1, s[2] <= filter.maxLength else {
            throw LineaError.shapeMismatch(argument: "projections",
                                           expected: "[B, \((N + 1) * D), L] with B >= 1 and 1 <= L <= \(filter.maxLength) (the filter's maxLength)",
                                           actual: "\(s)")
        }
        let (filters, bias) = try filter.filters(length: s[2])
        return try forward(projections: projections, filters: filters, bias: bias, form: form)
    }
}
