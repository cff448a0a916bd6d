import Foundation

/// NATTEN's neighborhood attention settings (`natten.na1d / na2d / na3d`), one entry per spatial axis; the number of
/// kernel sizes is the spatial rank (1 to 3).
///
/// The rules, read from NATTEN 0.21 (csrc/include/natten/cuda/reference/mask.hpp, the reference kernel's mask, and
/// src/natten/backends/flex.py, the Flex Attention mask; src/natten/utils/checks.py for the argument checks), per axis
/// of length L with kernel k, stride s, dilation d:
/// - Dilation: query x and key y interact only within one dilation group, `x % d == y % d`; inside the group g, the
///   coordinate is `x / d` and the group's length is `n = ceil((L - g) / d)`.
/// - Non-causal: the window has `k / 2` keys left of its center and `k / 2 + k % 2 - 1` right of it (an even kernel
///   has one more on the left). Queries in runs of `s` share the window of the run's leader `min(x/s·s + s/2, n-1)`
///   (the right-hand middle for an even s); the window is shifted at a border to stay whole:
///   start = clamp(leader - k/2, 0, n - k), keys `[start, start + k)`.
/// - Causal: the leader is the run's last query, `min(x/s·s + s - 1, n - 1)`; keys `[max(leader - k + 1, 0), x]`,
///   truncated at the start of the axis (fewer than k keys there), never past the query itself.
/// - The neighborhood is the product of the axes' windows; Swin's non-overlapping windows are stride = kernel on a
///   grid the kernel divides; kernel = grid size on every axis, non-causal, is full self-attention.
/// - Checks: every kernel size >= 2, stride in 1...kernel, dilation >= 1, kernel · dilation <= the axis length.
/// - Scale 1/sqrt(D) by default; lse is the natural log of the sum of exp(scaled scores), `[B, *spatial, heads]`;
///   GQA: query head h reads key/value head h / (heads / kv heads).
public struct NeighborhoodOptions: Sendable, Equatable {
    /// Window size per axis (>= 2 each); its count is the spatial rank, 1 to 3.
    public var kernelSize: [Int]
    /// Queries per shared window along each axis (1...kernel); nil: 1 on every axis.
    public var stride: [Int]?
    /// Step between neighbors along each axis (>= 1); nil: 1 on every axis.
    public var dilation: [Int]?
    /// Causal masking per axis; nil: none.
    public var causal: [Bool]?
    /// Query scale; nil: 1/sqrt(D).
    public var scale: Float?
    /// Return NaN or +inf in o/lse instead of throwing `LineaError.nonFinite`.
    public var allowNonFiniteOutputs: Bool

    /// Options with NATTEN's defaults for what is left out (stride 1, dilation 1, not causal). O(1).
    public init(kernelSize: [Int], stride: [Int]? = nil, dilation: [Int]? = nil, causal: [Bool]? = nil, scale: Float? = nil,
                allowNonFiniteOutputs: Bool = false) {
        self.kernelSize = kernelSize
        self.stride = stride
        self.dilation = dilation
        self.causal = causal
        self.scale = scale
        self.allowNonFiniteOutputs = allowNonFiniteOutputs
    }

    /// The spatial rank: the number of kernel sizes. O(1).
    public var rank: Int { kernelSize.count }

    /// Checks the settings alone (counts and ranges, not against a grid), naming the argument. O(rank).
    public func validate() throws {
        guard (1...3).contains(rank) else {
            throw LineaError.invalidArgument(argument: "kernel_size", expected: "1 to 3 sizes, one per spatial axis", actual: "\(kernelSize)")
        }
        for (name, values) in [("stride", stride), ("dilation", dilation), ("is_causal", causal.map { $0.map { $0 ? 1 : 0 } })] {
            if let values, values.count != rank {
                throw LineaError.invalidArgument(argument: name, expected: "\(rank) values, one per axis of kernel_size \(kernelSize)",
                                                 actual: "\(values)")
            }
        }
        for (a, k) in kernelSize.enumerated() {
            guard k >= 2 else {
                throw LineaError.invalidArgument(argument: "kernel_size", expected: "sizes >= 2 (NATTEN's rule)", actual: "\(k) on axis \(a)")
            }
            let s = stride?[a] ?? 1, d = dilation?[a] ?? 1
            guard s >= 1, s <= k else {
                throw LineaError.invalidArgument(argument: "stride", expected: "1 to the kernel size \(k) on axis \(a)", actual: "\(s)")
            }
            guard d >= 1 else {
                throw LineaError.invalidArgument(argument: "dilation", expected: ">= 1", actual: "\(d) on axis \(a)")
            }
        }
    }

