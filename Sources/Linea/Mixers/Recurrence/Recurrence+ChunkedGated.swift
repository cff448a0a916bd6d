import Foundation

// Chunked form of the non-delta mechanisms (linear_attn, retention, simple_gla, gla).
//
// Inside a chunk of L tokens, with local cumulative log decays G_i = g_1 + ... + g_i (G <= 0, decreasing):
//   o_i   = scale * [ (q_i ∘ e^{G_i})^T S_prev + sum_{j<=i} (q_i ∘ e^{G_i - G_j})·k_j v_j ]
//   S_new = Diag(e^{G_L}) S_prev + sum_j (k_j ∘ e^{G_L - G_j}) v_j^T
// Every exponent is <= 0 except in the GLA intra-chunk factorization, where it is bounded by `safeSpan`.

extension Recurrence {
    /// Largest log-gate span that the GLA intra-chunk term splits as `q e^{G_i - R}` times `k e^{R - G_j}`:
    /// factors stay within `[e^-60, e^60]` (1e-26 to 1e26, far inside Float32's normal range even after a
    /// K-term sum); wider spans use smaller blocks or a direct loop. (At 40, 3% of 64-token chunks with gates
    /// uniform in [-1, 0) crossed the limit at K = 128 and took the slower path.)
    static let safeSpan = 60.0
    /// Sub-block size for GLA chunks whose gate span exceeds `safeSpan`.
    static let glaSubBlock = 16
}

/// One value head's walk for the non-delta mechanisms: its workspace, its state (inside the workspace) and its gates.
struct GatedHeadWalk: HeadWalk {
    let p: FastProblem
    let buffers: ChunkBuffers
    /// Batch entry, value head, the q/k head it reads, chunk size.
    let b: Int, h: Int, kh: Int, C: Int
    let kind: GateKind
    let headLogDecay: Double
    /// The vector width gla's decayed rows run at (read once: a task-local lookup per chunk would cost more).
    let kernels = CPUKernels.current
    /// Workspace: Qr, Kr (C x K), QA = [scale e^G Q | A] (C x (K+C)) and SV = [S ; V_chunk] ((K+C) x V), so the
    /// output is one GEMM; the state lives in SV's top K rows while the chunks run; gla also packs the chunk's q and
    /// k rows (C x K each, after the rest). Cumulative gates of the chunk, C x (K for gla, else 1), in Float64.
    let space: HeadWorkspace

    init(_ p: FastProblem, _ buffers: ChunkBuffers, bh: Int, chunk C: Int) {
        let (HV, K, V) = (p.dims.HV, p.dims.K, p.dims.V)
        (self.p, self.buffers, self.C) = (p, buffers, C)
        (b, h) = (bh / HV, bh % HV)
        kh = p.keyHead(h)
        kind = p.mechanism.gateKind
        headLogDecay = Recurrence.retentionLogDecay(head: h)
        let stateOffset = 2 * C * K + C * (K + C), packed = kind == .vector ? 2 * C * K : 0
        space = HeadWorkspace(buffers, bh: bh, K: K, V: V, floats: stateOffset + (K + C) * V + packed,
                              stateOffset: stateOffset, gates: C * (kind == .vector ? K : 1))
    }

    func finish() { space.release() }

