import Foundation

/// Mamba-1's selective scan with mamba_ssm's `selective_scan_fn` semantics. Per batch b and channel d, with the
/// state `h [N]` (from `initialState [B,D,N]`, zeros by default) and `dt = softplus?(delta + delta_bias)`:
/// `h_t = exp(dt_t · A[d]) ⊙ h_{t-1} + dt_t · B_t · u_t`, `y_t = C_t · h_t + D[d] · u_t`, then `y_t · silu(z_t)`.
/// Inputs: `u, delta [B,D,L]`, real `A [D,N]`, `B, C` as `[B,N,L]` or grouped `[B,G,N,L]` (channel d reads group
/// `d / (D/G)`), optional `D [D]`, `z [B,D,L]`, `delta_bias [D]`. Outputs `o [B,D,L]` and `final_state [B,D,N]`.
public enum SelectiveScan {
    /// The sizes of one call: batch, channels, length, state size, groups of B and C.
    public struct Shape: Sendable, Equatable {
        /// Batch, channels D, length L, state size N, groups G.
        public let batch: Int, channels: Int, length: Int, state: Int, groups: Int
    }

    /// The shape of a call; throws naming the first tensor whose shape does not fit (`B`/`C` of 3 or 4 axes). O(1).
    public static func shape(u: [Int], delta: [Int], A: [Int], B: [Int], C: [Int], D: [Int]?, z: [Int]?, deltaBias: [Int]?,
                             initialState: [Int]?) throws -> Shape {
        guard u.count == 3 else { throw LineaError.shapeMismatch(argument: "u", expected: "[B, D, L]", actual: "\(u)") }
        let (b, d, l) = (u[0], u[1], u[2])
        guard delta == u else { throw LineaError.shapeMismatch(argument: "delta", expected: "\(u) (as u)", actual: "\(delta)") }
        guard A.count == 2, A[0] == d, A[1] >= 1 else { throw LineaError.shapeMismatch(argument: "A", expected: "[\(d), N]", actual: "\(A)") }
        let n = A[1]
        func groups(_ x: [Int], _ name: String) throws -> Int {
            if x == [b, n, l] { return 1 }
            guard x.count == 4, x[0] == b, x[2] == n, x[3] == l, x[1] >= 1, d % x[1] == 0 else {
                throw LineaError.shapeMismatch(argument: name, expected: "[\(b), \(n), \(l)] or [\(b), G, \(n), \(l)] with G dividing D = \(d)",
                                               actual: "\(x)")
            }
            return x[1]
        }
        let g = try groups(B, "B")
        guard try groups(C, "C") == g else {
            throw LineaError.shapeMismatch(argument: "C", expected: "\(g) groups (as B)", actual: "\(C)")
        }
        for (name, s, want) in [("D", D, [d]), ("z", z, u), ("delta_bias", deltaBias, [d]), ("initial_state", initialState, [b, d, n])] {
            if let s, s != want { throw LineaError.shapeMismatch(argument: name, expected: "\(want)", actual: "\(s)") }
        }
        return Shape(batch: b, channels: d, length: l, state: n, groups: g)
    }

    /// torch's softplus (threshold 20). O(1).
    @inline(__always) static func softplus(_ x: Double) -> Double { x > 20 ? x : log1p(Foundation.exp(x)) }

    /// The Float64 reference on host tensors, token by token as mamba_ssm's `selective_scan_ref`. O(B·D·L·N).
    public static func reference(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor? = nil, z: Tensor? = nil,
                                 deltaBias: Tensor? = nil, deltaSoftplus: Bool = false,
                                 initialState: Tensor? = nil) throws -> (o: Tensor, finalState: Tensor) {
        let s = try shape(u: u.shape, delta: delta.shape, A: A.shape, B: B.shape, C: C.shape, D: D?.shape, z: z?.shape,
                          deltaBias: deltaBias?.shape, initialState: initialState?.shape)
        let (L, N, perGroup) = (s.length, s.state, s.channels / s.groups)
        var o = [Float](repeating: 0, count: u.count), last = [Float](repeating: 0, count: s.batch * s.channels * N)
        for b in 0..<s.batch {
            for d in 0..<s.channels {
                let g = d / perGroup, channel = b * s.channels + d
                var h = (0..<N).map { Double(initialState?.scalars[channel * N + $0] ?? 0) }
                for t in 0..<L {
                    var dt = Double(delta.scalars[channel * L + t]) + Double(deltaBias?.scalars[d] ?? 0)
                    if deltaSoftplus { dt = softplus(dt) }
                    let x = Double(u.scalars[channel * L + t])
                    var y = 0.0
                    for n in 0..<N {
                        let at = ((b * s.groups + g) * N + n) * L + t
                        h[n] = Foundation.exp(dt * Double(A.scalars[d * N + n])) * h[n] + dt * Double(B.scalars[at]) * x
                        y += Double(C.scalars[at]) * h[n]
                    }
                    y += Double(D?.scalars[d] ?? 0) * x
                    if let z {
                        let gate = Double(z.scalars[channel * L + t])
                        y *= gate / (1 + Foundation.exp(-gate))
                    }
                    o[channel * L + t] = Float(y)
                }
                for n in 0..<N { last[channel * N + n] = Float(h[n]) }
            }
        }
        return (try Tensor(shape: u.shape, scalars: o), try Tensor(shape: [s.batch, s.channels, N], scalars: last))
    }

