import Foundation

// Chunked form of the delta rules (DeltaNet's WY / UT-transform representation, gated as in Gated DeltaNet).
//
// In a chunk of L tokens with local cumulative log decay G_i (0 for delta_rule), the written vectors
// u_i = beta_i (v_i - (e^{g_i} S_{i-1})^T k_i) satisfy the unit lower-triangular system
//     (I + A) U = diag(beta) V - diag(beta e^G) K S_prev,    A_ij = beta_i e^{G_i - G_j} k_i·k_j  (j < i)
// so with T = (I + A)^{-1} diag(beta):  U = T V - (T diag(e^G) K) S_prev = U~ - W S_prev. Then
//     o_i   = scale [ e^{G_i} q_i^T S_prev + sum_{j<=i} e^{G_i - G_j} (q_i·k_j) u_j ]
//     S_new = e^{G_L} S_prev + sum_j e^{G_L - G_j} k_j u_j^T
// and every exponent is <= 0. kda's per-channel decay (G_i a K-vector) turns the scalar factors into decayed rows:
//     A_ij = beta_i sum_c k_ic k_jc e^{G_ic - G_jc},  W = T (K ∘ e^G),  o_i = scale [(q_i ∘ e^{G_i})^T S_prev + sum_{j<=i} P_ij u_j]
//     with P_ij = sum_c q_ic k_jc e^{G_ic - G_jc},  S_new = Diag(e^{G_L}) S_prev + sum_j (k_j ∘ e^{G_L - G_j}) u_j^T
// (fla's naive_chunk_kda), the intra-chunk sums factorized as gla's (GatedChunk.vectorScores).

/// One value head's walk for the delta rules: its workspace and its state (inside the workspace).
struct DeltaHeadWalk: HeadWalk {
    let p: FastProblem
    let buffers: ChunkBuffers
    /// Batch entry, value head, the q/k head it reads, chunk size.
    let b: Int, h: Int, kh: Int, C: Int
    /// A scalar gate (gated_delta_rule) or a per-channel one (kda).
    let gated: Bool, vector: Bool
    /// The vector width kda's decayed rows run at (read once: a task-local lookup per chunk would cost more).
    let kernels = CPUKernels.current
    /// Workspace: beta (C), M, Tm (C x C), Kb, W (C x K), QP = [scale e^G Q | P] (C x (K+C)) and SU = [S ; U]
    /// ((K+C) x V), so the output is one GEMM; the state lives in SU's top K rows while the chunks run; kda also packs
    /// the chunk's q and k rows and keeps its decayed keys (C x K each, after the rest). Cumulative gates of the chunk,
    /// C x (K for kda, else 1), in Float64.
    let space: HeadWorkspace

    init(_ p: FastProblem, _ buffers: ChunkBuffers, bh: Int, chunk C: Int) {
        let (HV, K, V) = (p.dims.HV, p.dims.K, p.dims.V)
        (self.p, self.buffers, self.C) = (p, buffers, C)
        (b, h) = (bh / HV, bh % HV)
        kh = p.keyHead(h)
        (gated, vector) = (p.mechanism.gateKind == .scalar, p.mechanism.gateKind == .vector)
        let stateOffset = C + 2 * C * C + 2 * C * K + C * (K + C)
        space = HeadWorkspace(buffers, bh: bh, K: K, V: V, floats: stateOffset + (K + C) * V + (vector ? 3 * C * K : 0),
                              stateOffset: stateOffset, gates: vector ? C * K : C)
    }

    func finish() { space.release() }