    func step(_ t0: Int, _ L: Int) {
        let (T, H, HV, K, V) = (p.dims.T, p.dims.H, p.dims.HV, p.dims.K, p.dims.V)
        let (work, G) = (space.work, space.G)
        let Qr = work, Kr = Qr + C * K, QA = Kr + C * K, S = QA + C * (K + C), Qc = S + (K + C) * V, Kc = Qc + C * K
        var (q, k, ldk) = (buffers.q + p.keyOffset(b, t0, kh), buffers.k + p.keyOffset(b, t0, kh), H * K)
        if kind == .vector {
            buffers.packKeys(p, b: b, t0: t0, L: L, kh: kh, q: Qc, k: Kc)
            (q, k, ldk) = (UnsafePointer(Qc), UnsafePointer(Kc), K)
        }
        let chunk = GatedChunk(
            L: L, C: C, K: K, V: V, ldk: ldk, ldv: HV * V, scale: p.scale, q: q, k: k,
            v: buffers.v + p.offset(b, t0, h, width: V), o: buffers.o + p.offset(b, t0, h, width: V),
            S: S, G: G, Qr: Qr, Kr: Kr, QA: QA)
        switch kind {
        case .none:
            chunk.runScalar(decays: false)
        case .perHead:
            for i in 0..<L { G[i] = Double(i + 1) * headLogDecay }
            chunk.runScalar(decays: true)
        case .scalar:
            var sum = 0.0
            for i in 0..<L {
                sum += Double(buffers.g![(b * T + t0 + i) * HV + h])
                G[i] = sum
            }
            chunk.runScalar(decays: true)
        case .vector:
            buffers.cumulativeVectorGates(p, b: b, t0: t0, L: L, h: h, into: G)
            chunk.runVector(kernels)
        }
    }
}

/// One chunk of one (b,h): pointers into the inputs (row strides `ldk`, `ldv`), the state and the workspace.
struct GatedChunk {
    let L: Int, C: Int, K: Int, V: Int, ldk: Int, ldv: Int
    let scale: Float
    let q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>
    let o: UnsafeMutablePointer<Float>
    let S: UnsafeMutablePointer<Float>
    /// Local cumulative log decays, Float64 (differences of long sums keep their digits): L scalars, or L x K for gla.
    let G: UnsafePointer<Double>
    /// Scratch: L x K (two).
    let Qr: UnsafeMutablePointer<Float>, Kr: UnsafeMutablePointer<Float>
    /// `[scale e^G Q | A]`, L x (K+L) with row stride K+C; `S` (K x V) is followed by room for the chunk's V (L x V).
    let QA: UnsafeMutablePointer<Float>

    /// Scalar (or no) decay: linear_attn, retention, simple_gla. O(L*K*V + L^2*(K+V)).
    /// The output is one GEMM: `o = [scale e^G Q | A] [S_prev ; V]` with `A_ij = scale e^{G_i - G_j} q_i·k_j`, j <= i.
    func runScalar(decays: Bool) {
        let Vc = S + K * V  // the chunk's values, copied under the state
        for i in 0..<L { (Vc + i * V).update(from: v + i * ldv, count: V) }
        Self.outputWithScalarDecay(L: L, C: C, K: K, V: V, q: q, k: k, ldk: ldk, scale: scale, G: decays ? G : nil,
                                   qa: QA, stateAndValues: S, o: o, ldo: ldv)
        Self.carryStateWithScalarDecay(L: L, K: K, V: V, k: k, ldk: ldk, G: decays ? G : nil, decayedKeys: Kr, values: Vc, S: S)
    }

    /// Vector decay over the K rows (gla). G is L x K. O(L*K*V + L^2*(K+V)) plus O(L*K*16) exps for steep gates.
    /// The output is one GEMM: `o = [scale (q_i ∘ e^{G_i}) | A] [S_prev ; V]`.
    func runVector(_ kernels: CPUKernels) {
        let ld = K + C, Vc = S + K * V
        Self.decayedQueriesAndKeys(L: L, K: K, ld: ld, q: q, k: k, ldk: ldk, scale: scale, G: G, QA: QA, Kr: Kr, kernels)
        // Intra-chunk scores A_ij = scale sum_c q_ic k_jc e^{G_ic - G_jc}, j <= i.
        Self.vectorScores(L: L, K: K, k: k, ldk: ldk, G: G, decayedKeys: Kr, scratch: Qr, kernels,
                          DecayedScores(x: q, ldx: ldk, alpha: scale, A: QA + K, lda: ld))
        for i in 0..<L { (Vc + i * V).update(from: v + i * ldv, count: V) }
        Self.vectorOutputAndState(L: L, K: K, V: V, ld: ld, G: G, QA: QA, Kr: Kr, S: S, o: o, ldo: ldv)
    }

