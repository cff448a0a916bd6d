import Foundation
import Linea
import Testing

/// Long convolutions: the fft form against the Float64 direct form (the op table's cases run in OpCaseTests too),
/// hand-computed values, filters shorter and longer than the sequence, the argument checks; S4D's kernel forms;
/// the Hyena operator's forms, and its implicit filters generated from safari's weights.
@Suite struct LongConvTests {
    static func inputs(B: Int, H: Int, L: Int, Lk: Int, seed: UInt64) throws -> (u: Tensor, k: Tensor, D: Tensor) {
        (try Tensor.randomNormal([B, H, L], seed: seed), try Tensor.randomNormal([H, Lk], seed: seed + 1, scale: 0.5),
         try Tensor.randomNormal([H], seed: seed + 2))
    }

    /// fft == direct within 1e-5 (f32), with and without D: one token, odd and prime lengths, filters shorter and
    /// longer than the sequence, B·H well above the thread count.
    @Test(arguments: [(1, 1, 1, 1), (1, 1, 1, 5), (2, 3, 7, 7), (1, 2, 63, 63), (1, 2, 65, 30), (2, 2, 127, 300), (1, 1, 4099, 4099),
                      (3, 3 * Parallel.threadCount + 1, 211, 211), (1, 4, 3000, 17), (1, 1, 8192, 8192)])
    func fftEqualsDirect(_ B: Int, _ H: Int, _ L: Int, _ Lk: Int) throws {
        let x = try Self.inputs(B: B, H: H, L: L, Lk: Lk, seed: UInt64(L + H))
        for D in [nil, x.D] {
            let want = try LongConv.reference(u: x.u, k: x.k, D: D)
            let got = try LongConv.forward(u: x.u, k: x.k, D: D, form: .fft)
            let e = ErrorStats(got, want)
            #expect(got.shape == [B, H, L] && e.relativeRMS <= 1e-5, "B\(B) H\(H) L\(L) Lk\(Lk) D \(D != nil): \(e)")
            let device = try LongConv.forward(u: DeviceTensor(x.u), k: DeviceTensor(x.k), D: D.map { try DeviceTensor($0) }, form: .fft).host()
            #expect(device == got, "the dispatch runs the same fft form")
        }
    }

    /// Calls from several threads at once, each at its own size, so that FFTW plans are made concurrently (the planner
    /// runs under a lock): every result equals its reference.
    @Test func concurrentCallsPlanSafely() throws {
        let lengths = [19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67]
        let errors = LockedErrors()
        DispatchQueue.concurrentPerform(iterations: lengths.count) { i in
            do {
                let x = try Self.inputs(B: 2, H: 3, L: lengths[i] * 7, Lk: lengths[i] * 7, seed: UInt64(i))
                let e = ErrorStats(try LongConv.forward(u: x.u, k: x.k, D: x.D, form: .fft), try LongConv.reference(u: x.u, k: x.k, D: x.D))
                if !(e.relativeRMS <= 1e-5) { errors.append("L \(lengths[i] * 7): \(e)") }
            } catch {
                errors.append("L \(lengths[i] * 7): \(error)")
            }
        }
        #expect(errors.values.isEmpty, "\(errors.values)")
    }

    /// The definition on numbers worked by hand: o[t] = Σ_{s<=t} k[s]·u[t-s] + D·u[t].
    @Test func smallValuesByHand() throws {
        let u = try Tensor(shape: [1, 1, 4], scalars: [1, 2, 3, 4])
        let k = try Tensor(shape: [1, 2], scalars: [1, -1])
        let D = try Tensor(shape: [1], scalars: [2])
        let want: [Float] = [1 + 2, 2 - 1 + 4, 3 - 2 + 6, 4 - 3 + 8]
        for form in LongConvForm.allCases {
            #expect(try LongConv.forward(u: u, k: k, D: D, form: form).scalars.map { $0.rounded() } == want, "\(form)")
            #expect(try LongConv.forward(u: u, k: k, form: form).scalars.map { $0.rounded() } == [1, 1, 1, 1], "\(form) without D")
        }
    }