    /// Checks the settings against a grid of `spatial` tokens: kernel <= length and kernel · dilation <= length per axis. O(rank).
    public func validate(spatial: [Int]) throws {
        try validate()
        guard spatial.count == rank else {
            throw LineaError.shapeMismatch(argument: "q", expected: "[B, \(rank) spatial axes, heads, D] for \(rank) kernel sizes",
                                           actual: "\(spatial.count) spatial axes \(spatial)")
        }
        for (a, (k, L)) in zip(kernelSize, spatial).enumerated() {
            guard k <= L else {
                throw LineaError.invalidArgument(argument: "kernel_size", expected: "at most the grid's length \(L) on axis \(a)", actual: "\(k)")
            }
            let d = dilation?[a] ?? 1
            guard k * d <= L else {
                throw LineaError.invalidArgument(argument: "dilation", expected: "kernel_size · dilation <= \(L) on axis \(a) (kernel \(k))",
                                                 actual: "\(d) (\(k) · \(d) = \(k * d))")
            }
        }
    }

    /// The flattened (row-major) key tokens query `query` (one coordinate per axis) attends to in a grid of `spatial`,
    /// ascending; throws on settings that do not fit the grid. O(keys).
    public func neighbors(ofQuery query: [Int], spatial: [Int]) throws -> [Int] {
        try validate(spatial: spatial)
        guard query.count == rank, zip(query, spatial).allSatisfy({ $0 >= 0 && $0 < $1 }) else {
            throw LineaError.invalidArgument(argument: "query", expected: "a coordinate inside \(spatial)", actual: "\(query)")
        }
        var tokens = [0]
        for a in 0..<rank {
            let axis = NeighborhoodAxis(self, axis: a, length: spatial[a])
            let (g, xi) = (query[a] % axis.dilation, query[a] / axis.dilation)
            let window = axis.window(xi, groupLength: axis.groupLength(g))
            tokens = tokens.flatMap { t in window.map { t * spatial[a] + g + $0 * axis.dilation } }
        }
        return tokens
    }
}

/// One axis's window rules (see `NeighborhoodOptions`); axes beyond the spatial rank are length 1, kernel 1.
struct NeighborhoodAxis: Sendable, Equatable {
    let length: Int, kernel: Int, stride: Int, dilation: Int
    let causal: Bool

    /// Axis `axis` of `options` on a grid axis of `length`. O(1).
    init(_ options: NeighborhoodOptions, axis a: Int, length: Int) {
        (self.length, kernel) = (length, options.kernelSize[a])
        (stride, dilation, causal) = (options.stride?[a] ?? 1, options.dilation?[a] ?? 1, options.causal?[a] ?? false)
    }

    /// A padding axis (length 1, kernel 1): every query sees its one key. O(1).
    init() {
        (length, kernel, stride, dilation, causal) = (1, 1, 1, 1, false)
    }

    /// Tokens of dilation group `g`: ceil((L - g) / d). O(1).
    func groupLength(_ g: Int) -> Int { (length - g + dilation - 1) / dilation }

    /// Keys (group coordinates) of the query at group coordinate `xi` in a group of `n`, as NATTEN's reference
    /// kernel computes them (mask.hpp `get_win_start` / `get_win_end`); non-decreasing bounds as `xi` grows. O(1).
    @inline(__always)
    func window(_ xi: Int, groupLength n: Int) -> Range<Int> {
        if causal {
            let leader = min(xi / stride * stride + stride - 1, n - 1)
            return max(leader - kernel + 1, 0)..<(xi + 1)
        }
        let leader = min(xi / stride * stride + stride / 2, n - 1)
        let start = min(max(leader - kernel / 2, 0), n - kernel)
        return start..<(start + kernel)
    }

    /// Sum over the axis's queries of their window lengths (the neighborhood size is a product over axes, so the
    /// visible pairs of a grid are the product of these sums). O(length).
    var pairs: Int {
        (0..<length).reduce(0) { sum, x in sum + window(x / dilation, groupLength: groupLength(x % dilation)).count }
    }
}

/// Validated shapes and settings of one call, the spatial axes padded in front to three.
struct NeighborhoodProblem: Sendable {
    let B: Int, Hq: Int, Hkv: Int, D: Int, Dv: Int
    /// The caller's spatial shape, and three axes (leading padding axes of length 1).
    let spatial: [Int]
    let axes: [NeighborhoodAxis]
    let scale: Float
    let options: NeighborhoodOptions

    /// Tokens per sequence.
    var N: Int { spatial.reduce(1, *) }

