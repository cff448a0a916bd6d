import Foundation
import Linea
import Testing

/// One attention case of the verification grid.
struct AttentionCase: CustomStringConvertible, Sendable {
    var B = 1, T = 65, S = 65, Hq = 2, Hkv = 2, D = 64, Dv = 64
    var causal = true
    var window: Int? = nil
    var description: String { "B\(B) T\(T) S\(S) Hq\(Hq) Hkv\(Hkv) D\(D) Dv\(Dv) causal=\(causal) window=\(window.map(String.init) ?? "-")" }

    func inputs(seed: UInt64) throws -> (Tensor, Tensor, Tensor) {
        (try Tensor.randomNormal([B, T, Hq, D], seed: seed),
         try Tensor.randomNormal([B, S, Hkv, D], seed: seed + 1),
         try Tensor.randomNormal([B, S, Hkv, Dv], seed: seed + 2))
    }
}

@Suite struct AttentionTests {
    static let grid: [AttentionCase] = [
        AttentionCase(T: 1, S: 1),
        AttentionCase(T: 63, S: 63, D: 60, Dv: 60),
        AttentionCase(T: 64, S: 64, causal: false),
        AttentionCase(B: 3, T: 65, S: 65, Hq: 4, Hkv: 2, Dv: 32),
        AttentionCase(T: 300, S: 300, Hq: 4, Hkv: 1, D: 32, Dv: 48),  // MQA
        AttentionCase(T: 300, S: 300, window: 37),
        AttentionCase(T: 257, S: 257, Hq: 2, Hkv: 1, window: 256),
        AttentionCase(T: 3, S: 700, Hq: 8, Hkv: 2, D: 128, Dv: 128),  // decode: bottom-right causal
        AttentionCase(T: 5, S: 700, causal: false),
        AttentionCase(T: 100, S: 40),  // more queries than keys: the first 60 see nothing
        AttentionCase(T: 130, S: 520, window: 300),
        AttentionCase(T: 613, S: 613, Hq: 2, Hkv: 1, D: 40, Dv: 24),  // several query and key tiles of either width
    ]

    @Test(arguments: grid)
    func fastFormsMatchReference(_ c: AttentionCase) throws {
        try checkFastForms(c)
    }

    /// One query per head with no form asked for (a decode step: the CPU backend's `decodeOne` on device tensors)
    /// against the reference: GQA and MQA, head dims off the 16-lane width, windows shorter and longer than S.
    @Test(arguments: [
        AttentionCase(T: 1, S: 1), AttentionCase(B: 2, T: 1, S: 7, Hq: 6, Hkv: 2, D: 40, Dv: 24),
        AttentionCase(T: 1, S: 300, Hq: 4, Hkv: 1, D: 32, Dv: 48, causal: false), AttentionCase(T: 1, S: 300, Hq: 4, Hkv: 2, window: 37),
        AttentionCase(T: 1, S: 20, window: 64),
    ])
    func decodeStepMatchesReference(_ c: AttentionCase) throws {
        let (q, k, v) = try c.inputs(seed: 21)
        let options = AttentionOptions(causal: c.causal, window: c.window)
        let want = try Attention.forward(q: q, k: k, v: v, options: options, form: .reference)
        let got = try Attention.forward(q: DeviceTensor(q), k: DeviceTensor(k), v: DeviceTensor(v), options: options)
        let eo = ErrorStats(try got.o.host(), want.o), el = ErrorStats(try got.lse.host(), want.lse)
        #expect(eo.relativeRMS <= 1e-5 && el.relativeRMS <= 1e-5, "\(c): o \(eo); lse \(el)")
    }

    /// The AVX2 kernels, whatever this CPU would pick (they are what runs on hosts without AVX-512).
    @Test(arguments: grid)
    func fastFormsMatchReferenceAVX2(_ c: AttentionCase) throws {
        let kernels = try #require(CPUKernels(.avx2))
        try CPUKernels.with(kernels) {
            #expect(CPUKernels.width == .avx2)
            try checkFastForms(c)
        }
    }

    @Test(.enabled(if: CPUKernels.Width.avx512.isSupported, "this CPU lacks AVX-512"), arguments: grid)
    func fastFormsMatchReferenceAVX512(_ c: AttentionCase) throws {
        let kernels = try #require(CPUKernels(.avx512))
        try CPUKernels.with(kernels) {
            #expect(CPUKernels.width == .avx512)
            try checkFastForms(c)
        }
    }

    /// Flash and split-KV (several partition counts) against the Float64 reference, with `CPUKernels.current`.
    func checkFastForms(_ c: AttentionCase) throws {
        let (q, k, v) = try c.inputs(seed: 11)
        let options = AttentionOptions(causal: c.causal, window: c.window)
        let want = try Attention.forward(q: q, k: k, v: v, options: options, form: .reference)
        for form in [AttentionForm.flash, .splitKV(partitions: nil), .splitKV(partitions: 3), .splitKV(partitions: 1000)] {
            let got = try Attention.forward(q: q, k: k, v: v, options: options, form: form)
            let eo = ErrorStats(got.o, want.o), el = ErrorStats(got.lse, want.lse)
            #expect(eo.relativeRMS <= 1e-5 && el.relativeRMS <= 1e-5, "\(form) \(c): o \(eo); lse \(el)")
            // Same -inf pattern (rows with no visible key) in both.
            #expect(zip(got.lse.scalars, want.lse.scalars).allSatisfy { ($0 == -.infinity) == ($1 == -.infinity) })
        }
    }