    /// Taps at or beyond L never reach an output: a filter of 3L equals its first L taps, and a filter shorter than L
    /// equals itself zero-padded to L.
    @Test func filtersLongerThanTheSequenceAreCutShorterOnesPadded() throws {
        let (B, H, L) = (2, 3, 50)
        let u = try Tensor.randomNormal([B, H, L], seed: 1)
        let long = try Tensor.randomNormal([H, 3 * L], seed: 2)
        var cut = try Tensor(zeros: [H, L])
        for h in 0..<H { for s in 0..<L { cut.scalars[h * L + s] = long.scalars[h * 3 * L + s] } }
        let short = try Tensor.randomNormal([H, 9], seed: 3)
        var padded = try Tensor(zeros: [H, L])
        for h in 0..<H { for s in 0..<9 { padded.scalars[h * L + s] = short.scalars[h * 9 + s] } }
        for form in LongConvForm.allCases {
            #expect(ErrorStats(try LongConv.forward(u: u, k: long, form: form), try LongConv.forward(u: u, k: cut, form: form)).relativeRMS <= 1e-6)
            #expect(ErrorStats(try LongConv.forward(u: u, k: short, form: form), try LongConv.forward(u: u, k: padded, form: form)).relativeRMS <= 1e-6)
        }
    }

    /// The torch fixture of scripts/longconv_fixtures.py.
    static let fixturePath = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../LineaLMTests/Fixtures/longconv/fftconv.safetensors").path

    /// torch.fft's outputs as safari's fftconv computes them, and S4D's closed-form kernels (scripts/longconv_fixtures.py,
    /// float64): both forms match, a filter longer than the sequence included (the fixture cut it to L, as Hyena does).
    @Test func matchesTorchFFTConvAndS4D() throws {
        let file = try SafeTensorsFile(path: LongConvTests.fixturePath)
        let conv = file.metadata.keys.filter { $0.hasPrefix("c") }.sorted(), s4d = file.metadata.keys.filter { $0.hasPrefix("s") }.sorted()
        #expect(conv.count == 6 && s4d.count == 2)
        for name in conv {
            let D = file.names.contains("\(name).D") ? try file.tensor("\(name).D") : nil
            let want = try file.tensor("\(name).o")
            for form in LongConvForm.allCases {
                let got = try LongConv.forward(u: file.tensor("\(name).u"), k: file.tensor("\(name).k"), D: D, form: form)
                #expect(ErrorStats(got, want).relativeRMS <= 1e-5, "\(name) \(file.metadata[name]!) \(form): \(ErrorStats(got, want))")
            }
        }
        for name in s4d {
            let (A, B, C, dt, want) = (try file.tensor("\(name).A"), try file.tensor("\(name).B"), try file.tensor("\(name).C"),
                                       try file.tensor("\(name).dt"), try file.tensor("\(name).K"))
            for form in S4D.Form.allCases {
                let got = try S4D.kernel(A: A, B: B, C: C, dt: dt, length: want.shape[1], form: form)
                #expect(ErrorStats(got, want).relativeRMS <= 1e-6, "\(name) \(form): \(ErrorStats(got, want))")
            }
        }
    }

    /// Sizes whose largest prime factor is above 7 pad up; those below are safari's 2L.
    @Test func transformSizes() {
        #expect(LongConv.fftSize(1) == 2 && LongConv.fftSize(1024) == 2048 && LongConv.fftSize(1000) == 2000)
        #expect(LongConv.fftSize(1009) == 2 * 1024 && LongConv.fftSize(11) == 24 && LongConv.fftSize(65536) == 131072)
    }