    /// Checks `q [B, *spatial, Hq, D]`, `k [B, *spatial, Hkv, D]`, `v [B, *spatial, Hkv, Dv]` against `options`. O(rank).
    init(q: [Int], k: [Int], v: [Int], options: NeighborhoodOptions) throws {
        try options.validate()
        let r = options.rank
        let layout = "[B, " + (0..<r).map { "X\($0)" }.joined(separator: ", ") + ", heads, D]"
        guard q.count == r + 3 else {
            throw LineaError.shapeMismatch(argument: "q", expected: "\(layout) (rank \(r + 3) for \(r) kernel sizes)", actual: "\(q) (rank \(q.count))")
        }
        let spatial = Array(q[1...r])
        let (B, Hq, D) = (q[0], q[r + 1], q[r + 2])
        guard k.count == r + 3, k[0] == B, Array(k[1...r]) == spatial, k[r + 2] == D else {
            throw LineaError.shapeMismatch(argument: "k", expected: "[\(B), \(spatial.map(String.init).joined(separator: ", ")), Hkv, \(D)] (q's batch, grid and D)",
                                           actual: "\(k)")
        }
        let Hkv = k[r + 1]
        guard v.count == r + 3, Array(v[0...(r + 1)]) == Array(k[0...(r + 1)]) else {
            throw LineaError.shapeMismatch(argument: "v", expected: "[\(B), \(spatial.map(String.init).joined(separator: ", ")), \(Hkv), Dv] (k's batch, grid and heads)",
                                           actual: "\(v)")
        }
        guard Hkv > 0, Hq % Hkv == 0 else {
            throw LineaError.invalidArgument(argument: "k heads (Hkv)", expected: "a divisor of the \(Hq) query heads", actual: "\(Hkv)")
        }
        guard D > 0, v[r + 2] > 0 else {
            throw LineaError.shapeMismatch(argument: D > 0 ? "v" : "q", expected: "head dims D, Dv >= 1", actual: "\(D > 0 ? v : q)")
        }
        try options.validate(spatial: spatial)
        let scale = options.scale ?? 1 / Float(D).squareRoot()
        guard scale.isFinite, scale != 0 else {
            throw LineaError.invalidArgument(argument: "scale", expected: "a finite non-zero number", actual: "\(scale)")
        }
        (self.B, self.Hq, self.Hkv, self.D, self.Dv) = (B, Hq, Hkv, D, v[r + 2])
        self.spatial = spatial
        axes = Array(repeating: NeighborhoodAxis(), count: 3 - r) + (0..<r).map { NeighborhoodAxis(options, axis: $0, length: spatial[$0]) }
        self.scale = scale
        self.options = options
    }
}

/// How neighborhood attention is computed; both give the same numbers.
public enum NeighborhoodForm: String, Sendable, CaseIterable {
    /// Exact attention under the neighborhood mask, every query against every key, Float64: the oracle. O(N²·D) a head.
    case reference
    /// Query tiles against the box of keys their windows cover, online softmax on the flash kernels' tiles; never
    /// forms the N x N scores. O(N·box·D) a head, linear in the number of tokens N.
    case fused
}

/// Neighborhood attention (NATTEN): each query attends to a window of keys around it on a 1-D, 2-D or 3-D grid of
/// tokens, heads last (`[B, *spatial, heads, D]`); the rules are `NeighborhoodOptions`'.
public enum NeighborhoodAttention {
    /// Neighborhood attention of `q [B, *spatial, Hq, D]` over `k [B, *spatial, Hkv, D]`, `v [B, *spatial, Hkv, Dv]`
    /// (Hkv divides Hq); returns `o [B, *spatial, Hq, Dv]` and `lse [B, *spatial, Hq]`. O(B·Hq·N·kernel volume·D) fused.
    public static func forward(q: Tensor, k: Tensor, v: Tensor, options: NeighborhoodOptions, form: NeighborhoodForm = .fused) throws -> AttentionOutput {
        let p = try NeighborhoodProblem(q: q.shape, k: k.shape, v: v.shape, options: options)
        try q.expectFinite("q")
        try k.expectFinite("k")
        try v.expectFinite("v")
        try MemoryBudget.check([.init("o", [p.B, p.N, p.Hq, p.Dv]), .init("lse", [p.B, p.N, p.Hq])])
        let out: AttentionOutput
        switch form {
        case .reference: out = reference(p, q: q, k: k, v: v)
        case .fused:
            // The fused form runs in Float32: scores and row sums must stay in its range (a neighborhood holds at most
            // the kernel volume of keys).
            let keys = options.kernelSize.reduce(1, *)
            try Attention.checkFloat32Range(maxQ: q.maxMagnitude, maxK: k.maxMagnitude, maxV: v.maxMagnitude, D: p.D, S: keys,
                                            scale: p.scale, form: .flash)
            out = try fused(p, q: q, k: k, v: v)
        }
        if !options.allowNonFiniteOutputs {
            try out.o.checkFiniteOutput("o", hint: nonFiniteHint)
            try out.lse.checkFiniteOutput("lse", hint: nonFiniteHint)
        }
        return out
    }

    /// What a non-finite output means here: every query sees at least itself, so only overflow makes one.
    static let nonFiniteHint = "the result exceeds Float32's range"

    /// FLOPs counted for throughput: `4·B·Hq·D·(visible query-key pairs)` (QKᵀ and PV), exact for borders and causal axes.
    /// O(sum of the axis lengths).
    public static func flops(B: Int, spatial: [Int], H: Int, D: Int, options: NeighborhoodOptions) -> Double {
        guard options.rank == spatial.count, (try? options.validate(spatial: spatial)) != nil else { return 0 }
        let pairs = (0..<spatial.count).reduce(1.0) { $0 * Double(NeighborhoodAxis(options, axis: $1, length: spatial[$1]).pairs) }
        return 4 * Double(B) * Double(H) * Double(D) * pairs
    }
}
