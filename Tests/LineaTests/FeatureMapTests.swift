import Foundation
import Linea
import Testing

@Suite struct FeatureMapTests {
    /// Every map's fast forms (chunked 64 and 16, recurrent) equal its Float64 reference, causal and not, with and
    /// without the normalizer, with grouped value heads and a sequence crossing several chunks.
    @Test(arguments: FeatureMapKind.allCases)
    func fastFormsEqualTheReference(_ kind: FeatureMapKind) throws {
        let x = try FeatureMapFamily.inputs(kind, B: 2, T: 70, H: 2, HV: 4, K: 8, V: 12, width: 6, seed: 7)
        let map = FeatureMap(kind, features: 48, seed: 3, weights: kind.weightInput.flatMap { x[$0] })
        for causal in [true, false] {
            for normalize in [false, true] {
                let options = FeatureMapOptions(causal: causal, normalize: normalize, scale: normalize ? nil : 0.5)
                let want = try FeatureMapAttention.forward(q: x["q"]!, k: x["k"]!, v: x["v"]!, map: map, options: options, form: .reference)
                for form in [RecurrenceForm.chunked(size: 64), .chunked(size: 16), .recurrent] {
                    let got = try FeatureMapAttention.forward(q: x["q"]!, k: x["k"]!, v: x["v"]!, map: map, options: options, form: form)
                    let e = ErrorStats(got, want)
                    #expect(got.shape == [2, 70, 4, 12] && e.relativeRMS <= 1e-5, "\(kind) causal \(causal) normalize \(normalize) \(form): \(e)")
                }
            }
        }
    }

    /// With `v` the identity (V = T tokens, v_s = e_s), non-causal and unnormalized, o[t, s] is the weight
    /// phi(q_t) . phi(k_s): each map's kernel checked against its formula written out here, in both forms.
    @Test func eachMapHasTheKernelItsPaperDefines() throws {
        let (T, K, b) = (6, 4, 5)
        let q = try Tensor.randomNormal([1, T, 1, K], seed: 11), k = try Tensor.randomNormal([1, T, 1, K], seed: 12)
        var eye = [Float](repeating: 0, count: T * T)
        for i in 0..<T { eye[i * T + i] = 1 }
        let v = try Tensor(shape: [1, T, 1, T], scalars: eye)
        let w = try Tensor.randomNormal([1, K, b], seed: 13)
        func row(_ x: Tensor, _ t: Int) -> [Double] { (0..<K).map { Double(x.scalars[t * K + $0]) } }
        func dot(_ a: [Double], _ c: [Double]) -> Double { zip(a, c).reduce(0) { $0 + $1.0 * $1.1 } }
        func project(_ x: [Double]) -> [Double] { (0..<b).map { j in (0..<K).reduce(0) { $0 + x[$1] * Double(w.scalars[$1 * b + j]) } } }
        func softmax(_ x: [Double]) -> [Double] { let e = x.map { exp($0 - x.max()!) }; return e.map { $0 / e.reduce(0, +) } }
        let relu = { (x: [Double]) in x.map { max($0, 0) } }
        let kernels: [(FeatureMapKind, (Int, Int) -> Double)] = [
            (.identity, { t, s in dot(row(q, t), row(k, s)) }),
            (.elu, { t, s in dot(row(q, t).map { $0 > 0 ? $0 + 1 : exp($0) }, row(k, s).map { $0 > 0 ? $0 + 1 : exp($0) }) }),
            (.relu, { t, s in dot(relu(row(q, t)), relu(row(k, s))) }),
            (.taylor2, { t, s in let z = dot(row(q, t), row(k, s)) / Double(K).squareRoot(); return 1 + z + z * z / 2 }),
            (.cosformer, { t, s in dot(relu(row(q, t)), relu(row(k, s))) * cos(Double.pi / 2 * Double(t - s) / Double(T)) }),
            (.hashing, { t, s in Double(zip(project(row(q, t)), project(row(k, s))).filter { ($0.0 >= 0) == ($0.1 >= 0) }.count) }),
            (.hedgehog, { t, s in
                let (a, c) = (project(row(q, t)), project(row(k, s)))
                return dot(softmax(a), softmax(c)) + dot(softmax(a.map { -$0 }), softmax(c.map { -$0 }))
            }),
        ]
        for (kind, kernel) in kernels {
            let map = FeatureMap(kind, weights: kind.weightInput == nil ? nil : w)
            for form in [RecurrenceForm.reference, .chunked(size: 4)] {
                let o = try FeatureMapAttention.forward(q: q, k: k, v: v, map: map, options: FeatureMapOptions(causal: false), form: form)
                var worst = 0.0
                for t in 0..<T { for s in 0..<T { worst = max(worst, abs(Double(o.scalars[t * T + s]) - kernel(t, s)) / max(1, abs(kernel(t, s)))) } }
                #expect(worst <= 1e-5, "\(kind) \(form): worst relative error \(worst)")
            }
        }
        // Performer estimates exp(q.k/sqrt K) without bias: with many features and the stabilizers cancelled by the
        // normalizer, the normalized weights approach softmax's.
        let many = FeatureMap(.performer, features: 8192, seed: 5)
        let o = try FeatureMapAttention.forward(q: q, k: k, v: v, map: many, options: FeatureMapOptions(causal: false, normalize: true))
        let exact = try Attention.forward(q: q, k: k, v: v, options: AttentionOptions(causal: false), form: .reference)
        #expect(ErrorStats(o, exact.o).relativeRMS < 0.05, "\(ErrorStats(o, exact.o))")
    }