    /// Checks the values a scan needs finite, and `A ≤ 0` (a positive A grows the state without bound). O(inputs).
    public static func validate(_ inputs: [String: Tensor]) throws {
        for (name, t) in inputs.sorted(by: { $0.key < $1.key }) {
            if let i = t.scalars.firstIndex(where: { !$0.isFinite }) {
                throw LineaError.invalidArgument(argument: name, expected: "finite values", actual: "\(t.scalars[i]) at index \(i)")
            }
        }
        if let a = inputs["A"], let i = a.scalars.firstIndex(where: { $0 > 0 }) {
            throw LineaError.invalidArgument(argument: "A", expected: "values <= 0 (decays; a positive A grows the state)",
                                             actual: "\(a.scalars[i]) at index \(i)")
        }
    }

    /// The fast CPU scan on packed f32 buffers (shapes checked by `shape`): channels in parallel over every core, the
    /// state of each in registers over N (8 lanes at a time), B and C first transposed to `[B, G, L, N8]` so each step
    /// reads them contiguously. `state` holds the initial state on entry and the final state on return. O(B·D·L·N).
    static func scan(_ s: Shape, u: UnsafePointer<Float>, delta: UnsafePointer<Float>, A: UnsafePointer<Float>, B: UnsafePointer<Float>,
                     C: UnsafePointer<Float>, D: UnsafePointer<Float>?, z: UnsafePointer<Float>?, deltaBias: UnsafePointer<Float>?,
                     deltaSoftplus: Bool, state: UnsafeMutablePointer<Float>, o: UnsafeMutablePointer<Float>) {
        let (L, N, G) = (s.length, s.state, s.groups)
        let lanes = (N + 7) / 8, padded = lanes * 8
        // Padding lanes carry A = 0, B = C = 0 and h = 0: they stay 0 and add nothing.
        var bt = [Float](repeating: 0, count: s.batch * G * L * padded), ct = bt
        bt.withUnsafeMutableBufferPointer { bp in ct.withUnsafeMutableBufferPointer { cp in
            CPUOps.forRows(s.batch * G, width: L * N) { range in
                for bg in range {
                    for n in 0..<N {
                        for t in 0..<L {
                            bp[(bg * L + t) * padded + n] = B[(bg * N + n) * L + t]
                            cp[(bg * L + t) * padded + n] = C[(bg * N + n) * L + t]
                        }
                    }
                }
            }
        } }
        let perGroup = s.channels / G
        bt.withUnsafeBufferPointer { bp in ct.withUnsafeBufferPointer { cp in
            CPUOps.forRows(s.batch * s.channels, width: L * N * 8) { range in
                var a = [SIMD8<Float>](repeating: .zero, count: lanes), h = a
                for channel in range {
                    let (b, d) = (channel / s.channels, channel % s.channels)
                    let g = d / perGroup
                    for lane in 0..<lanes {
                        var av = SIMD8<Float>(), hv = SIMD8<Float>()
                        for j in 0..<min(8, N - lane * 8) {
                            av[j] = A[d * N + lane * 8 + j]
                            hv[j] = state[channel * N + lane * 8 + j]
                        }
                        (a[lane], h[lane]) = (av, hv)
                    }
                    let bias = deltaBias?[d] ?? 0, skip = D?[d] ?? 0
                    let base = channel * L, table = (b * G + g) * L * padded
                    for t in 0..<L {
                        var dt = delta[base + t] + bias
                        if deltaSoftplus { dt = dt > 20 ? dt : log1p(Foundation.exp(dt)) }
                        let x = u[base + t]
                        let row = table + t * padded
                        var acc = SIMD8<Float>()
                        for lane in 0..<lanes {
                            let bv = SIMD8<Float>(UnsafeBufferPointer(start: bp.baseAddress! + row + lane * 8, count: 8))
                            let cv = SIMD8<Float>(UnsafeBufferPointer(start: cp.baseAddress! + row + lane * 8, count: 8))
                            let hv = VectorMath.exp(dt * a[lane]) * h[lane] + (dt * x) * bv
                            h[lane] = hv
                            acc += cv * hv
                        }
                        var y = acc.sum() + skip * x
                        if let z {
                            let gate = z[base + t]
                            y *= gate / (1 + Foundation.exp(-gate))
                        }
                        o[base + t] = y
                    }
                    for lane in 0..<lanes {
                        for j in 0..<min(8, N - lane * 8) { state[channel * N + lane * 8 + j] = h[lane][j] }
                    }
                }
            }
        } }
    }
}