    /// The per-channel decays of a chunk's queries and keys: `QA`'s left block (row stride `ld`) = `scale q_i ∘ e^{G_i}`,
    /// `Kr_j = k_j ∘ e^{G_L - G_j}` (L x K), both exponents <= 0. O(L·K).
    static func decayedQueriesAndKeys(L: Int, K: Int, ld: Int, q: UnsafePointer<Float>, k: UnsafePointer<Float>, ldk: Int, scale: Float,
                                      G: UnsafePointer<Double>, QA: UnsafeMutablePointer<Float>, Kr: UnsafeMutablePointer<Float>,
                                      _ kernels: CPUKernels) {
        kernels.scaledByExp(rows: L, n: K, y: QA, ldy: ld, x: q, ldx: ldk, e: G, lde: K, minus: nil, ldr: 0)
        for i in 0..<L { VectorMath.scale(QA + i * ld, count: K, by: scale) }
        kernels.scaledByExp(rows: L, n: K, y: Kr, ldy: K, x: k, ldx: ldk, e: G + (L - 1) * K, lde: 0, minus: G, ldr: K)
    }

    /// Output and state of a chunk under a per-channel decay, from `QA = [scale q ∘ e^G | A]` (L x (K+L), row stride
    /// `ld`; A's entries above the diagonal are zeroed here), `X` (L x V: the values or U) stored right below the state S
    /// and `Kr` from `decayedQueriesAndKeys`: `o = QA [S ; X]`, then `S = Diag(e^{G_L}) S + Krᵀ X`. O(L·V·(K+L) + K·V·L).
    static func vectorOutputAndState(L: Int, K: Int, V: Int, ld: Int, G: UnsafePointer<Double>, QA: UnsafeMutablePointer<Float>,
                                     Kr: UnsafePointer<Float>, S: UnsafeMutablePointer<Float>, o: UnsafeMutablePointer<Float>, ldo: Int) {
        for i in 0..<L { (QA + K + i * ld + i + 1).update(repeating: 0, count: L - i - 1) }
        BLAS.sgemm(m: L, n: V, k: K + L, a: QA, lda: ld, b: S, ldb: V, beta: 0, c: o, ldc: ldo)
        let last = G + (L - 1) * K
        for c in 0..<K { VectorMath.scale(S + c * V, count: V, by: VectorMath.exp(Float(last[c]))) }
        BLAS.sgemm(transA: true, m: K, n: V, k: L, a: Kr, lda: K, b: S + K * V, ldb: V, beta: 1, c: S, ldc: V)
    }

    /// Where `vectorScores` writes `A_ij = alpha sum_c x_ic k_jc e^{G_ic - G_jc}`: the left rows `x` (row stride `ldx`)
    /// and the L x L output `A` (row stride `lda`).
    struct DecayedScores {
        let x: UnsafePointer<Float>, ldx: Int, alpha: Float, A: UnsafeMutablePointer<Float>, lda: Int
    }

