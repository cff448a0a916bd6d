import Foundation
import Testing
import Linea

/// A backend that claims a GPU ordinal but keeps host memory and runs nothing: enough to test the dispatch's
/// device checks without a GPU.
private final class FakeGPUBackend: Backend, @unchecked Sendable {
    let device = Device.cuda(7)
    func allocate(byteCount: Int) throws -> TensorStorage {
        let host = try TensorStorage.host(byteCount: byteCount)
        return TensorStorage(device: device, address: host.address, byteCount: byteCount, owner: host)
    }
    func copy(_ source: DeviceTensor, into destination: DeviceTensor) throws {
        // Element by element over the merged box, as the CUDA backend's strided-copy kernel walks it.
        let (e, box) = (source.dtype.byteCount, StridedRuns(source, destination).merged)
        for i in 0..<source.count {
            var (rest, s, d) = (i, 0, 0)
            for axis in box.shape.indices.reversed() {
                let index = rest % box.shape[axis]
                (rest, s, d) = (rest / box.shape[axis], s + index * box.a[axis], d + index * box.b[axis])
            }
            UnsafeMutableRawPointer(bitPattern: destination.address + UInt(d * e))!
                .copyMemory(from: UnsafeRawPointer(bitPattern: source.address + UInt(s * e))!, byteCount: e)
        }
    }
    func supports<Call: OpCall>(_ call: Call) -> Support { .unsupported("the fake GPU runs nothing") }
    func execute<Call: OpCall>(_ call: Call) throws {}
    func synchronize() throws {}
}

/// `x` `[B,T,H,K]` with each head repeated `group` times along the head axis, `[B,T,H·group,K]`: what grouped value
/// heads read without materializing it.
private func repeatHeads(_ x: Tensor, _ group: Int) throws -> Tensor {
    let (B, T, H, K) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    var out: [Float] = []
    for bt in 0..<(B * T) {
        for h in 0..<H {
            for _ in 0..<group { out += x.scalars[((bt * H + h) * K)..<((bt * H + h + 1) * K)] }
        }
    }
    return try Tensor(shape: [B, T, H * group, K], scalars: out)
}

/// Token `t` of a `[B,T,H,...]` tensor as `[B,H,...]`.
private func token(_ x: Tensor, _ t: Int) throws -> Tensor {
    let (B, T) = (x.shape[0], x.shape[1])
    let row = x.count / (B * T)
    var out: [Float] = []
    for b in 0..<B { out += x.scalars[((b * T + t) * row)..<((b * T + t + 1) * row)] }
    return try Tensor(shape: [B] + x.shape.dropFirst(2), scalars: out)
}

@Suite struct DeviceTensorTests {
    /// Host buffers of 64 KiB and more are reused by size once freed: a reused one still comes back zeroed from
    /// `zeros`, and a recurrence whose outputs come uninitialized from a dirty reused buffer still matches the reference.
    @Test func reusedHostBuffersStartClean() throws {
        let n = 300_000  // 1.2 MB
        _ = try DeviceTensor(Tensor(shape: [n], scalars: [Float](repeating: 7, count: n)))  // freed at once, kept
        #expect(try DeviceTensor.zeros([n]).host().scalars.allSatisfy { $0 == 0 })
        let (T, H, K, V) = (128, 4, 16, 64)  // o is 128 KiB
        let q = try Tensor.randomNormal([1, T, H, K], seed: 71, scale: 0.1), k = try Tensor.randomNormal([1, T, H, K], seed: 72, scale: 0.1)
        let v = try Tensor.randomNormal([1, T, H, V], seed: 73), g = try Tensor(zeros: [1, T, H], value: -0.1)
        let want = try Recurrence.forward(.simpleGLA, RecurrenceInputs(q: q, k: k, v: v, g: g), form: .reference)
        for form in [RecurrenceForm.recurrent, .chunked(size: 32)] {
            for _ in 0..<2 { _ = try DeviceTensor(Tensor(shape: [T * H * V], scalars: [Float](repeating: .nan, count: T * H * V))) }
            let got = try Recurrence.forward(.simpleGLA, q: DeviceTensor(q), k: DeviceTensor(k), v: DeviceTensor(v), g: DeviceTensor(g), form: form)
            #expect(ErrorStats(try got.o.host().scalars, want.o.scalars).relativeRMS < 1e-5, "\(form)")
        }
    }

