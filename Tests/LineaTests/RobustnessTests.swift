import Foundation
import Linea
import Testing

/// Caller-driven sizes and values that used to trap, overflow or return garbage end in a `LineaError`.
@Suite struct RobustnessTests {
    /// The message of the error `body` throws ("" when it returns).
    func message(_ body: () throws -> Void) -> String {
        do { try body() } catch { return "\(error)" }
        return ""
    }

    @Test func zeroLengthSequenceWithHugeStateIsRefusedBeforeAllocating() throws {
        // A file of a few hundred bytes: T = 0, but the state [1, 1, K, V] would be 4 TiB.
        let x = try Tensor(zeros: [1, 0, 1, 1 << 20])
        var inputs = RecurrenceInputs(q: x, k: x, v: x)
        inputs.beta = try Tensor(zeros: [1, 0, 1])
        let text = message { _ = try Recurrence.forward(.deltaRule, inputs, form: .chunked(size: 64)) }
        #expect(text.contains("final_state: [1, 1, 1048576, 1048576] Float32 needs 4.0 TiB, over the memory limit"), "\(text)")
    }

    @Test func zeroLengthKeyAxisWithHugeValueDimIsRefused() throws {
        let q = try Tensor.randomNormal([1, 4, 1, 8], seed: 1)
        let k = try Tensor(zeros: [1, 0, 1, 8]), v = try Tensor(zeros: [1, 0, 1, 1 << 36])
        for form in [AttentionForm.flash, .reference, .splitKV(partitions: 3)] {
            let text = message { _ = try Attention.forward(q: q, k: k, v: v, form: form) }
            #expect(text.contains("o: [1, 4, 1, 68719476736] Float32"), "\(form): \(text)")
        }
    }

    @Test func chunkLongerThanMemoryIsRefused() throws {
        var inputs = try RecurrenceInputs.random(.gla, B: 1, T: 300_000, H: 1, K: 1, V: 1, seed: 1)
        inputs.validate = false
        let text = message { _ = try Recurrence.forward(.gla, inputs, form: .chunked(size: .max)) }
        #expect(text.contains("chunk workspace"), "\(text)")
        // The estimate has no K x K term: a wide key with a short sequence fits.
        let wide = try RecurrenceInputs.random(.deltaRule, B: 1, T: 2, H: 1, K: 1 << 16, V: 1, seed: 1)
        _ = try Recurrence.forward(.deltaRule, wide, form: .chunked(size: 64))
    }

    @Test func shapesWhoseNonZeroExtentsOverflowAreRejected() throws {
        #expect(throws: LineaError.self) { try Tensor(zeros: [0, 1 << 40, 1 << 40]) }
        #expect(throws: LineaError.self) { try Tensor(shape: [1 << 62, 4, 0], scalars: []) }
        // Just under the 2^37-element cap: 512 GiB, more than 80% of any machine this suite runs on.
        let text = message { _ = try Tensor(zeros: [1 << 19, (1 << 18) - 1]) }
        #expect(text.contains("tensor: [524288, 262143] Float32 needs 512.0 GiB"), "\(text)")
    }