    /// Intra-chunk scores under a per-channel decay, for each target: `A_ij = alpha sum_c x_ic k_jc e^{G_ic - G_jc}`
    /// for `j <= i` (entries above the diagonal are left undefined). `G` is L x K; `decayedKeys` holds `k ∘ e^{G_L - G}`
    /// (L x K) on entry and again on return; `scratch` is L x K. O(targets · L²·K) plus O(L·K·16) exps for steep gates.
    static func vectorScores(L: Int, K: Int, k: UnsafePointer<Float>, ldk: Int, G: UnsafePointer<Double>,
                             decayedKeys Kr: UnsafeMutablePointer<Float>, scratch Xr: UnsafeMutablePointer<Float>,
                             _ kernels: CPUKernels, _ first: DecayedScores, _ second: DecayedScores? = nil) {
        @inline(__always) func each(_ body: (DecayedScores) -> Void) {
            body(first)
            if let second { body(second) }
        }
        let last = G + (L - 1) * K
        var span = 0.0
        for c in 0..<K { span = max(span, -last[c]) }
        if span <= Recurrence.safeSpan {
            // One reference point R = G_L: x_i e^{G_i - R} lies in [1, e^span], k_j e^{R - G_j} (= Kr) in (0, 1].
            // (Exponentiating G_i - R directly keeps 3e-7 accuracy; the left block times e^{-G_L} gave 7e-7.)
            each { t in
                kernels.scaledByExp(rows: L, n: K, y: Xr, ldy: K, x: t.x, ldx: t.ldx, e: G, lde: K, minus: last, ldr: 0)
                BLAS.sgemm(transB: true, m: L, n: L, k: K, alpha: t.alpha, a: Xr, lda: K, b: Kr, ldb: K, beta: 0, c: t.A, ldc: t.lda)
            }
            return
        }
        // Steep gates: per column block J = [s, e) the reference R = G_{e-1} makes both factors <= 1 for the rows below
        // the block; the block's own diagonal part is factorized when its span is small, otherwise summed directly with
        // e^{G_i - G_j}, j <= i. Kr is borrowed, then restored.
        var s = 0
        while s < L {
            let e = min(s + Recurrence.glaSubBlock, L)
            let ref = G + (e - 1) * K
            var blockSpan = 0.0
            for c in 0..<K { blockSpan = max(blockSpan, G[s * K + c] - ref[c]) }
            let factorDiagonal = blockSpan <= Recurrence.safeSpan
            let rowStart = factorDiagonal ? s : e
            if rowStart < L {
                kernels.scaledByExp(rows: e - s, n: K, y: Kr + s * K, ldy: K, x: k + s * ldk, ldx: ldk, e: ref, lde: 0,
                                    minus: G + s * K, ldr: K)
            }
            each { t in
                if rowStart < L {
                    kernels.scaledByExp(rows: L - rowStart, n: K, y: Xr + rowStart * K, ldy: K, x: t.x + rowStart * t.ldx,
                                        ldx: t.ldx, e: G + rowStart * K, lde: K, minus: ref, ldr: 0)
                    BLAS.sgemm(transB: true, m: L - rowStart, n: e - s, k: K, alpha: t.alpha, a: Xr + rowStart * K, lda: K,
                               b: Kr + s * K, ldb: K, beta: 0, c: t.A + rowStart * t.lda + s, ldc: t.lda)
                }
                if !factorDiagonal {
                    for i in s..<e {
                        for j in s...i {
                            t.A[i * t.lda + j] = t.alpha * decayedDot(t.x + i * t.ldx, k + j * ldk, G + i * K, G + j * K, K)
                        }
                    }
                }
            }
            s = e
        }
        kernels.scaledByExp(rows: L, n: K, y: Kr, ldy: K, x: k, ldx: ldk, e: last, lde: 0, minus: G, ldr: K)
    }

    /// Chunk output under a scalar decay (or none when `G` is nil), as one GEMM:
    /// `o = [scale e^{G_i} q_i | A] [S ; X]` with `A_ij = scale e^{G_i - G_j} q_i·k_j` for `j <= i`, where `X`
    /// (L x V, the values or the delta rule's U) is stored right below the state S. `qa` is L x (K+C) workspace.
    /// O(L·K·(L+V) + L²·V).
    static func outputWithScalarDecay(
        L: Int, C: Int, K: Int, V: Int, q: UnsafePointer<Float>, k: UnsafePointer<Float>, ldk: Int, scale: Float,
        G: UnsafePointer<Double>?, qa: UnsafeMutablePointer<Float>, stateAndValues S: UnsafePointer<Float>,
        o: UnsafeMutablePointer<Float>, ldo: Int
    ) {
        let ld = K + C
        for i in 0..<L { scaleRow(qa + i * ld, q + i * ldk, G.map { scale * VectorMath.exp(Float($0[i])) } ?? scale, K) }
        BLAS.sgemm(transB: true, m: L, n: L, k: K, alpha: scale, a: q, lda: ldk, b: k, ldb: ldk, beta: 0, c: qa + K, ldc: ld)
        for i in 0..<L {
            let row = qa + K + i * ld
            if let G { multiplyByExpDifference(row, G[i], G, i + 1) }
            (row + i + 1).update(repeating: 0, count: L - i - 1)
        }
        BLAS.sgemm(m: L, n: V, k: K + L, a: qa, lda: ld, b: S, ldb: V, beta: 0, c: o, ldc: ldo)
    }