    func step(_ t0: Int, _ L: Int) {
        let (T, H, HV, K, V) = (p.dims.T, p.dims.H, p.dims.HV, p.dims.K, p.dims.V)
        let (work, G) = (space.work, space.G)
        let bt = work, M = bt + C, Tm = M + C * C, Kb = Tm + C * C, W = Kb + C * K, QP = W + C * K, S = QP + C * (K + C)
        let Qc = S + (K + C) * V, Kc = Qc + C * K, Kr = Kc + C * K  // kda only
        var (q, k, ldk) = (buffers.q + p.keyOffset(b, t0, kh), buffers.k + p.keyOffset(b, t0, kh), H * K)
        var sum = 0.0
        for i in 0..<L {
            let row = (b * T + t0 + i) * HV + h
            if gated { sum += Double(buffers.g![row]) }
            if !vector { G[i] = sum }
            bt[i] = buffers.beta![row]
        }
        if vector {
            buffers.packKeys(p, b: b, t0: t0, L: L, kh: kh, q: Qc, k: Kc)
            buffers.cumulativeVectorGates(p, b: b, t0: t0, L: L, h: h, into: G)
            (q, k, ldk) = (UnsafePointer(Qc), UnsafePointer(Kc), K)
        }
        let chunk = DeltaChunk(
            L: L, C: C, K: K, V: V, ldk: ldk, ldv: HV * V, scale: p.scale, gated: gated,
            q: q, k: k, v: buffers.v + p.offset(b, t0, h, width: V), o: buffers.o + p.offset(b, t0, h, width: V),
            S: S, G: G, beta: bt, M: M, Tm: Tm, Kb: Kb, W: W, QP: QP, Kr: Kr)
        if vector { chunk.runVector(kernels) } else { chunk.run() }
    }
}

/// One chunk of one (b,h) for the delta rules: input pointers (row strides `ldk`, `ldv`), state, workspace.
struct DeltaChunk {
    let L: Int, C: Int, K: Int, V: Int, ldk: Int, ldv: Int
    let scale: Float
    let gated: Bool
    let q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>
    let o: UnsafeMutablePointer<Float>
    let S: UnsafeMutablePointer<Float>
    let G: UnsafePointer<Double>, beta: UnsafePointer<Float>
    let M: UnsafeMutablePointer<Float>, Tm: UnsafeMutablePointer<Float>
    let Kb: UnsafeMutablePointer<Float>, W: UnsafeMutablePointer<Float>
    /// `[scale e^G Q | P]`, L x (K+L) with row stride K+C; `S` (K x V) is followed by room for U (L x V).
    let QP: UnsafeMutablePointer<Float>
    /// kda: the decayed keys `k_j ∘ e^{G_L - G_j}` (L x K).
    let Kr: UnsafeMutablePointer<Float>

    /// O(L*K*V + L^2*(K+V) + L^3).
    func run() {
        // 1. M = K K^T; A_ij = beta_i e^{G_i - G_j} M_ij (j < i).
        BLAS.sgemm(transB: true, m: L, n: L, k: K, a: k, lda: ldk, b: k, ldb: ldk, beta: 0, c: M, ldc: C)
        for i in 0..<L {
            let row = M + i * C
            if gated { GatedChunk.multiplyByExpDifference(row, G[i], G, i) }
            VectorMath.scale(row, count: i, by: beta[i])
        }
        // 2. Tm = (I + A)^{-1} diag(beta).
        Self.inverseTimesBeta(L: L, C: C, A: M, beta: beta, Tm: Tm)
        // 3. W = Tm diag(e^G) K,  U = Tm V - W S_prev.
        if gated {
            for j in 0..<L { GatedChunk.scaleRow(Kb + j * K, k + j * ldk, VectorMath.exp(Float(G[j])), K) }
        }
        Self.writeVectors(L: L, C: C, K: K, V: V, Tm: Tm, keys: gated ? UnsafePointer(Kb) : k, ldkeys: gated ? K : ldk, v: v, ldv: ldv, W: W, S: S)
        // 4. o = [scale e^{G_i} q_i | P] [S_prev ; U], P_ij = scale e^{G_i - G_j} q_i·k_j (j <= i).
        GatedChunk.outputWithScalarDecay(L: L, C: C, K: K, V: V, q: q, k: k, ldk: ldk, scale: scale, G: gated ? G : nil,
                                         qa: QP, stateAndValues: S, o: o, ldo: ldv)
        // 5. S = e^{G_L} S + (e^{G_L - G_j} k_j)^T U.
        GatedChunk.carryStateWithScalarDecay(L: L, K: K, V: V, k: k, ldk: ldk, G: gated ? G : nil, decayedKeys: Kb, values: S + K * V, S: S)
    }