    /// Performer's error against softmax falls as its features grow (seeded: 16, 64, 256, 1024 features), causal and
    /// not; every map's fast form agrees with its reference on the same run (what `linea verify --approx` prints).
    @Test func performerErrorFallsWithMoreFeatures() throws {
        let rows = try FeatureMapAttention.approximations(seed: 1)
        #expect(rows.count == 2 * (FeatureMapKind.allCases.count + 3))
        for row in rows { #expect(row.formError <= 1e-5, "\(row.label) causal \(row.causal): \(row.formError)") }
        for causal in [true, false] {
            let errors = rows.filter { $0.label.hasPrefix("performer") && $0.causal == causal }.map(\.softmaxError)
            #expect(errors.count == 4)
            for i in 1..<errors.count { #expect(errors[i] < 0.9 * errors[i - 1], "causal \(causal): \(errors)") }
            #expect(errors[3] < 0.35 * errors[0], "causal \(causal): \(errors)")
        }
    }

    /// Without the normalizer, Performer estimates `o_t = sum_{s<=t} exp(q_t·k_s/sqrt(K)) v_s` itself (no stabilizer may
    /// scale it): computed here in Float64, the error falls as the features grow and is small at 4096.
    @Test func unnormalizedPerformerEstimatesTheExponentialKernel() throws {
        let (T, K) = (24, 8)
        let q = try Tensor.randomNormal([1, T, 1, K], seed: 5, scale: 0.5), k = try Tensor.randomNormal([1, T, 1, K], seed: 6, scale: 0.5)
        let v = try Tensor.randomNormal([1, T, 1, K], seed: 7)
        var want = try Tensor(zeros: [1, T, 1, K])
        for t in 0..<T {
            for s in 0...t {
                var dot = 0.0
                for i in 0..<K { dot += Double(q.scalars[t * K + i]) * Double(k.scalars[s * K + i]) }
                let w = exp(dot / Double(K).squareRoot())
                for j in 0..<K { want.scalars[t * K + j] += Float(w * Double(v.scalars[s * K + j])) }
            }
        }
        let errors = try [64, 4096].map { m in
            ErrorStats(try FeatureMapAttention.forward(q: q, k: k, v: v, map: FeatureMap(.performer, features: m, seed: 3)), want).relativeRMS
        }
        #expect(errors[1] < 0.1 && errors[1] < errors[0], "\(errors)")
    }

    /// Bad input names the argument: missing or misshaped weights, a feature count of 0, mismatched heads, a bad scale.
    @Test func badInputNamesTheArgument() throws {
        let x = try FeatureMapFamily.inputs(.hedgehog, B: 1, T: 4, H: 2, HV: 2, K: 8, V: 8, seed: 1)
        let (q, k, v) = (x["q"]!, x["k"]!, x["v"]!)
        func message(_ map: FeatureMap, v: Tensor? = nil, options: FeatureMapOptions = FeatureMapOptions()) -> String {
            do {
                _ = try FeatureMapAttention.forward(q: q, k: k, v: v ?? x["v"]!, map: map, options: options)
                return "no error"
            } catch { return "\(error)" }
        }
        #expect(message(FeatureMap(.hedgehog)).hasPrefix("hedgehog_weight: expected a weight tensor"))
        #expect(message(FeatureMap(.hashing, weights: try Tensor(zeros: [1, 8, 4]))).hasPrefix("hash_proj: expected shape [2, 8, F]"))
        #expect(message(FeatureMap(.performer, features: 0)).hasPrefix("features: expected 1..."))
        let wide = try Tensor.randomNormal([1, 2, 1, 512], seed: 1)
        #expect(throws: LineaError.invalidArgument(argument: "features", expected: "m·K² <= 2^32 (m <= 16384 at K = 512)", actual: "65536")) {
            try FeatureMapAttention.forward(q: wide, k: wide, v: wide, map: FeatureMap(.performer, features: 1 << 16))
        }
        #expect(message(FeatureMap(.relu), v: try Tensor(zeros: [1, 4, 3, 8])).hasPrefix("v: expected shape"))
        #expect(message(FeatureMap(.relu), options: FeatureMapOptions(scale: -1)).hasPrefix("scale: expected a finite number > 0"))
        var nan = v
        nan.scalars[3] = .nan
        #expect(message(FeatureMap(.elu), v: nan).hasPrefix("v: expected finite values"))
        #expect(throws: LineaError.self) { try FeatureMapFamily(.relu).check(form: "chunked", options: { var o = OpOptions(); o.settings["features"] = 4; return o }()) }
    }

    /// The device entry on CPU tensors is the host form, weights given in the map or as a tensor alike.
    @Test func deviceEntryOnTheCPUIsTheHostForm() throws {
        for kind in FeatureMapKind.allCases {
            let x = try FeatureMapFamily.inputs(kind, B: 1, T: 20, H: 2, HV: 4, K: 8, V: 8, seed: 4)
            let map = FeatureMap(kind, features: 16, seed: 1, weights: kind.weightInput.flatMap { x[$0] })
            let options = FeatureMapOptions(causal: true, normalize: true)
            let want = try FeatureMapAttention.forward(q: x["q"]!, k: x["k"]!, v: x["v"]!, map: map, options: options)
            let (q, k, v) = (try DeviceTensor(x["q"]!), try DeviceTensor(x["k"]!), try DeviceTensor(x["v"]!))
            #expect(try FeatureMapAttention.forward(q: q, k: k, v: v, map: map, options: options).host().scalars == want.scalars, "\(kind)")
            if let name = kind.weightInput {
                var bare = map
                bare.weights = nil
                let got = try FeatureMapAttention.forward(q: q, k: k, v: v, map: bare, weights: DeviceTensor(x[name]!), options: options)
                #expect(try got.host().scalars == want.scalars, "\(kind) with weights as a tensor")
            }
        }
    }
}