    @Test func windowNearIntMaxEqualsNoWindow() throws {
        let q = try Tensor.randomNormal([1, 40, 2, 16], seed: 1)
        let kv = try Tensor.randomNormal([1, 30, 2, 16], seed: 2)  // S < T: positions below zero
        let want = try Attention.forward(q: q, k: kv, v: kv, form: .reference)
        for form in [AttentionForm.flash, .reference, .splitKV(partitions: 2)] {
            let got = try Attention.forward(q: q, k: kv, v: kv, options: AttentionOptions(window: .max), form: form)
            #expect(ErrorStats(got.o, want.o).relativeRMS < 1e-5, "\(form)")
        }
        #expect(Attention.flops(B: 1, T: 40, S: 30, H: 2, D: 16, causal: true, window: .max)
                == Attention.flops(B: 1, T: 40, S: 30, H: 2, D: 16, causal: true))
        #expect(Attention.flops(B: 1, T: -1, S: 30, H: 2, D: 16, causal: true) == 0)
        #expect(Attention.flops(B: 1, T: 40, S: 30, H: 2, D: 16, causal: true, window: .min) > 0)
    }

    @Test func manyMorePartitionsThanKeysStayCheap() throws {
        let q = try Tensor.randomNormal([1, 300, 1, 8], seed: 1)
        let kv = try Tensor.randomNormal([1, 300, 1, 8], seed: 2)
        let want = try Attention.forward(q: q, k: kv, v: kv, form: .reference)
        let got = try Attention.forward(q: q, k: kv, v: kv, form: .splitKV(partitions: 100_000))
        #expect(ErrorStats(got.o, want.o).relativeRMS < 1e-5)
    }

    @Test func float32OverflowInFlashIsAnErrorNamingTheTensors() throws {
        let q = try Tensor.randomNormal([1, 16, 1, 8], seed: 1, scale: 1e19)
        let k = try Tensor.randomNormal([1, 16, 1, 8], seed: 2, scale: 1e19)
        let v = try Tensor.randomNormal([1, 16, 1, 8], seed: 3)
        for form in [AttentionForm.flash, .splitKV(partitions: 2)] {
            let text = message { _ = try Attention.forward(q: q, k: k, v: v, form: form) }
            #expect(text.hasPrefix("q, k: expected max|q|·max|k|·D·|scale| below") && text.contains("use form reference"), "\(text)")
        }
        let bigV = try Tensor.randomNormal([1, 16, 1, 8], seed: 3, scale: 1e37)
        let text = message { _ = try Attention.forward(q: v, k: v, v: bigV, form: .flash) }
        #expect(text.hasPrefix("v: expected max|v|·S below"), "\(text)")
        _ = try Attention.forward(q: v, k: v, v: bigV, form: .reference)  // Float64 holds it
    }

    /// The one-query decode path on device tensors skips the scan of the KV cache before it attends; a bad key or value
    /// far back in the cache must still end in an error naming it (found after the step, from its non-finite o or lse).
    @Test func decodeStepNamesABadKeyOrValueAnywhereInTheCache() throws {
        let q = try Tensor.randomNormal([1, 1, 2, 8], seed: 1)
        let k = try Tensor.randomNormal([1, 300, 2, 8], seed: 2), v = try Tensor.randomNormal([1, 300, 2, 8], seed: 3)
        func replaced(_ x: Tensor, at i: Int, by value: Float) throws -> Tensor {
            var s = x.scalars
            s[i] = value
            return try Tensor(shape: x.shape, scalars: s)
        }
        func decode(_ q: Tensor, _ k: Tensor, _ v: Tensor) throws { _ = try Attention.forward(q: DeviceTensor(q), k: DeviceTensor(k), v: DeviceTensor(v)) }
        try decode(q, k, v)
        #expect(message { try decode(q, try replaced(k, at: 4000, by: .nan), v) }.hasPrefix("k: expected finite values"))
        #expect(message { try decode(q, k, try replaced(v, at: 33, by: .infinity)) }.hasPrefix("v: expected finite values"))
        // Scores that overflow Float32: q·k of a key row of 1e38s.
        var big = k.scalars
        for i in 2000..<2008 { big[i] = 1e38 }
        let text = message { try decode(try Tensor(zeros: q.shape, value: 10), try Tensor(shape: k.shape, scalars: big), v) }
        #expect(text.hasPrefix("q, k: expected max|q|·max|k|·D·|scale| below"), "\(text)")
    }

    @Test func deltaRuleOnUnnormalizedKeysIsAnError() throws {
        var inputs = try RecurrenceInputs.random(.gatedDeltaRule, B: 1, T: 64, H: 1, K: 16, V: 16, seed: 1, gateRange: -1e-4...(-1e-5))
        inputs.k = try Tensor(shape: inputs.k.shape, scalars: inputs.k.scalars.map { $0 * 40 })
        inputs.beta = try Tensor(zeros: inputs.beta!.shape, value: 1)
        for form in [RecurrenceForm.recurrent, .chunked(size: 16)] {
            let text = message { _ = try Recurrence.forward(.gatedDeltaRule, inputs, form: form) }
            #expect(text.hasPrefix("o: expected finite values, got") && text.contains("L2 norm"), "\(form): \(text)")
        }
        inputs.allowNonFiniteOutputs = true
        let out = try Recurrence.forward(.gatedDeltaRule, inputs, form: .recurrent)
        #expect(out.o.scalars.contains { !$0.isFinite })
        // Decode: a huge key makes the state, then o, overflow.
        var decode = try RecurrentState(batch: 1, heads: 1, keyDim: 4, valueDim: 4)
        let big = try Tensor(zeros: [1, 1, 4], value: 1e20), one = try Tensor(zeros: [1, 1], value: 1)
        let text = message { _ = try decode.step(.deltaRule, q: big, k: big, v: big, beta: one) }
        #expect(text.hasPrefix("o: expected finite values"), "\(text)")
        let stateText = message { _ = try RecurrentState(batch: 1, heads: 1, keyDim: 1 << 20, valueDim: 1 << 20) }
        #expect(stateText.hasPrefix("state: [1, 1, 1048576, 1048576] Float32 needs 4.0 TiB"), "\(stateText)")
    }

    @Test func nonFiniteOutputErrorNamesTheIndex() throws {
        let t = try Tensor(shape: [2, 3], scalars: [0, 1, 2, 3, .infinity, .nan])
        #expect(throws: LineaError.nonFinite(tensor: "x", value: .infinity, index: [1, 1], hint: "")) { try t.checkFiniteOutput("x") }
        let lse = try Tensor(shape: [2], scalars: [-.infinity, 1])
        try lse.checkFiniteOutput("lse", allowNegativeInfinity: true)
        #expect(throws: LineaError.self) { try lse.checkFiniteOutput("lse") }
        #expect(try Tensor(shape: [9], scalars: [1, -7, 3, .nan, 2, 0, 0, 0, -4]).maxMagnitude == 7)
    }

    @Test func errorStatsOfDifferentSizesAreInfinite() throws {
        #expect(ErrorStats([1, 2], [1]).relativeRMS == .infinity)
        #expect(ErrorStats(try Tensor(zeros: [2, 1]), try Tensor(zeros: [1, 2])).maxAbs == .infinity)
    }

    @Test func byteCountsParse() {
        #expect(MemoryBudget.parseBytes("32G") == 32 << 30)
        #expect(MemoryBudget.parseBytes("512M") == 512 << 20)
        #expect(MemoryBudget.parseBytes("1.5GiB") == 3 << 29)
        #expect(MemoryBudget.parseBytes("64k") == 64 << 10)
        #expect(MemoryBudget.parseBytes("4096") == 4096)
        for bad in ["", "0", "-1", "abc", "1e3", "G", "nan", "inf", "9000000000T", "1.2.3M"] {
            #expect(MemoryBudget.parseBytes(bad) == nil, "\(bad)")
        }
    }

    @Test func blockMaskSizesNearIntMaxDoNotTrap() throws {
        #expect(throws: LineaError.self) { try BlockMask.dense(T: .max, S: .max, blockRows: 1, blockKeys: 1) }
        #expect(throws: LineaError.self) { try BlockMask.random(B: 1, H: 1, T: 8, S: 8, blockRows: 0, blockKeys: 4, density: 0.5, seed: 1) }
        let mask = try BlockMask.dense(T: .max, S: 10, blockRows: .max, blockKeys: 64)
        #expect(mask.shape == [1, 1, 1, 1])
        #expect(throws: LineaError.self) { try mask.validate(B: 1, Hq: 1, T: .max, S: .max) }
    }

    @Test func seedNearUInt64MaxWorks() throws {
        let inputs = try RecurrenceInputs.random(.gatedDeltaRule, B: 1, T: 3, H: 1, K: 4, V: 4, seed: .max)
        _ = try Recurrence.forward(.gatedDeltaRule, inputs, form: .recurrent)
        #expect(throws: LineaError.self) { try RecurrenceInputs.random(.deltaRule, B: 1, T: 3, H: 1, K: 0, V: 4, seed: 1) }
    }
}