    @Test func referenceOnAHandComputedCase() throws {
        // One query, two keys, D = 1, scale 1: scores 1·2 = 2 and 1·(-1) = -1.
        let q = try Tensor(shape: [1, 1, 1, 1], scalars: [1])
        let k = try Tensor(shape: [1, 2, 1, 1], scalars: [2, -1])
        let v = try Tensor(shape: [1, 2, 1, 2], scalars: [1, 0, 0, 1])
        let out = try Attention.forward(q: q, k: k, v: v, options: AttentionOptions(scale: 1, causal: false), form: .reference)
        let z = exp(2.0) + exp(-1.0)
        #expect(abs(Double(out.o.scalars[0]) - exp(2.0) / z) < 1e-6)
        #expect(abs(Double(out.o.scalars[1]) - exp(-1.0) / z) < 1e-6)
        #expect(abs(Double(out.lse.scalars[0]) - log(z)) < 1e-6)
        // Causal with S = 2 > T = 1: the query sits at position 1 and sees both keys.
        let causal = try Attention.forward(q: q, k: k, v: v, options: AttentionOptions(scale: 1), form: .reference)
        #expect(causal.o == out.o)
        // Window 1: only the key at its own position (the second).
        let local = try Attention.forward(q: q, k: k, v: v, options: AttentionOptions(scale: 1, window: 1), form: .reference)
        #expect(local.o.scalars == [0, 1])
        #expect(abs(local.lse.scalars[0] - -1) < 1e-6)
    }

    @Test func rowsWithoutVisibleKeysGiveZeroAndMinusInfinity() throws {
        let c = AttentionCase(T: 6, S: 2, Hq: 1, Hkv: 1, D: 4, Dv: 4)
        let (q, k, v) = try c.inputs(seed: 3)
        for form in AttentionForm.all {
            let out = try Attention.forward(q: q, k: k, v: v, form: form)
            // Queries 0...3 sit at positions -4...-1: no key.
            #expect(Array(out.lse.scalars[0..<4]) == [Float](repeating: -.infinity, count: 4), "\(form)")
            #expect(out.o.scalars[0..<16].allSatisfy { $0 == 0 }, "\(form)")
            #expect(out.lse.scalars[4].isFinite && out.lse.scalars[5].isFinite, "\(form)")
        }
    }

    @Test func badInputsThrowNamingTheArgument() throws {
        let q = try Tensor.randomNormal([1, 8, 4, 16], seed: 1)
        let k = try Tensor.randomNormal([1, 8, 4, 16], seed: 2)
        let v = try Tensor.randomNormal([1, 8, 4, 16], seed: 3)
        func message(_ body: () throws -> Void) -> String {
            do { try body(); return "no error" } catch { return "\(error)" }
        }
        #expect(message { _ = try Attention.forward(q: try q.reshaped([8, 4, 16]), k: k, v: v) }.hasPrefix("q:"))
        #expect(message { _ = try Attention.forward(q: q, k: try Tensor.randomNormal([1, 8, 4, 8], seed: 1), v: v) }.hasPrefix("k:"))
        #expect(message { _ = try Attention.forward(q: q, k: k, v: try Tensor.randomNormal([1, 7, 4, 16], seed: 1)) }.hasPrefix("v:"))
        let k3 = try Tensor.randomNormal([1, 8, 3, 16], seed: 1), v3 = try Tensor.randomNormal([1, 8, 3, 16], seed: 1)
        #expect(message { _ = try Attention.forward(q: q, k: k3, v: v3) }.contains("divisor"))
        #expect(message { _ = try Attention.forward(q: q, k: k, v: v, options: AttentionOptions(causal: false, window: 4)) }.hasPrefix("window:"))
        #expect(message { _ = try Attention.forward(q: q, k: k, v: v, options: AttentionOptions(window: 0)) }.hasPrefix("window:"))
        #expect(message { _ = try Attention.forward(q: q, k: k, v: v, options: AttentionOptions(scale: .nan)) }.hasPrefix("scale:"))
        #expect(message { _ = try Attention.forward(q: q, k: k, v: v, form: .splitKV(partitions: 0)) }.hasPrefix("partitions:"))
        var bad = q
        bad.scalars[5] = .nan
        #expect(message { _ = try Attention.forward(q: bad, k: k, v: v) }.hasPrefix("q: expected finite"))
        let long = try Tensor(zeros: [1, 12000, 1, 1])
        #expect(message { _ = try Attention.forward(q: long, k: long, v: long, form: .reference) }.contains("above the limit"))
    }

    @Test func flopsCountCausalPairs() {
        // T = S = 4 causal: 1+2+3+4 = 10 visible pairs, 4·D·H FLOPs each.
        #expect(Attention.flops(B: 1, T: 4, S: 4, H: 2, D: 8, causal: true) == 4 * 2 * 10 * 8)
        #expect(Attention.flops(B: 1, T: 4, S: 4, H: 1, D: 1, causal: true, window: 2) == 4 * 7)
        #expect(Attention.flops(B: 2, T: 3, S: 5, H: 1, D: 1, causal: false) == 4 * 2 * 15)
    }
}