    @Test func badArgumentsAreNamed() throws {
        let x = try Self.inputs(B: 1, H: 2, L: 8, Lk: 8, seed: 1)
        func run(_ u: Tensor, _ k: Tensor, _ D: Tensor? = nil, form: LongConvForm = .fft) throws {
            _ = try LongConv.forward(u: DeviceTensor(u), k: DeviceTensor(k), D: D.map { try DeviceTensor($0) }, form: form)
        }
        #expect(throws: LineaError.shapeMismatch(argument: "u", expected: "[B, H, L] with B, H, L >= 1", actual: "[1, 2, 0]")) {
            try run(Tensor(zeros: [1, 2, 0]), x.k)
        }
        #expect(throws: LineaError.shapeMismatch(argument: "u", expected: "[B, H, L] with B, H, L >= 1", actual: "[0, 2, 8]")) {
            try run(Tensor(zeros: [0, 2, 8]), x.k)
        }
        #expect(throws: LineaError.shapeMismatch(argument: "u", expected: "[B, H, L] with B, H, L >= 1", actual: "[2, 8]")) {
            try run(x.u.reshaped([2, 8]), x.k)
        }
        #expect(throws: LineaError.shapeMismatch(argument: "k", expected: "[2, Lk] with Lk >= 1 (one filter per channel of u)", actual: "[2, 0]")) {
            try run(x.u, Tensor(zeros: [2, 0]))
        }
        #expect(throws: LineaError.shapeMismatch(argument: "k", expected: "[2, Lk] with Lk >= 1 (one filter per channel of u)", actual: "[3, 8]")) {
            try run(x.u, Tensor(zeros: [3, 8]))
        }
        #expect(throws: LineaError.shapeMismatch(argument: "D", expected: "[2] (one skip per channel of u)", actual: "[1, 2]")) {
            try run(x.u, x.k, Tensor(zeros: [1, 2]))
        }
        var bad = x.k
        bad.scalars[5] = .nan
        for form in LongConvForm.allCases {
            #expect(throws: LineaError.invalidArgument(argument: "k", expected: "finite values", actual: "nan at flat index 5")) { try run(x.u, bad, form: form) }
            #expect(throws: LineaError.invalidArgument(argument: "k", expected: "finite values", actual: "nan at flat index 5")) {
                _ = try LongConv.forward(u: x.u, k: bad, form: form)
            }
        }
        var infinite = x.D
        infinite.scalars[1] = -.infinity
        #expect(throws: LineaError.invalidArgument(argument: "D", expected: "finite values", actual: "-inf at flat index 1")) { try run(x.u, x.k, infinite) }
        // Finite inputs whose products overflow: the output check names o.
        let huge = try Tensor(zeros: [1, 2, 8], value: 3e38)
        #expect(throws: LineaError.self) { try run(huge, huge.reshaped([2, 8])) }
        let family = LongConvFamily()
        #expect(throws: LineaError.invalidArgument(argument: "--form", expected: "fft, direct or reference", actual: "'chunked'")) {
            try family.check(form: "chunked", options: OpOptions())
        }
    }

    /// One mode, A = -1, B = C = 1: K[l] = 2·(1 - e^(-dt))·e^(-dt·l) in both forms.
    @Test func s4dKernelOfOneRealMode() throws {
        let (L, dt) = (40, Float(0.3))
        let A = try Tensor(shape: [1, 1, 2], scalars: [-1, 0]), C = try Tensor(shape: [1, 1, 2], scalars: [1, 0])
        for form in S4D.Form.allCases {
            let K = try S4D.kernel(A: A, C: C, dt: Tensor(shape: [1], scalars: [dt]), length: L, form: form)
            let want = (0..<L).map { Float(2 * (1 - exp(-Double(dt))) * exp(-Double(dt) * Double($0))) }
            #expect(ErrorStats(K.scalars, want).relativeRMS <= 1e-6, "\(form)")
        }
    }

    /// S4D-Lin's initialization (A = -1/2 + iπn), random complex B and C: the Vandermonde form equals the recurrence,
    /// and the layer (kernel, then fft convolution with D) equals the direct convolution with the recurrence's kernel.
    @Test(arguments: [(3, 8, 1), (2, 32, 1000), (4, 16, 4096)])
    func s4dFormsAgree(_ H: Int, _ N: Int, _ L: Int) throws {
        let A = try Tensor(shape: [H, N, 2], scalars: (0..<(H * N)).flatMap { i in [-0.5, Float.pi * Float(i % N)] })
        let B = try Tensor.randomNormal([H, N, 2], seed: 1), C = try Tensor.randomNormal([H, N, 2], seed: 2, scale: 0.5)
        let dt = try Tensor(shape: [H], scalars: (0..<H).map { Float(exp(log(0.001) + Double($0) / Double(max(H - 1, 1)) * log(100.0))) })
        let reference = try S4D.kernel(A: A, B: B, C: C, dt: dt, length: L, form: .recurrence)
        let vandermonde = try S4D.kernel(A: A, B: B, C: C, dt: dt, length: L, form: .vandermonde)
        #expect(ErrorStats(vandermonde, reference).relativeRMS <= 1e-6, "H\(H) N\(N) L\(L): \(ErrorStats(vandermonde, reference))")
        let u = try Tensor.randomNormal([2, H, L], seed: 3), D = try Tensor.randomNormal([H], seed: 4)
        let layer = try S4D.forward(u: u, A: A, B: B, C: C, dt: dt, D: D)
        #expect(ErrorStats(layer, try LongConv.reference(u: u, k: reference, D: D)).relativeRMS <= 1e-5)
    }

    @Test func s4dBadArgumentsAreNamed() throws {
        let A = try Tensor(shape: [1, 2, 2], scalars: [-1, 0, -0.5, 3]), C = try Tensor(zeros: [1, 2, 2], value: 1)
        let dt = try Tensor(shape: [1], scalars: [0.1])
        #expect(throws: LineaError.invalidArgument(argument: "A", expected: "real parts < 0 (decaying modes)", actual: "0.0 at mode 1")) {
            try S4D.kernel(A: Tensor(shape: [1, 2, 2], scalars: [-1, 0, 0, 3]), C: C, dt: dt, length: 4)
        }
        #expect(throws: LineaError.invalidArgument(argument: "dt", expected: "steps > 0", actual: "-0.1 at index 0")) {
            try S4D.kernel(A: A, C: C, dt: Tensor(shape: [1], scalars: [-0.1]), length: 4)
        }
        #expect(throws: LineaError.invalidArgument(argument: "length", expected: "a kernel length L >= 1", actual: "0")) {
            try S4D.kernel(A: A, C: C, dt: dt, length: 0)
        }
        #expect(throws: LineaError.shapeMismatch(argument: "B", expected: "[1, 2, 2] (as A)", actual: "[1, 2]")) {
            try S4D.kernel(A: A, B: Tensor(zeros: [1, 2]), C: C, dt: dt, length: 4)
        }
        #expect(throws: LineaError.shapeMismatch(argument: "A", expected: "[H, N, 2] (complex as real, imaginary) with H, N >= 1", actual: "[1, 2]")) {
            try S4D.kernel(A: Tensor(zeros: [1, 2]), C: C, dt: dt, length: 4)
        }
        #expect(throws: LineaError.invalidArgument(argument: "C", expected: "finite values", actual: "nan at flat index 0")) {
            try S4D.kernel(A: A, C: Tensor(zeros: [1, 2, 2], value: .nan), dt: dt, length: 4)
        }
    }

    /// Hyena of orders 2 to 4: the fft form (f32 convolutions and gates) equals the Float64 reference; order 2 with
    /// gates of ones is one long convolution of v.
    @Test(arguments: [(2, 2, 4, 33, 33), (3, 2, 8, 200, 200), (4, 1, 6, 1000, 64), (3, 3, 5, 1, 1)])
    func hyenaFormsAgree(_ N: Int, _ B: Int, _ D: Int, _ L: Int, _ Lk: Int) throws {
        let projections = try Tensor.randomNormal([B, (N + 1) * D, L], seed: 1)
        let filters = try Tensor.randomNormal([N - 1, D, Lk], seed: 2, scale: 0.3), bias = try Tensor.randomNormal([N - 1, D], seed: 3)
        for b in [nil, bias] {
            let want = try Hyena.forward(projections: projections, filters: filters, bias: b, form: .direct)
            let got = try Hyena.forward(projections: projections, filters: filters, bias: b, form: .fft)
            #expect(got.shape == [B, D, L] && ErrorStats(got, want).relativeRMS <= 1e-5, "N\(N) B\(B) D\(D) L\(L): \(ErrorStats(got, want))")
        }
        if N == 2 {
            var ones = projections
            for b in 0..<B { for i in 0..<(2 * D * L) { ones.scalars[b * 3 * D * L + i] = 1 } }
            var v = try Tensor(zeros: [B, D, L])
            for b in 0..<B { for i in 0..<(D * L) { v.scalars[b * D * L + i] = projections.scalars[b * 3 * D * L + 2 * D * L + i] } }
            let conv = try LongConv.reference(u: v, k: filters.reshaped([D, Lk]), D: bias.reshaped([D]))
            #expect(ErrorStats(try Hyena.forward(projections: ones, filters: filters, bias: bias, form: .direct), conv).relativeRMS <= 1e-6)
        }
    }

    /// Both forms against safari's `HyenaOperator.forward` loop (`*x, v = split`, gate by `reversed(x[1:])` then
    /// fftconv with the filter's bias, `y = v * x[0]`) run by torch in float64 (scripts/longconv_fixtures.py).
    @Test func hyenaMatchesSafari() throws {
        let file = try SafeTensorsFile(path: LongConvTests.fixturePath)
        var cases = 0
        for i in 0... {
            guard file.names.contains("h\(i).projections") else { break }
            let (projections, filters, bias, y) = try (file.tensor("h\(i).projections"), file.tensor("h\(i).filters"),
                                                       file.tensor("h\(i).bias"), file.tensor("h\(i).y"))
            for form in [LongConvForm.direct, .fft] {
                let got = try Hyena.forward(projections: projections, filters: filters, bias: bias, form: form)
                #expect(ErrorStats(got, y).relativeRMS <= 1e-5, "h\(i) \(form): \(ErrorStats(got, y))")
            }
            cases += 1
        }
        #expect(cases >= 2)
    }

    @Test func hyenaBadArgumentsAreNamed() throws {
        let filters = try Tensor(zeros: [2, 3, 4])
        #expect(throws: LineaError.shapeMismatch(argument: "projections", expected: "[B, 12, L] ((N + 1)·D channels: x_0...x_2, v) with B, L >= 1",
                                                 actual: "[1, 9, 4]")) {
            try Hyena.forward(projections: Tensor(zeros: [1, 9, 4]), filters: filters)
        }
        #expect(throws: LineaError.shapeMismatch(argument: "filters", expected: "[N-1, D, Lk] with N-1, D, Lk >= 1", actual: "[0, 3, 4]")) {
            try Hyena.forward(projections: Tensor(zeros: [1, 3, 4]), filters: Tensor(zeros: [0, 3, 4]))
        }
        #expect(throws: LineaError.shapeMismatch(argument: "bias", expected: "[2, 3]", actual: "[3]")) {
            try Hyena.forward(projections: Tensor(zeros: [1, 12, 4]), filters: filters, bias: Tensor(zeros: [3]))
        }
        #expect(throws: LineaError.invalidArgument(argument: "projections", expected: "finite values", actual: "inf at flat index 0")) {
            try Hyena.forward(projections: Tensor(zeros: [1, 12, 4], value: .infinity), filters: filters)
        }
    }
}