    @Test func floatRoundTripsKeepTheirDType() throws {
        let x = try Tensor.randomNormal([3, 5], seed: 1)
        #expect(try DeviceTensor(x).host() == x)
        let bf = try DeviceTensor(x, dtype: .bfloat16)
        #expect(bf.dtype == .bfloat16 && bf.byteCount == 30)
        #expect(try bf.host() == HalfPrecision.roundedToBFloat16(x))
        #expect(try DeviceTensor(x, dtype: .float16).host() == HalfPrecision.roundedToFloat16(x))
        #expect(throws: LineaError.self) { try DeviceTensor(x, dtype: .int32) }
    }

    @Test func integersStayIntegers() throws {
        let ids = try DeviceTensor(integers: [0, 151_643, -1, 7], shape: [2, 2])
        #expect(ids.dtype == .int64)
        #expect(try ids.hostIntegers() == [0, 151_643, -1, 7])
        #expect(try DeviceTensor(integers: [3, 4], shape: [2], dtype: .int32).hostIntegers() == [3, 4])
        #expect(throws: LineaError.invalidArgument(argument: "tensor", expected: "a float tensor to read as Float32 (hostIntegers() reads integers)",
                                                   actual: "dtype i64")) { try ids.host() }
        #expect(throws: LineaError.self) { try DeviceTensor(integers: [1 << 40], shape: [1], dtype: .int32) }
        #expect(throws: LineaError.self) { try DeviceTensor(Tensor(zeros: [2])).hostIntegers() }
    }

    /// A KV cache's first rows per sequence are read in place by a GPU's attention (`keyRows` = its capacity); other
    /// views are not.
    @Test func attentionKeyRowsOfCacheViews() throws {
        let keys = try DeviceTensor.zeros([3, 50, 2, 64]), values = try DeviceTensor.zeros([3, 50, 2, 64])
        #expect(AttentionCall.keyRows(k: keys, v: values) == 50)
        let (k, v) = (try keys.narrowed(axis: 1, 0..<40), try values.narrowed(axis: 1, 0..<40))
        #expect(AttentionCall.keyRows(k: k, v: v) == 50)
        #expect(AttentionCall.keyRows(k: k, v: try DeviceTensor.zeros([3, 60, 2, 64]).narrowed(axis: 1, 0..<40)) == nil)  // two capacities
        #expect(AttentionCall.keyRows(k: k, v: try DeviceTensor.zeros([3, 50, 2, 32]).narrowed(axis: 1, 0..<40)) == nil)  // D != Dv
        #expect(AttentionCall.keyRows(k: try keys.narrowed(axis: 3, 0..<32), v: try values.narrowed(axis: 3, 0..<32)) == nil)
        #expect(AttentionCall.keyRows(k: try keys.narrowed(axis: 1, 10..<40), v: try values.narrowed(axis: 1, 10..<40)) == 50)
    }

    @Test func viewsShareStorage() throws {
        // A KV cache [B=2, Smax=6, H=3, D=4] read as its first S = 4 rows, and one row written through a view.
        let values = (0..<(2 * 6 * 3 * 4)).map(Float.init)
        let cache = try DeviceTensor(Tensor(shape: [2, 6, 3, 4], scalars: values))
        let first = try cache.narrowed(axis: 1, 0..<4)
        #expect(first.shape == [2, 4, 3, 4] && !first.isContiguous)
        let packed = try first.contiguous().host()
        #expect(packed[1, 3, 2, 1] == values[((1 * 6 + 3) * 3 + 2) * 4 + 1])
        let row = try cache.narrowed(axis: 1, 4..<5)
        try row.copy(from: DeviceTensor(Tensor(zeros: [2, 1, 3, 4], value: -1)))
        let after = try cache.host()
        #expect(after[0, 4, 1, 2] == -1 && after[1, 4, 2, 3] == -1 && after[1, 5, 0, 0] == values[(1 * 6 + 5) * 12])
        let second = try cache.selected(axis: 0, 1)
        #expect(try second.host()[5, 0, 0] == values[(1 * 6 + 5) * 12])
        #expect(throws: LineaError.self) { try cache.narrowed(axis: 1, 3..<7) }
        #expect(throws: LineaError.self) { try cache.narrowed(axis: 4, 0..<1) }
        #expect(throws: LineaError.self) { try cache.selected(axis: 0, 2) }
        #expect(throws: LineaError.self) { try first.reshaped([32, 3]) }
        #expect(try cache.reshaped([12, 12]).shape == [12, 12])
    }

    @Test func stridedViewsCopyOnADeviceAsOnTheHost() throws {
        Backends.register(FakeGPUBackend())
        let x = try Tensor.randomNormal([3, 5, 4, 6], seed: 4)
        let (host, gpu) = (try DeviceTensor(x), try DeviceTensor(x).to(.cuda(7)))
        for (axis, range) in [(3, 1..<4), (3, 2..<3), (2, 1..<3), (1, 2..<5), (0, 1..<2), (2, 0..<1)] {
            #expect(try gpu.narrowed(axis: axis, range).contiguous().host() == (try host.narrowed(axis: axis, range).host()), "axis \(axis) \(range)")
            let target = try DeviceTensor.zeros(x.shape, on: .cuda(7))
            try target.narrowed(axis: axis, range).copy(from: gpu.narrowed(axis: axis, range))
            let want = try DeviceTensor.zeros(x.shape)
            try want.narrowed(axis: axis, range).copy(from: host.narrowed(axis: axis, range))
            #expect(try target.host() == (try want.host()), "into axis \(axis) \(range)")
        }
        #expect(StridedRuns(try host.narrowed(axis: 3, 1..<4), try DeviceTensor.zeros([3, 5, 4, 3])).merged.shape == [60, 3])
        #expect(StridedRuns(try host.narrowed(axis: 1, 2..<5), try DeviceTensor.zeros([3, 3, 4, 6])).merged.shape == [3, 72])
        let column = StridedRuns(try host.narrowed(axis: 3, 2..<3), try DeviceTensor.zeros([3, 5, 4, 1])).merged
        #expect(column.shape == [60] && column.a == [6] && column.b == [1])
    }

    @Test func tensorsOnDifferentDevicesAreAnErrorNamingTheArgument() throws {
        Backends.register(FakeGPUBackend())
        let x = try RecurrenceInputs.random(.simpleGLA, B: 1, T: 3, H: 2, K: 4, V: 4, seed: 3, initialState: false)
        let q = try DeviceTensor(x.q), k = try DeviceTensor(x.k)
        let vGPU = try DeviceTensor(x.v).to(.cuda(7))
        #expect(vGPU.device == .cuda(7))
        #expect(try vGPU.host() == x.v)
        #expect(throws: LineaError.invalidArgument(argument: "v", expected: "a tensor on cpu, where q is", actual: "a tensor on cuda:7")) {
            try Recurrence.forward(.simpleGLA, q: q, k: k, v: vGPU, g: DeviceTensor(x.g!))
        }
        // All on the fake GPU: its backend refuses, with its reason, and nothing moves to the CPU behind the caller.
        do {
            _ = try Recurrence.forward(.simpleGLA, q: q.to(.cuda(7)), k: k.to(.cuda(7)), v: vGPU, g: DeviceTensor(x.g!).to(.cuda(7)))
            Issue.record("expected an error")
        } catch let LineaError.unavailable(what, reason) {
            #expect(what == "simple_gla on cuda:7" && reason == "the fake GPU runs nothing")
        }
        #expect(throws: LineaError.self) { try DeviceTensor.zeros([2], on: .cuda(9)) }
    }

    @Test func forwardOnDeviceTensorsMatchesTheHostForms() throws {
        for mechanism in RecurrentMechanism.allCases {
            let x = try RecurrenceInputs.random(mechanism, B: 2, T: 70, H: 2, HV: 4, K: 8, V: 6, seed: 11)
            let want = try Recurrence.forward(mechanism, x, form: .reference)
            for dtype in [DType.float32, .bfloat16] {
                func d(_ t: Tensor?) throws -> DeviceTensor? { try t.map { try DeviceTensor($0, dtype: dtype) } }
                let got = try Recurrence.forward(mechanism, q: d(x.q)!, k: d(x.k)!, v: d(x.v)!, g: d(x.g), beta: d(x.beta),
                                                 initialState: DeviceTensor(x.initialState!))
                #expect(got.o.dtype == .float32 && got.o.shape == [2, 70, 4, 6])
                // bf16 inputs: compared against the reference on the same rounded inputs.
                var rounded = x
                (rounded.q, rounded.k, rounded.v) = (try d(x.q)!.host(), try d(x.k)!.host(), try d(x.v)!.host())
                (rounded.g, rounded.beta) = (try d(x.g)?.host(), try d(x.beta)?.host())
                let expected = dtype == .float32 ? want : try Recurrence.forward(mechanism, rounded, form: .reference)
                #expect(ErrorStats(try got.o.host(), expected.o).relativeRMS < 1e-5, "\(mechanism) \(dtype)")
                #expect(ErrorStats(try got.finalState.host(), expected.finalState).relativeRMS < 1e-5, "\(mechanism) \(dtype)")
            }
        }
    }

    /// Decode steps on a resident state equal the reference over the whole sequence, with grouped value heads
    /// (HV = 2H, checked against the reference on explicitly repeated q and k) and with qk L2 normalization.
    @Test func stepsMatchTheReferenceWithGroupedValueHeads() throws {
        for mechanism in RecurrentMechanism.allCases {
            for (group, l2) in [(1, false), (2, false), (2, true)] {
                let (B, T, H, K, V) = (2, 5, 2, 8, 12)
                var x = try RecurrenceInputs.random(mechanism, B: B, T: T, H: H * group, K: K, V: V, seed: 5)
                // q, k with H heads (unit keys for the plain delta rules); the oracle reads them repeated.
                var heads = RecurrenceInputs(q: try Tensor.randomNormal([B, T, H, K], seed: 21), k: try Tensor.randomNormal([B, T, H, K], seed: 22),
                                             v: x.v)
                if mechanism.isDelta && !l2 { heads = try heads.qkL2Normalized() }
                (x.q, x.k) = (try repeatHeads(heads.q, group), try repeatHeads(heads.k, group))
                x.useQKL2Norm = l2
                let want = try Recurrence.forward(mechanism, x, form: .reference)
                let state = try DeviceTensor(x.initialState!)
                let o = try DeviceTensor.zeros([B, H * group, V])
                for t in 0..<T {
                    try Recurrence.step(mechanism, q: DeviceTensor(token(heads.q, t)), k: DeviceTensor(token(heads.k, t)),
                                        v: DeviceTensor(token(x.v, t)), g: x.g.map { try DeviceTensor(token($0, t)) },
                                        beta: x.beta.map { try DeviceTensor(token($0, t)) }, state: state, o: o, useQKL2Norm: l2)
                    #expect(ErrorStats(try o.host(), try token(want.o, t)).relativeRMS < 1e-5, "\(mechanism) group \(group) l2 \(l2) t \(t)")
                }
                #expect(ErrorStats(try state.host(), want.finalState).relativeRMS < 1e-5, "\(mechanism) group \(group) l2 \(l2)")
            }
        }
    }

    /// Attention on device tensors, the keys read from a preallocated cache through a view of its first S rows.
    @Test func attentionReadsACacheView() throws {
        let (B, T, S, Smax, Hq, Hkv, D) = (2, 3, 10, 16, 4, 2, 8)
        let q = try Tensor.randomNormal([B, T, Hq, D], seed: 1)
        let kCache = try DeviceTensor(Tensor.randomNormal([B, Smax, Hkv, D], seed: 2))
        let vCache = try DeviceTensor(Tensor.randomNormal([B, Smax, Hkv, D], seed: 3))
        let (k, v) = (try kCache.narrowed(axis: 1, 0..<S), try vCache.narrowed(axis: 1, 0..<S))
        for options in [AttentionOptions(causal: true), AttentionOptions(causal: true, window: 4), AttentionOptions(causal: false)] {
            let want = try Attention.forward(q: q, k: k.host(), v: v.host(), options: options, form: .reference)
            let got = try Attention.forward(q: DeviceTensor(q), k: k, v: v, options: options)
            #expect(ErrorStats(try got.o.host(), want.o).relativeRMS < 1e-5)
            #expect(ErrorStats(try got.lse.host(), want.lse).relativeRMS < 1e-5)
        }
        #expect(throws: LineaError.self) { try Attention.forward(q: DeviceTensor(q), k: k, v: v.narrowed(axis: 1, 0..<S - 1)) }
    }

    @Test func blockSparseTakesAByteMask() throws {
        let (B, T, S, H, D) = (1, 20, 20, 2, 8)
        let q = try Tensor.randomNormal([B, T, H, D], seed: 1), k = try Tensor.randomNormal([B, S, H, D], seed: 2)
        let v = try Tensor.randomNormal([B, S, H, D], seed: 3)
        let mask = try BlockMask.random(B: B, H: H, T: T, S: S, blockRows: 8, blockKeys: 4, density: 0.5, seed: 4)
        let want = try BlockSparseAttention.reference(q: q, k: k, v: v, mask: mask)
        let bytes = try DeviceTensor.zeros(mask.shape, dtype: .uint8)
        bytes.storage.hostPointer!.copyMemory(from: mask.values, byteCount: mask.values.count)
        let got = try BlockSparseAttention.forward(q: DeviceTensor(q), k: DeviceTensor(k), v: DeviceTensor(v), mask: bytes, blockRows: 8, blockKeys: 4)
        #expect(ErrorStats(try got.o.host(), want.o).relativeRMS < 1e-6)
        #expect(throws: LineaError.self) {
            try BlockSparseAttention.forward(q: DeviceTensor(q), k: DeviceTensor(k), v: DeviceTensor(v), mask: DeviceTensor(Tensor(zeros: mask.shape)),
                                             blockRows: 8, blockKeys: 4)
        }
    }

    @Test func stepChecksItsArguments() throws {
        let state = try DeviceTensor.zeros([1, 4, 8, 8])
        let q = try DeviceTensor.zeros([1, 3, 8]), v = try DeviceTensor.zeros([1, 4, 8])
        #expect(throws: LineaError.shapeMismatch(argument: "v", expected: "[1,HV,V] with HV a multiple of H = 3", actual: "[1, 4, 8]")) {
            try Recurrence.step(.linearAttention, q: q, k: q, v: v, state: state)
        }
        let q2 = try DeviceTensor.zeros([1, 2, 8])
        #expect(throws: LineaError.self) { try Recurrence.step(.linearAttention, q: q2, k: q2, v: v, state: DeviceTensor.zeros([1, 4, 8, 8], dtype: .bfloat16)) }
        #expect(throws: LineaError.self) { try Recurrence.step(.simpleGLA, q: q2, k: q2, v: v, state: state) }
        let ids = try DeviceTensor(integers: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], shape: [1, 2, 8])
        #expect(throws: LineaError.self) { try Recurrence.step(.linearAttention, q: ids, k: q2, v: v, state: state) }
    }
}

