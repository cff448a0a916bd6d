import Foundation

// Chunked form of the delta rules (DeltaNet's WY / UT-transform representation, gated as in Gated DeltaNet).
//
// In a chunk of L tokens with local cumulative log decay G_i (0 for delta_rule), the written vectors
// u_i = beta_i (v_i - (e^{g_i} S_{i-1})^T k_i) satisfy the unit lower-triangular system
//     (I + A) U = diag(beta) V - diag(beta e^G) K S_prev,    A_ij = beta_i e^{G_i - G_j} k_i·k_j  (j < i)
// so with T = (I + A)^{-1} diag(beta):  U = T V - (T diag(e^G) K) S_prev = U~ - W S_prev. Then
//     o_i   = scale [ e^{G_i} q_i^T S_prev + sum_{j<=i} e^{G_i - G_j} (q_i·k_j) u_j ]
//     S_new = e^{G_L} S_prev + sum_j e^{G_L - G_j} k_j u_j^T
// and every exponent is <= 0.

/// One value head's walk for the delta rules: its workspace and its state (inside the workspace).
struct DeltaHeadWalk: HeadWalk {
    let p: FastProblem
    let buffers: ChunkBuffers
    /// Batch entry, value head, the q/k head it reads, chunk size.
    let b: Int, h: Int, kh: Int, C: Int
    let gated: Bool
    /// Workspace: beta (C), M, Tm (C x C), Kb, W (C x K), QP = [scale e^G Q | P] (C x (K+C)) and SU = [S ; U]
    /// ((K+C) x V), so the output is one GEMM; the state lives in SU's top K rows while the chunks run. Cumulative
    /// gates of the chunk (C) in Float64.
    let space: HeadWorkspace

    init(_ p: FastProblem, _ buffers: ChunkBuffers, bh: Int, chunk C: Int) {
        let (HV, K, V) = (p.dims.HV, p.dims.K, p.dims.V)
        (self.p, self.buffers, self.C) = (p, buffers, C)
        (b, h) = (bh / HV, bh % HV)
        kh = p.keyHead(h)
        gated = p.mechanism.gateKind == .scalar
        let stateOffset = C + 2 * C * C + 2 * C * K + C * (K + C)
        space = HeadWorkspace(buffers, bh: bh, K: K, V: V, floats: stateOffset + (K + C) * V, stateOffset: stateOffset,
                              gates: C)
    }

    func finish() { space.release() }

    func step(_ t0: Int, _ L: Int) {
        let (T, H, HV, K, V) = (p.dims.T, p.dims.H, p.dims.HV, p.dims.K, p.dims.V)
        let (work, G) = (space.work, space.G)
        let bt = work, M = bt + C, Tm = M + C * C, Kb = Tm + C * C, W = Kb + C * K, QP = W + C * K, S = QP + C * (K + C)
        var sum = 0.0
        for i in 0..<L {
            let row = (b * T + t0 + i) * HV + h
            if gated { sum += Double(buffers.g![row]) }
            G[i] = sum
            bt[i] = buffers.beta![row]
        }
        let chunk = DeltaChunk(
            L: L, C: C, K: K, V: V, ldk: H * K, ldv: HV * V, scale: p.scale, gated: gated,
            q: buffers.q + p.keyOffset(b, t0, kh), k: buffers.k + p.keyOffset(b, t0, kh),
            v: buffers.v + p.offset(b, t0, h, width: V), o: buffers.o + p.offset(b, t0, h, width: V),
            S: S, G: G, beta: bt, M: M, Tm: Tm, Kb: Kb, W: W, QP: QP)
        chunk.run()
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

    /// O(L*K*V + L^2*(K+V) + L^3).
    func run() {
        // 1. M = K K^T; A_ij = beta_i e^{G_i - G_j} M_ij (j < i).
        BLAS.sgemm(transB: true, m: L, n: L, k: K, a: k, lda: ldk, b: k, ldb: ldk, beta: 0, c: M, ldc: C)
        for i in 0..<L {
            let row = M + i * C
            if gated { GatedChunk.multiplyByExpDifference(row, G[i], G, i) }
            VectorMath.scale(row, count: i, by: beta[i])
        }
        // 2. Tm = (I + A)^{-1} by forward substitution on rows: T_i = e_i - sum_{j<i} A_ij T_j (T_j lives in cols <= j);
        //    then Tm <- Tm diag(beta).
        for i in 0..<L {
            let row = Tm + i * C
            row.update(repeating: 0, count: L)
            row[i] = 1
            for j in 0..<i {
                let a = M[i * C + j]
                if a != 0 { RecurrenceSIMD.axpy(row, -a, Tm + j * C, j + 1) }
            }
        }
        for i in 0..<L {
            for j in 0...i { Tm[i * C + j] *= beta[j] }
        }
        // 3. W = Tm diag(e^G) K,  U = Tm V - W S_prev.
        if gated {
            for j in 0..<L { GatedChunk.scaleRow(Kb + j * K, k + j * ldk, VectorMath.exp(Float(G[j])), K) }
            BLAS.sgemm(m: L, n: K, k: L, a: Tm, lda: C, b: Kb, ldb: K, beta: 0, c: W, ldc: K)
        } else {
            BLAS.sgemm(m: L, n: K, k: L, a: Tm, lda: C, b: k, ldb: ldk, beta: 0, c: W, ldc: K)
        }
        let U = S + K * V
        BLAS.sgemm(m: L, n: V, k: L, a: Tm, lda: C, b: v, ldb: ldv, beta: 0, c: U, ldc: V)
        BLAS.sgemm(m: L, n: V, k: K, alpha: -1, a: W, lda: K, b: S, ldb: V, beta: 1, c: U, ldc: V)
        // 4. o = [scale e^{G_i} q_i | P] [S_prev ; U], P_ij = scale e^{G_i - G_j} q_i·k_j (j <= i).
        GatedChunk.outputWithScalarDecay(L: L, C: C, K: K, V: V, q: q, k: k, ldk: ldk, scale: scale, G: gated ? G : nil,
                                         qa: QP, stateAndValues: S, o: o, ldo: ldv)
        // 5. S = e^{G_L} S + (e^{G_L - G_j} k_j)^T U.
        GatedChunk.carryStateWithScalarDecay(L: L, K: K, V: V, k: k, ldk: ldk, G: gated ? G : nil, decayedKeys: Kb, values: U, S: S)
    }
}