extension LongConvTests {
    /// Fixture case `f<i>`'s settings (its metadata JSON) and the filter built from its weights; `givenEmbedding` passes
    /// the stored z instead of computing it.
    static func fixtureFilter(_ file: SafeTensorsFile, _ name: String, givenEmbedding: Bool = false) throws -> (HyenaFilter, [String: Any]) {
        let settings = try JSONSerialization.jsonObject(with: Data(file.metadata[name]!.utf8)) as! [String: Any]
        let filter = try HyenaFilter(order: settings["N"] as! Int, maxLength: settings["Lmax"] as! Int, embeddingDim: settings["E"] as! Int,
                                     embedding: givenEmbedding ? file.tensor("\(name).z") : nil,
                                     weights: (0..<4).map { try file.tensor("\(name).w\($0)") }, biases: (0..<3).map { try file.tensor("\(name).b\($0)") },
                                     frequencies: (0..<3).map { try file.tensor("\(name).freq\($0)") }, deltas: file.tensor("\(name).deltas"),
                                     shift: Float(settings["shift"] as! Double), normalized: settings["normalized"] as! Bool,
                                     bias: file.tensor("\(name).bias"))
        return (filter, settings)
    }

    /// safari's HyenaFilter re-implemented by torch in float64 (scripts/longconv_fixtures.py: two inner Sin layers,
    /// modulation on, one case normalized with a shift): the embedding, the taps `filter(L)` gives, their rearrangement
    /// into [N-1, D, L] and the bias into [N-1, D], and the operator with the generated filters in both forms.
    @Test func hyenaFilterMatchesSafari() throws {
        let file = try SafeTensorsFile(path: LongConvTests.fixturePath)
        let names = file.metadata.keys.filter { $0.hasPrefix("f") }.sorted()
        #expect(names.count == 2)
        for name in names {
            let (filter, settings) = try Self.fixtureFilter(file, name)
            let L = settings["L"] as! Int
            let z = try file.tensor("\(name).z")
            #expect(ErrorStats(filter.embedding.scalars, z.scalars).relativeRMS <= 1e-6, "\(name) embedding")
            let want = try file.tensor("\(name).k")
            let k = try filter.implicitFilter(length: L)
            #expect(k.shape == Array(want.shape.dropFirst()) && ErrorStats(k.scalars, want.scalars).relativeRMS <= 1e-5,
                    "\(name) k: \(ErrorStats(k.scalars, want.scalars))")
            let given = try Self.fixtureFilter(file, name, givenEmbedding: true).0.implicitFilter(length: L)
            #expect(ErrorStats(given, k).relativeRMS <= 1e-6, "\(name) with the stored embedding")
            let (filters, bias) = try filter.filters(length: L)
            let (wantFilters, wantBias) = (try file.tensor("\(name).filters"), try file.tensor("\(name).bias_od"))
            #expect(filters.shape == wantFilters.shape && ErrorStats(filters, wantFilters).relativeRMS <= 1e-5,
                    "\(name) filters: \(ErrorStats(filters, wantFilters))")
            #expect(bias == wantBias, "\(name) bias [N-1, D]")
            let (projections, y) = (try file.tensor("\(name).projections"), try file.tensor("\(name).y"))
            for form in LongConvForm.allCases {
                let got = try Hyena.forward(projections: projections, filter: filter, form: form)
                #expect(got.shape == y.shape && ErrorStats(got, y).relativeRMS <= 1e-5, "\(name) \(form): \(ErrorStats(got, y))")
            }
        }
    }

    /// Without modulation the taps are the MLP's alone: equal to modulation by a window of ones (deltas 0, shift 0), and
    /// a shift s adds s times the unmodulated taps.
    @Test func hyenaFilterModulationSwitch() throws {
        let (F, C) = (6, 4)
        let weights = [try Tensor.randomNormal([F, 3], seed: 1), try Tensor.randomNormal([C, F], seed: 2, scale: 0.4)]
        let biases = [try Tensor.randomNormal([F], seed: 3)], frequencies = [try Tensor(zeros: [1, F], value: 1.3)]
        func make(_ deltas: Tensor, shift: Float = 0, modulate: Bool) throws -> Tensor {
            try HyenaFilter(order: 3, maxLength: 30, weights: weights, biases: biases, frequencies: frequencies, deltas: deltas, shift: shift,
                            modulate: modulate, bias: nil).implicitFilter(length: 30)
        }
        let rates = try Tensor.randomNormal([C], seed: 4, scale: 3)
        let plain = try make(rates, modulate: false)
        #expect(ErrorStats(try make(Tensor(zeros: [C]), modulate: true), plain).relativeRMS <= 1e-7)
        let windowed = try make(rates, modulate: true), shifted = try make(rates, shift: 0.25, modulate: true)
        #expect(ErrorStats(shifted.scalars, zip(windowed.scalars, plain.scalars).map { $0 + 0.25 * $1 }).relativeRMS <= 1e-6)
        #expect(ErrorStats(windowed, plain).relativeRMS > 0.1, "the window decays the taps")
        #expect(try HyenaFilter(order: 3, maxLength: 30, weights: weights, biases: biases, frequencies: frequencies, deltas: rates,
                                bias: nil).filters(length: 30).bias == nil)
    }

    @Test func hyenaFilterBadWeightsAreNamed() throws {
        let (F, E) = (5, 3)
        let weights = [try Tensor(zeros: [F, E]), try Tensor(zeros: [F, F]), try Tensor(zeros: [6, F])]
        let biases = [try Tensor(zeros: [F]), try Tensor(zeros: [F])], frequencies = [try Tensor(zeros: [1, F]), try Tensor(zeros: [1, F])]
        let deltas = try Tensor(zeros: [1, 1, 6]), bias = try Tensor(zeros: [6])
        func make(order: Int = 3, maxLength: Int = 16, embeddingDim: Int = E, embedding: Tensor? = nil, weights w: [Tensor]? = nil,
                  biases b: [Tensor]? = nil, frequencies f: [Tensor]? = nil, deltas d: Tensor? = nil, bias s: Tensor? = nil) throws -> HyenaFilter {
            try HyenaFilter(order: order, maxLength: maxLength, embeddingDim: embeddingDim, embedding: embedding, weights: w ?? weights,
                            biases: b ?? biases, frequencies: f ?? frequencies, deltas: d ?? deltas, bias: s ?? bias)
        }
        let filter = try make()
        #expect(filter.width == 3 && filter.order == 3)
        #expect(throws: LineaError.shapeMismatch(argument: "weights[0]", expected: "[F, 3] with F >= 1 (the MLP width, embedding dim)", actual: "[5, 5]")) {
            try make(weights: [weights[1], weights[1], weights[2]])
        }
        #expect(throws: LineaError.shapeMismatch(argument: "weights[1]", expected: "[5, 5]", actual: "[5, 3]")) {
            try make(weights: [weights[0], weights[0], weights[2]])
        }
        #expect(throws: LineaError.shapeMismatch(argument: "weights[2]", expected: "[(N-1)·D, 5] with N-1 = 4, D >= 1", actual: "[6, 5]")) {
            try make(order: 5)
        }
        #expect(throws: LineaError.invalidArgument(argument: "biases", expected: "2 (one per linear layer but the last)", actual: "1")) {
            try make(biases: [biases[0]])
        }
        #expect(throws: LineaError.shapeMismatch(argument: "biases[1]", expected: "[5] (leading ones allowed)", actual: "[4]")) {
            try make(biases: [biases[0], Tensor(zeros: [4])])
        }
        #expect(throws: LineaError.shapeMismatch(argument: "frequencies[0]", expected: "[5] (leading ones allowed)", actual: "[2, 5]")) {
            try make(frequencies: [Tensor(zeros: [2, F]), frequencies[1]])
        }
        #expect(throws: LineaError.shapeMismatch(argument: "deltas", expected: "[6] (leading ones allowed)", actual: "[1, 1, 3]")) {
            try make(deltas: Tensor(zeros: [1, 1, 3]))
        }
        #expect(throws: LineaError.shapeMismatch(argument: "bias", expected: "[6] (leading ones allowed)", actual: "[3, 2]")) {
            try make(bias: Tensor(zeros: [3, 2]))
        }
        #expect(throws: LineaError.shapeMismatch(argument: "embedding", expected: "[16, E] or [1, 16, E] with E odd and >= 3", actual: "[1, 15, 3]")) {
            try make(embedding: Tensor(zeros: [1, 15, 3]))
        }
        #expect(throws: LineaError.invalidArgument(argument: "embeddingDim", expected: "an odd E >= 3 (time, cosine and sine bands)", actual: "4")) {
            try make(embeddingDim: 4)
        }
        #expect(throws: LineaError.invalidArgument(argument: "order", expected: "an operator order N >= 2", actual: "1")) { try make(order: 1) }
        #expect(throws: LineaError.invalidArgument(argument: "frequencies[1]", expected: "finite values", actual: "nan at flat index 2")) {
            var bad = frequencies[1]
            bad.scalars[2] = .nan
            return try make(frequencies: [frequencies[0], bad])
        }
        #expect(throws: LineaError.invalidArgument(argument: "length", expected: "1...16 (the filter's maxLength)", actual: "17")) {
            try filter.filters(length: 17)
        }
        #expect(throws: LineaError.shapeMismatch(argument: "projections",
                                                 expected: "[B, 12, L] with B >= 1 and 1 <= L <= 16 (the filter's maxLength)", actual: "[1, 12, 17]")) {
            try Hyena.forward(projections: Tensor(zeros: [1, 12, 17]), filter: filter)
        }
        #expect(throws: LineaError.shapeMismatch(argument: "projections",
                                                 expected: "[B, 12, L] with B >= 1 and 1 <= L <= 16 (the filter's maxLength)", actual: "[1, 9, 8]")) {
            try Hyena.forward(projections: Tensor(zeros: [1, 9, 8]), filter: filter)
        }
    }
}

/// Messages collected from several threads.
final class LockedErrors: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    func append(_ message: String) { lock.withLock { stored.append(message) } }
    var values: [String] { lock.withLock { stored } }
}