/// Counts its items into a shared buffer, and optionally runs a nested static loop inside each item.
private struct CountingItems: ParallelItems, @unchecked Sendable {
    let counts: UnsafeMutablePointer<Int>, nested: Bool, inner: Int
    func run(_ item: Int) {
        counts[item] += 1
        if nested { Parallel.forEachStatic(inner, CountingItems(counts: counts + 1000 + item * inner, nested: false, inner: 0)) }
    }
}

@Suite struct StaticLoopTests {
    /// Every item runs exactly once, also for loops nested inside the parked threads' items (no deadlock: the inner
    /// loops run on their callers' threads).
    @Test func everyItemOnceAndNestingRuns() {
        let counts = UnsafeMutablePointer<Int>.allocate(capacity: 1000 + 64 * 7)
        defer { counts.deallocate() }
        counts.initialize(repeating: 0, count: 1000 + 64 * 7)
        Parallel.forEachStatic(1000, CountingItems(counts: counts, nested: false, inner: 0))
        #expect((0..<1000).allSatisfy { counts[$0] == 1 })
        counts.initialize(repeating: 0, count: 1000 + 64 * 7)
        Parallel.forEachStatic(64, CountingItems(counts: counts, nested: true, inner: 7))
        #expect((0..<64).allSatisfy { counts[$0] == 1 } && (1000..<(1000 + 64 * 7)).allSatisfy { counts[$0] == 1 })
    }
}
