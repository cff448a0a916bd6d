import Foundation

/// S4D (Gu et al. 2022, "On the Parameterization and Initialization of Diagonal State Space Models"; state-spaces'
/// `S4DKernel`): a diagonal complex SSM per channel, `x' = A x + B u`, `y = Re(C x)`, discretized with step dt by
/// zero-order hold (`Ā = e^(dt·A)`, `B̄ = (e^(dt·A) - 1)/A · B`), whose convolution kernel over L steps is
/// `K[h,l] = 2·Re Σ_n C[h,n]·Ā[h,n]^l·B̄[h,n]`: the N stored modes stand for conjugate pairs (the factor 2), as in S4D.
/// Complex tensors hold (real, imaginary) on a last axis of 2 (torch's `view_as_real`): `A, B, C [H,N,2]`, `dt [H]`.
/// The sequence map is then `LongConv` with the kernel and the skip D.
public enum S4D {
    /// How the kernel is materialized: `recurrence` steps the discrete state (the Float64 reference, O(H·N·L)
    /// sequential in l); `vandermonde` evaluates `Ā^l = e^(l·dt·A)` in closed form (O(H·N·L), every l independent: the
    /// Vandermonde product S4D computes on a GPU).
    public enum Form: String, Sendable, CaseIterable {
        /// Step `x_{l+1} = Ā x_l` from `x_0 = B̄`, Float64.
        case recurrence
        /// `K = 2·Re((C·B̄) V)`, `V[n,l] = e^(l·dt·A_n)`, Float64 phases and sums.
        case vandermonde
    }

    /// Channels H and modes N of a call; throws naming the first tensor that does not fit (extents >= 1). O(1).
    public static func shape(A: [Int], B: [Int]?, C: [Int], dt: [Int], length: Int) throws -> (channels: Int, modes: Int) {
        guard A.count == 3, A[0] >= 1, A[1] >= 1, A[2] == 2 else {
            throw LineaError.shapeMismatch(argument: "A", expected: "[H, N, 2] (complex as real, imaginary) with H, N >= 1", actual: "\(A)")
        }
        for (name, s) in [("B", B), ("C", C)] where s != nil && s! != A {
            throw LineaError.shapeMismatch(argument: name, expected: "\(A) (as A)", actual: "\(s!)")
        }
        guard dt == [A[0]] else { throw LineaError.shapeMismatch(argument: "dt", expected: "[\(A[0])] (one step per channel)", actual: "\(dt)") }
        guard length >= 1 else { throw LineaError.invalidArgument(argument: "length", expected: "a kernel length L >= 1", actual: "\(length)") }
        return (A[0], A[1])
    }

    /// Throws naming the first input that is not finite, a step dt that is not > 0, or a mode with Re(A) >= 0 (it does
    /// not decay: the kernel grows or never fades, and ZOH divides by A). O(inputs).
    public static func validate(A: Tensor, B: Tensor?, C: Tensor, dt: Tensor) throws {
        for (name, t) in [("A", A), ("B", B), ("C", C), ("dt", dt)] { try t?.expectFinite(name) }
        if let i = dt.scalars.firstIndex(where: { $0 <= 0 }) {
            throw LineaError.invalidArgument(argument: "dt", expected: "steps > 0", actual: "\(dt.scalars[i]) at index \(i)")
        }
        if let i = stride(from: 0, to: A.count, by: 2).first(where: { A.scalars[$0] >= 0 }) {
            throw LineaError.invalidArgument(argument: "A", expected: "real parts < 0 (decaying modes)", actual: "\(A.scalars[i]) at mode \(i / 2)")
        }
    }

