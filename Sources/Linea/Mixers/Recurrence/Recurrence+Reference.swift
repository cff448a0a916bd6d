import Foundation

extension Recurrence {
    /// The oracle: the per-token recurrence in Float64, written for clarity; value head `hv` reads q/k head
    /// `hv / (HV/H)`. O(B*HV*T*K*V) time, O(K*V) per (b,hv).
    ///
    /// Per token: decay the state (`S *= a_t`), then for the delta rules `u = beta (v - S^T k)` on the decayed
    /// state (else `u = v`), `S += k u^T`, and `o = S^T (scale q)` from the updated state. kda's in-kernel
    /// activations turn the raw gate and beta into the log decay and the write strength token by token.
    static func referenceForward(_ mechanism: RecurrentMechanism, _ x: RecurrenceInputs, _ d: RecurrenceDims, scale: Double) -> RecurrenceOutput {
        let (B, T, H, HV, K, V) = (d.B, d.T, d.H, d.HV, d.K, d.V)
        var o = [Float](repeating: 0, count: B * T * HV * V)
        var finalState = x.initialState?.scalars ?? [Float](repeating: 0, count: B * HV * K * V)
        let (q, k, v, g, beta) = (x.q.scalars, x.k.scalars, x.v.scalars, x.g?.scalars, x.beta?.scalars)
        let (l2, normalize, act) = (x.useQKL2Norm, x.normalize, x.activations)
        let (aLog, dtBias) = (x.aLog?.scalars, x.dtBias?.scalars)

        o.withUnsafeMutableBufferPointer { oBuf in finalState.withUnsafeMutableBufferPointer { sBuf in
        let outP = SendablePointer(oBuf.baseAddress!), stateP = SendablePointer(sBuf.baseAddress!)
        Parallel.forEach(B * HV) { bh in
            let b = bh / HV, h = bh % HV
            var S = (0..<(K * V)).map { Double(stateP.base[bh * K * V + $0]) }
            var z = [Double](repeating: 0, count: K)  // normalizer sum of keys
            var qt = [Double](repeating: 0, count: K), kt = [Double](repeating: 0, count: K)
            var u = [Double](repeating: 0, count: V)
            for t in 0..<T {
                let row = (b * T + t) * HV + h  // index of (b, t, h) in v, g, beta and o
                let keyRow = (b * T + t) * H + h / d.group  // the q/k head value head h reads
                for i in 0..<K {
                    qt[i] = Double(q[keyRow * K + i])
                    kt[i] = Double(k[keyRow * K + i])
                }
                if l2 {
                    let qn = 1 / (qt.reduce(0) { $0 + $1 * $1 } + 1e-6).squareRoot()
                    let kn = 1 / (kt.reduce(0) { $0 + $1 * $1 } + 1e-6).squareRoot()
                    for i in 0..<K {
                        qt[i] *= qn
                        kt[i] *= kn
                    }
                }

                // 1. Decay: S <- Diag(a_t) S.
                switch mechanism.gateKind {
                case .none:
                    break
                case .perHead:
                    let a = exp(retentionLogDecay(head: h))
                    for i in 0..<(K * V) { S[i] *= a }
                case .scalar:
                    let a = exp(Double(g![row]))
                    for i in 0..<(K * V) { S[i] *= a }
                case .vector:
                    let factor = aLog.map { exp(Double($0[h])) } ?? 1  // exp(A_log) of the in-kernel gate
                    for i in 0..<K {
                        let raw = Double(g![row * K + i])
                        let a = exp(act.gateInKernel ? act.gate(raw, a: factor, bias: dtBias.map { Double($0[h * K + i]) } ?? 0) : raw)
                        for j in 0..<V { S[i * V + j] *= a }
                    }
                }

                // 2. Write: u = beta (v - S^T k) for the delta rules, else u = v; S <- S + k u^T.
                for j in 0..<V { u[j] = Double(v[row * V + j]) }
                if mechanism.isDelta {
                    let bt = act.betaSigmoid ? act.beta(Double(beta![row])) : Double(beta![row])
                    for j in 0..<V {
                        var kS = 0.0
                        for i in 0..<K { kS += kt[i] * S[i * V + j] }
                        u[j] = bt * (u[j] - kS)
                    }
                }
                for i in 0..<K {
                    for j in 0..<V { S[i * V + j] += kt[i] * u[j] }
                }

                // 3. Read: o = S^T (scale q), optionally divided by the normalizer (scale q)·z + 1e-10.
                var denominator = 1.0
                if normalize {
                    var dot = 0.0
                    for i in 0..<K {
                        z[i] += kt[i]
                        dot += scale * qt[i] * z[i]
                    }
                    denominator = dot + 1e-10
                }
                for j in 0..<V {
                    var acc = 0.0
                    for i in 0..<K { acc += scale * qt[i] * S[i * V + j] }
                    outP.base[row * V + j] = Float(acc / denominator)
                }
            }
            for i in 0..<(K * V) { stateP.base[bh * K * V + i] = Float(S[i]) }
        }
        } }
        return RecurrenceOutput(
            o: Tensor(uncheckedShape: [B, T, HV, V], scalars: o),
            finalState: Tensor(uncheckedShape: [B, HV, K, V], scalars: finalState))
    }
}
