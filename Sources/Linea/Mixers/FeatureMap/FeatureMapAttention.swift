import Foundation

/// Feature-map linear attention on host tensors in fla's layout: `q, k [B,T,H,K]`, `v [B,T,HV,V]` (HV a multiple of
/// H: value head `hv` reads q/k head `hv / (HV/H)`), output `o [B,T,HV,V]`.
public enum FeatureMapAttention {
    /// `o_t = sum_s w_ts v_s` (divided by `sum_s w_ts + 1e-10` with `normalize`), `w_ts = scale phi(q_t) . phi(k_s)`
    /// over `s <= t` (causal) or every s. `form` `.reference` builds the weights in Float64 (O(B·HV·T²·(F+V)));
    /// `.chunked` and `.recurrent` map q and k, then (causal) run linear_attn's kernel of that form with its normalizer,
    /// or (not causal) form `S = phi(K)ᵀ V` and `o = scale phi(Q) S` by GEMMs; O(B·HV·T·F·V) plus the map.
    public static func forward(q: Tensor, k: Tensor, v: Tensor, map: FeatureMap, options: FeatureMapOptions = FeatureMapOptions(),
                               form: RecurrenceForm = .chunked(size: RecurrenceForm.defaultChunkSize)) throws -> Tensor {
        let s = try RecurrenceShape(.linearAttention, q: q.shape, k: k.shape, v: v.shape, g: nil, beta: nil, state: nil)
        try map.validate(H: s.H, K: s.K)
        try Recurrence.checkForm(form)
        if let scale = options.scale, !(scale.isFinite && scale > 0) {
            throw LineaError.invalidArgument(argument: "scale", expected: "a finite number > 0", actual: "\(scale)")
        }
        if options.validate {
            for (t, name) in [(q, "q"), (k, "k"), (v, "v")] { try t.expectFinite(name) }
        }
        let F = map.featureCount(K: s.K)
        var buffers: [MemoryBudget.Buffer] = [.init("o", [s.B, s.T, s.HV, s.V])]
        if form == .reference {
            buffers.append(.init("reference features", [2, s.B, s.T, s.H, F], elementBytes: 8))
        } else {
            buffers += [.init("mapped q and k", [2, s.B, s.T, s.H, F]), .init("state", [s.B, s.HV, F, s.V]),
                        .init("kernel output", [s.B, s.T, s.HV, s.V])]
            if map.kind == .performer || map.kind == .hedgehog { buffers.append(.init("projections", [2, s.B, s.T, s.H, F])) }
        }
        if map.kind == .performer { buffers.append(.init("performer projection", [3, map.features, s.K])) }  // Float64 and a Float32 copy
        try MemoryBudget.check(buffers)
        if s.B * s.T * s.HV * s.V == 0 { return try Tensor(zeros: [s.B, s.T, s.HV, s.V]) }
        let scale = Double(options.scale ?? 1)
        let performer = map.kind == .performer ? FeatureMap.performerProjection(features: map.features, K: s.K, seed: map.seed) : nil
        let o: Tensor
        if form == .reference {
            o = reference(q: q, k: k, v: v, map: map, performer: performer, shape: s, scale: scale, options: options)
        } else {
            let p32 = performer?.map { Float($0) }
            // Performer's stabilizers only cancel in the normalized output: without the normalizer they would scale o.
            let stable = options.normalize
            let pq = map.apply(q, query: true, performer: p32, stabilized: stable)
            let pk = map.apply(k, query: false, performer: p32, stabilized: stable)
            if options.causal {
                var x = RecurrenceInputs(q: pq, k: pk, v: v, scale: Float(scale))
                (x.validate, x.allowNonFiniteOutputs, x.normalize) = (options.validate, options.allowNonFiniteOutputs, options.normalize)
                o = try Recurrence.forward(.linearAttention, x, form: form).o
            } else {
                o = nonCausal(phiQ: pq, phiK: pk, v: v, shape: s, scale: Float(scale), normalize: options.normalize)
            }
        }
        if options.validate && !options.allowNonFiniteOutputs {
            try o.checkFiniteOutput("o", hint: "a normalizer near zero (a map with features of both signs) or a Float32 overflow")
        }
        return o
    }