    /// State carried past a chunk under a scalar decay (or none when `G` is nil):
    /// `S = e^{G_L} S + (e^{G_L - G_j} k_j)ᵀ X`, with `X` (L x V) the values or U. O(L·K·V).
    static func carryStateWithScalarDecay(
        L: Int, K: Int, V: Int, k: UnsafePointer<Float>, ldk: Int, G: UnsafePointer<Double>?,
        decayedKeys: UnsafeMutablePointer<Float>, values X: UnsafePointer<Float>, S: UnsafeMutablePointer<Float>
    ) {
        if let G {
            let last = G[L - 1]
            for j in 0..<L { scaleRow(decayedKeys + j * K, k + j * ldk, VectorMath.exp(Float(last - G[j])), K) }
            VectorMath.scale(S, count: K * V, by: VectorMath.exp(Float(last)))
            BLAS.sgemm(transA: true, m: K, n: V, k: L, a: decayedKeys, lda: K, b: X, ldb: V, beta: 1, c: S, ldc: V)
        } else {
            BLAS.sgemm(transA: true, m: K, n: V, k: L, a: k, lda: ldk, b: X, ldb: V, beta: 1, c: S, ldc: V)
        }
    }

    /// `row[j] *= exp(gi - G[j])` for `j < n`; callers pass `n <= i + 1`, so every exponent is <= 0.
    /// The exponent is formed in Float64, then exponentiated in Float32. O(n).
    @inline(__always)
    static func multiplyByExpDifference(_ row: UnsafeMutablePointer<Float>, _ gi: Double, _ G: UnsafePointer<Double>, _ n: Int) {
        var j = 0
        let gi8 = SIMD8<Double>(repeating: gi)
        while j + 8 <= n {
            let rp = UnsafeMutableRawPointer(row + j)
            let e = VectorMath.exp(RecurrenceSIMD.narrow(gi8 - UnsafeRawPointer(G + j).loadUnaligned(as: SIMD8<Double>.self)))
            rp.storeBytes(of: rp.loadUnaligned(as: SIMD8<Float>.self) * e, as: SIMD8<Float>.self)
            j += 8
        }
        while j < n {
            row[j] *= VectorMath.exp(Float(gi - G[j]))
            j += 1
        }
    }

    /// `y[c] = a * x[c]` for `c < n`. O(n).
    @inline(__always)
    static func scaleRow(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ a: Float, _ n: Int) {
        var c = 0
        let a8 = SIMD8<Float>(repeating: a)
        while c + 8 <= n {
            UnsafeMutableRawPointer(y + c).storeBytes(of: a8 * UnsafeRawPointer(x + c).loadUnaligned(as: SIMD8<Float>.self), as: SIMD8<Float>.self)
            c += 8
        }
        while c < n {
            y[c] = a * x[c]
            c += 1
        }
    }

    /// `sum_c x[c] y[c] exp(gx[c] - gy[c])` with `gx <= gy` elementwise (a later token's cumulative gate). O(n).
    @inline(__always)
    static func decayedDot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ gx: UnsafePointer<Double>, _ gy: UnsafePointer<Double>, _ n: Int) -> Float {
        var acc8 = SIMD8<Float>(repeating: 0)
        var c = 0
        while c + 8 <= n {
            let d = UnsafeRawPointer(gx + c).loadUnaligned(as: SIMD8<Double>.self) - UnsafeRawPointer(gy + c).loadUnaligned(as: SIMD8<Double>.self)
            acc8 += UnsafeRawPointer(x + c).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(y + c).loadUnaligned(as: SIMD8<Float>.self) * VectorMath.exp(RecurrenceSIMD.narrow(d))
            c += 8
        }
        var acc = acc8.sum()
        while c < n {
            acc += x[c] * y[c] * VectorMath.exp(Float(gx[c] - gy[c]))
            c += 1
        }
        return acc
    }
}