    /// kda's chunk: the per-channel decay enters every product through the decayed rows of q and k (G is L x K, q and k
    /// packed with ldk = K). O(L*K*V + L^2*(K+V) + L^3) plus O(L*K*16) exps for steep gates.
    func runVector(_ kernels: CPUKernels) {
        let ld = K + C
        // 1. QP's left block scale q_i ∘ e^{G_i}; Kr_j = k_j ∘ e^{G_L - G_j}.
        GatedChunk.decayedQueriesAndKeys(L: L, K: K, ld: ld, q: q, k: k, ldk: ldk, scale: scale, G: G, QA: QP, Kr: Kr, kernels)
        // 2. P_ij = scale sum_c q_ic k_jc e^{G_ic - G_jc} (j <= i) into QP's right block, and the same with k_i for M.
        GatedChunk.vectorScores(L: L, K: K, k: k, ldk: ldk, G: G, decayedKeys: Kr, scratch: Kb, kernels,
                                .init(x: q, ldx: ldk, alpha: scale, A: QP + K, lda: ld), .init(x: k, ldx: ldk, alpha: 1, A: M, lda: C))
        // 3. A_ij = beta_i M_ij (j < i); Tm = (I + A)^{-1} diag(beta).
        for i in 0..<L { VectorMath.scale(M + i * C, count: i, by: beta[i]) }
        Self.inverseTimesBeta(L: L, C: C, A: M, beta: beta, Tm: Tm)
        // 4. W = Tm (K ∘ e^G), U = Tm V - W S_prev.
        kernels.scaledByExp(rows: L, n: K, y: Kb, ldy: K, x: k, ldx: ldk, e: G, lde: K, minus: nil, ldr: 0)
        Self.writeVectors(L: L, C: C, K: K, V: V, Tm: Tm, keys: Kb, ldkeys: K, v: v, ldv: ldv, W: W, S: S)
        // 5. o = QP [S_prev ; U], then S = Diag(e^{G_L}) S_prev + Krᵀ U.
        GatedChunk.vectorOutputAndState(L: L, K: K, V: V, ld: ld, G: G, QA: QP, Kr: Kr, S: S, o: o, ldo: ldv)
    }

    /// `Tm = (I + A)^{-1} diag(beta)` for A strictly lower triangular (L x L in `A`, row stride C; the diagonal and
    /// above are not read), by forward substitution on rows: `T_i = e_i - sum_{j<i} A_ij T_j` (T_j lives in cols <= j).
    /// O(L³/3).
    static func inverseTimesBeta(L: Int, C: Int, A: UnsafePointer<Float>, beta: UnsafePointer<Float>, Tm: UnsafeMutablePointer<Float>) {
        for i in 0..<L {
            let row = Tm + i * C
            row.update(repeating: 0, count: L)
            row[i] = 1
            for j in 0..<i {
                let a = A[i * C + j]
                if a != 0 { RecurrenceSIMD.axpy(row, -a, Tm + j * C, j + 1) }
            }
        }
        for i in 0..<L {
            for j in 0...i { Tm[i * C + j] *= beta[j] }
        }
    }

    /// The WY write vectors: `W = Tm X` (L x K; X the decayed keys, row stride `ldkeys`) and `U = Tm V - W S_prev`, U
    /// (L x V) stored right below the state S (K x V). O(L²·(K+V) + L·K·V).
    static func writeVectors(L: Int, C: Int, K: Int, V: Int, Tm: UnsafePointer<Float>, keys: UnsafePointer<Float>, ldkeys: Int,
                             v: UnsafePointer<Float>, ldv: Int, W: UnsafeMutablePointer<Float>, S: UnsafeMutablePointer<Float>) {
        let U = S + K * V
        BLAS.sgemm(m: L, n: K, k: L, a: Tm, lda: C, b: keys, ldb: ldkeys, beta: 0, c: W, ldc: K)
        BLAS.sgemm(m: L, n: V, k: L, a: Tm, lda: C, b: v, ldb: ldv, beta: 0, c: U, ldc: V)
        BLAS.sgemm(m: L, n: V, k: K, alpha: -1, a: W, lda: K, b: S, ldb: V, beta: 1, c: U, ldc: V)
    }
}