    /// The kernel `K [H, L]` (f32) in `form`; B nil is all ones (S4D folds B into C). O(H·N·L), channels in parallel.
    public static func kernel(A: Tensor, B: Tensor? = nil, C: Tensor, dt: Tensor, length L: Int, form: Form = .vandermonde) throws -> Tensor {
        let (H, N) = try shape(A: A.shape, B: B?.shape, C: C.shape, dt: dt.shape, length: L)
        try validate(A: A, B: B, C: C, dt: dt)
        try MemoryBudget.check([.init("K", [H, L])])
        var K = [Float](repeating: 0, count: H * L)
        let (a, b, c, step) = (A.scalars, B?.scalars, C.scalars, dt.scalars)
        K.withUnsafeMutableBufferPointer { out in
            let po = SendablePointer(out.baseAddress!)
            Parallel.forEach(H) { h in
                // Per mode: z = dt·A and the coefficient C·B̄ = C·B·(e^z - 1)/A, in Float64.
                var z: [(Double, Double)] = [], bbar: [(Double, Double)] = [], cs: [(Double, Double)] = [], w: [(Double, Double)] = []
                for n in 0..<N {
                    let i = 2 * (h * N + n), d = Double(step[h])
                    let (ar, ai) = (Double(a[i]), Double(a[i + 1]))
                    let (zr, zi) = (d * ar, d * ai)
                    let e = Foundation.exp(zr)
                    let (er, ei) = (e * Foundation.cos(zi) - 1, e * Foundation.sin(zi))
                    let norm = ar * ar + ai * ai
                    let (qr, qi) = ((er * ar + ei * ai) / norm, (ei * ar - er * ai) / norm)  // (e^z - 1) / A
                    let (br, bi) = b.map { (Double($0[i]), Double($0[i + 1])) } ?? (1, 0)
                    let (cr, ci) = (Double(c[i]), Double(c[i + 1]))
                    let (xr, xi) = (br * qr - bi * qi, br * qi + bi * qr)  // B̄ = B·(e^z - 1)/A
                    z.append((zr, zi))
                    bbar.append((xr, xi))
                    cs.append((cr, ci))
                    w.append((cr * xr - ci * xi, cr * xi + ci * xr))
                }
                let row = po.base + h * L
                switch form {
                case .recurrence:
                    var x = bbar  // the state after an impulse: x_0 = B̄, x_{l+1} = Ā·x_l; K[l] = 2·Re(C·x_l)
                    let abar = z.map { (Foundation.exp($0.0) * Foundation.cos($0.1), Foundation.exp($0.0) * Foundation.sin($0.1)) }
                    for l in 0..<L {
                        var sum = 0.0
                        for n in 0..<N {
                            sum += cs[n].0 * x[n].0 - cs[n].1 * x[n].1
                            x[n] = (x[n].0 * abar[n].0 - x[n].1 * abar[n].1, x[n].0 * abar[n].1 + x[n].1 * abar[n].0)
                        }
                        row[l] = Float(2 * sum)
                    }
                case .vandermonde:
                    for l in 0..<L {
                        var sum = 0.0
                        let t = Double(l)
                        for n in 0..<N {
                            let m = Foundation.exp(t * z[n].0), phase = t * z[n].1
                            sum += m * (w[n].0 * Foundation.cos(phase) - w[n].1 * Foundation.sin(phase))
                        }
                        row[l] = Float(2 * sum)
                    }
                }
            }
        }
        return try Tensor(shape: [H, L], scalars: K)
    }

    /// The S4D layer's sequence map on `u [B,H,L]`: its kernel over L (`kernelForm`), then `LongConv` in `form` with the
    /// skip D. Returns `o [B,H,L]`. O(H·N·L + B·H·L log L) with fft.
    public static func forward(u: Tensor, A: Tensor, B: Tensor? = nil, C: Tensor, dt: Tensor, D: Tensor? = nil, kernelForm: Form = .vandermonde,
                               form: LongConvForm = .fft) throws -> Tensor {
        try u.expectRank(3, "u", layout: "[B, H, L]")
        let K = try kernel(A: A, B: B, C: C, dt: dt, length: u.shape[2], form: kernelForm)
        return try LongConv.forward(u: u, k: K, D: D, form: form)
    }
}
