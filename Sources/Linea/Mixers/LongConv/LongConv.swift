import Foundation

/// How a long convolution is computed: `direct` sums the taps in Float64 (the reference, O(L·min(L, Lk)) per channel);
/// `fft` multiplies spectra from FFTW in single precision (O(L log L) per channel).
public enum LongConvForm: String, Sendable, CaseIterable {
    /// The Float64 sum over taps, O(B·H·L·min(L, Lk)): the reference.
    case direct
    /// By FFT (FFTW, f32): O(B·H·L log L).
    case fft
}

/// The causal long convolution of safari's `fftconv` (H3, Hyena, S4) without its GELU: per batch b and channel h,
/// `o[b,h,t] = Σ_{s<=t} k[h,s]·u[b,h,t-s] + D[h]·u[b,h,t]`, with `u [B,H,L]`, one causal filter per channel
/// `k [H,Lk]` and an optional skip `D [H]`; `o [B,H,L]`. A filter shorter than the sequence (Lk < L) is zero-padded;
/// of a longer one only its first L taps can reach an output (s <= t < L), so the rest is ignored: safari's
/// `fftconv` reads `k[..., :L]` the same way (its Hyena cuts the filter to the sequence before the FFT).
public enum LongConv {
    /// The sizes of one call: batch B, channels H, sequence length L and filter length Lk.
    public struct Shape: Sendable, Equatable {
        /// Batch, channels, sequence length, filter length.
        public let batch: Int, channels: Int, length: Int, filterLength: Int
        /// The taps that reach an output: min(Lk, L).
        public var taps: Int { min(filterLength, length) }
    }

    /// The shape of a call; throws naming the first tensor that does not fit (every extent must be >= 1). O(1).
    public static func shape(u: [Int], k: [Int], D: [Int]?) throws -> Shape {
        guard u.count == 3, u.allSatisfy({ $0 >= 1 }) else {
            throw LineaError.shapeMismatch(argument: "u", expected: "[B, H, L] with B, H, L >= 1", actual: "\(u)")
        }
        guard k.count == 2, k[0] == u[1], k[1] >= 1 else {
            throw LineaError.shapeMismatch(argument: "k", expected: "[\(u[1]), Lk] with Lk >= 1 (one filter per channel of u)", actual: "\(k)")
        }
        if let D, D != [u[1]] {
            throw LineaError.shapeMismatch(argument: "D", expected: "[\(u[1])] (one skip per channel of u)", actual: "\(D)")
        }
        return Shape(batch: u[0], channels: u[1], length: u[2], filterLength: k[1])
    }

    /// Throws naming the first input (`u`, `k`, `D`) holding NaN or an infinity. O(inputs).
    public static func validate(_ inputs: [String: Tensor]) throws {
        for name in ["u", "k", "D"] { try inputs[name]?.expectFinite(name) }
    }

    /// The Float64 reference on host tensors: the direct sum over taps. O(B·H·L·min(L, Lk)), channels in parallel.
    public static func reference(u: Tensor, k: Tensor, D: Tensor? = nil) throws -> Tensor {
        try forward(u: u, k: k, D: D, form: .direct)
    }

    /// The convolution on host tensors in `form`; `validate` checks the inputs finite first. Returns `o [B,H,L]`.
    /// O(B·H·L·min(L, Lk)) direct, O(B·H·L log L) fft.
    public static func forward(u: Tensor, k: Tensor, D: Tensor? = nil, form: LongConvForm = .fft, validate: Bool = true) throws -> Tensor {
        let s = try shape(u: u.shape, k: k.shape, D: D?.shape)
        if validate { try self.validate(["u": u, "k": k, "D": D].compactMapValues { $0 }) }
        try MemoryBudget.check([.init("o", u.shape)] + (form == .fft ? fftScratch(s) : []))
        var o = [Float](repeating: 0, count: u.count)
        try u.withUnsafeBufferPointer { pu in
            try k.withUnsafeBufferPointer { pk in
                try o.withUnsafeMutableBufferPointer { po in
                    let pD = D?.scalars
                    try pD.withUnsafeBufferPointerIfPresent { pd in
                        try run(form, s, u: pu.baseAddress!, k: pk.baseAddress!, D: pd, o: po.baseAddress!)
                    }
                }
            }
        }
        return try Tensor(shape: u.shape, scalars: o)
    }

    /// Runs `form` on packed f32 buffers (shapes checked by `shape`). O(the form).
    static func run(_ form: LongConvForm, _ s: Shape, u: UnsafePointer<Float>, k: UnsafePointer<Float>, D: UnsafePointer<Float>?,
                    o: UnsafeMutablePointer<Float>) throws {
        switch form {
        case .direct: direct(s, u: u, k: k, D: D, o: o)
        case .fft: try fft(s, u: u, k: k, D: D, o: o)
        }
    }

    /// The direct form on packed f32 buffers: each output a Float64 sum over its taps, channels in parallel over every
    /// core. O(B·H·L·min(L, Lk)).
    static func direct(_ s: Shape, u: UnsafePointer<Float>, k: UnsafePointer<Float>, D: UnsafePointer<Float>?, o: UnsafeMutablePointer<Float>) {
        let (L, Lk, taps) = (s.length, s.filterLength, s.taps)
        let (pu, pk, pd, po) = (SendableConstPointer(u), SendableConstPointer(k), D.map(SendableConstPointer.init), SendablePointer(o))
        Parallel.forEach(s.batch * s.channels) { channel in
            let h = channel % s.channels
            let x = pu.base + channel * L, filter = pk.base + h * Lk, y = po.base + channel * L
            let skip = Double(pd?.base[h] ?? 0)
            for t in 0..<L {
                var sum = skip * Double(x[t])
                for j in 0...min(t, taps - 1) { sum += Double(filter[j]) * Double(x[t - j]) }
                y[t] = Float(sum)
            }
        }
    }

    /// Floating-point operations of `form` on shape `s`: 2 per tap and output direct; for fft about 2.5·n·log2(n) per
    /// real transform of size n (two per sequence, one per filter) and 6 per spectral product. O(1).
    public static func flops(_ s: Shape, form: LongConvForm) -> Double {
        let (channels, L, taps) = (Double(s.batch * s.channels), Double(s.length), Double(s.taps))
        switch form {
        case .direct:
            return channels * 2 * (L * taps - taps * (taps - 1) / 2)
        case .fft:
            let n = Double(fftSize(s.length)), transform = 2.5 * n * log2(max(n, 2))
            return channels * (2 * transform + 3 * n) + Double(s.channels) * transform
        }
    }
}

extension Optional where Wrapped == [Float] {
    /// `body` with the array's base address, or with nil when there is no array. O(1).
    func withUnsafeBufferPointerIfPresent<R>(_ body: (UnsafePointer<Float>?) throws -> R) rethrows -> R {
        guard let array = self else { return try body(nil) }
        return try array.withUnsafeBufferPointer { try body($0.baseAddress) }
    }
}