    /// Every query against every key, by two GEMMs per value head: the state `S = sum_s phi(k_s) v_sᵀ [F,V]`, then
    /// `o_t = scale phi(q_t)ᵀ S`, divided by `scale phi(q_t) . sum_s phi(k_s) + 1e-10` with `normalize`. O(B·HV·T·F·V).
    static func nonCausal(phiQ: Tensor, phiK: Tensor, v: Tensor, shape s: RecurrenceShape, scale: Float, normalize: Bool) -> Tensor {
        let (B, T, H, HV, V) = (s.B, s.T, s.H, s.HV, s.V)
        let F = phiQ.shape[3], group = HV / H
        var o = Allocation.zeros(B * T * HV * V)
        var state = [Float](repeating: 0, count: F * V)
        phiQ.withUnsafeBufferPointer { pq in phiK.withUnsafeBufferPointer { pk in v.withUnsafeBufferPointer { pv in
        state.withUnsafeMutableBufferPointer { st in o.withUnsafeMutableBufferPointer { out in
            for b in 0..<B {
                for hv in 0..<HV {
                    BLAS.sgemm(transA: true, m: F, n: V, k: T, a: pk.baseAddress! + (b * T * H + hv / group) * F, lda: H * F,
                               b: pv.baseAddress! + (b * T * HV + hv) * V, ldb: HV * V, c: st.baseAddress!, ldc: V)
                    BLAS.sgemm(m: T, n: V, k: F, alpha: scale, a: pq.baseAddress! + (b * T * H + hv / group) * F, lda: H * F,
                               b: st.baseAddress!, ldb: V, c: out.baseAddress! + (b * T * HV + hv) * V, ldc: HV * V)
                }
            }
        } } } } }
        if normalize {
            for b in 0..<B {
                for h in 0..<H {
                    var z = [Float](repeating: 0, count: F)
                    for t in 0..<T { for f in 0..<F { z[f] += phiK.scalars[((b * T + t) * H + h) * F + f] } }
                    for t in 0..<T {
                        var den: Float = 0
                        for f in 0..<F { den += phiQ.scalars[((b * T + t) * H + h) * F + f] * z[f] }
                        let inv = 1 / (scale * den + 1e-10)
                        for hv in h * group..<(h + 1) * group {
                            for j in 0..<V { o[((b * T + t) * HV + hv) * V + j] *= inv }
                        }
                    }
                }
            }
        }
        return Tensor(uncheckedShape: [B, T, HV, V], scalars: o)
    }

    /// The oracle: phi in Float64 and the T x T weights written out, masked when causal. O(B·HV·T²·(F+V)).
    static func reference(q: Tensor, k: Tensor, v: Tensor, map: FeatureMap, performer: [Double]?, shape s: RecurrenceShape, scale: Double,
                          options: FeatureMapOptions) -> Tensor {
        let (B, T, H, HV, V) = (s.B, s.T, s.H, s.HV, s.V)
        let F = map.featureCount(K: s.K), group = HV / H
        let pq = map.referenceApply(q, query: true, performer: performer, stabilized: options.normalize)
        let pk = map.referenceApply(k, query: false, performer: performer, stabilized: options.normalize)
        var o = [Float](repeating: 0, count: B * T * HV * V)
        let (vs, causal, normalize) = (v.scalars, options.causal, options.normalize)
        o.withUnsafeMutableBufferPointer { buffer in
            let out = SendablePointer(buffer.baseAddress!)
            Parallel.forEach(B * HV) { bh in
                let (b, hv) = (bh / HV, bh % HV), h = hv / group
                var acc = [Double](repeating: 0, count: V)
                for t in 0..<T {
                    for j in 0..<V { acc[j] = 0 }
                    var total = 0.0
                    for u in 0..<(causal ? t + 1 : T) {
                        var w = 0.0
                        for f in 0..<F { w += pq[((b * T + t) * H + h) * F + f] * pk[((b * T + u) * H + h) * F + f] }
                        w *= scale
                        total += w
                        for j in 0..<V { acc[j] += w * Double(vs[((b * T + u) * HV + hv) * V + j]) }
                    }
                    let den = normalize ? total + 1e-10 : 1
                    for j in 0..<V { out.base[((b * T + t) * HV + hv) * V + j] = Float(acc[j] / den) }
                }
            }
        }
        return Tensor(uncheckedShape: [B, T, HV, V], scalars: o)
    }
}
