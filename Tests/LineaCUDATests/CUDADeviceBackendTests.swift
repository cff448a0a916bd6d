import Foundation
import Linea
import LineaCUDA
import Testing

/// The CUDA backend behind the one dispatch: device tensors, transfers, and the recurrences run where their inputs
/// live, against the CPU oracle (skipped when no GPU is present).
@Suite(.enabled(if: CUDABackend.isAvailable, "needs an NVIDIA GPU, its driver and NVRTC"), .serialized)
struct CUDADeviceBackendTests {
    static let gpu = Device.cuda(0)

    init() throws { try CUDADeviceBackend.register() }

    @Test func transfersAndViews() throws {
        let x = try Tensor.randomNormal([2, 6, 3, 4], seed: 1)
        let d = try DeviceTensor(x, on: Self.gpu)
        #expect(d.device == Self.gpu)
        #expect(try d.host() == x)
        #expect(try DeviceTensor(x, dtype: .bfloat16, on: Self.gpu).host() == HalfPrecision.roundedToBFloat16(x))
        // A KV cache's first rows read back through a strided view, and a row written into the cache on the device.
        let first = try d.narrowed(axis: 1, 0..<4)
        #expect(try first.host() == (try DeviceTensor(x).narrowed(axis: 1, 0..<4).host()))
        try d.narrowed(axis: 1, 5..<6).copy(from: DeviceTensor(Tensor(zeros: [2, 1, 3, 4], value: 3)).to(Self.gpu))
        let back = try d.host()
        #expect(back[1, 5, 2, 3] == 3 && back[1, 4, 2, 3] == x[1, 4, 2, 3])
        #expect(try DeviceTensor(integers: [5, 1 << 40], shape: [2], on: Self.gpu).hostIntegers() == [5, 1 << 40])
    }

    /// Views copied on the device (one strided-copy launch: a slice of a fused projection packed, a row block of a KV
    /// cache written) hold what the same copies on the host hold, for elements of 1, 2, 4 and 8 bytes.
    @Test(arguments: [DType.uint8, .bfloat16, .float32, .int64])
    func stridedCopiesOnTheDeviceMatchTheHost(_ dtype: DType) throws {
        // Slices along each axis of a small box, then rows of 32 and 28 elements at 32- and 16-byte aligned starts
        // (the row copy's 16-, 8- and 4-byte units, and its elements).
        for (shape, cuts) in [([3, 5, 4, 6], [(3, 1..<4), (3, 2..<3), (2, 1..<3), (1, 2..<5), (0, 1..<2)]), ([2, 3, 40], [(2, 8..<40), (2, 4..<32), (2, 1..<2)])] {
            try checkStridedCopies(dtype, shape: shape, cuts: cuts)
        }
    }

    /// Each cut of `shape` packed on the device and copied back into a zero box matches the host.
    func checkStridedCopies(_ dtype: DType, shape: [Int], cuts: [(Int, Range<Int>)]) throws {
        let values = (0..<shape.reduce(1, *)).map { ($0 * 37) % 101 }
        let host = dtype.isFloatingPoint ? try DeviceTensor(Tensor(shape: shape, scalars: values.map(Float.init)), dtype: dtype)
            : try DeviceTensor(integers: values, shape: shape, dtype: dtype)
        let gpu = try host.to(Self.gpu)
        func read(_ x: DeviceTensor) throws -> [Int] { dtype.isFloatingPoint ? try x.host().scalars.map { Int($0) } : try x.hostIntegers() }
        for (axis, range) in cuts {
            let packed = try gpu.narrowed(axis: axis, range).contiguous()
            #expect(packed.device == Self.gpu && packed.isContiguous)
            #expect(try read(packed) == (try read(host.narrowed(axis: axis, range).contiguous())), "axis \(axis) \(range)")
            let target = try DeviceTensor.zeros(shape, dtype: dtype, on: Self.gpu), hostTarget = try DeviceTensor.zeros(shape, dtype: dtype)
            try target.narrowed(axis: axis, range).copy(from: packed)
            try hostTarget.narrowed(axis: axis, range).copy(from: host.narrowed(axis: axis, range))
            #expect(try read(target) == (try read(hostTarget)), "into axis \(axis) \(range)")
        }
    }

    /// Uploads larger than the two pinned staging slots arrive whole, and the source may be overwritten as soon as the
    /// upload returns (each slice was staged before it); several uploads queued back to back reuse the slots.
    @Test func largeUploadsGoThroughPinnedStaging() throws {
        let count = 5_000_003  // ~20 MB: three slices of 8 MiB, the last one partial
        var source = (0..<count).map { Float($0 % 9_973) }
        let first = try DeviceTensor(Tensor(shape: [count], scalars: source)).to(Self.gpu)
        let host = try DeviceTensor(Tensor(shape: [count], scalars: source))
        let second = try host.to(Self.gpu)
        host.mutableFloats.update(repeating: -1)  // after the upload returned
        source.withUnsafeMutableBufferPointer { $0.update(repeating: -2) }
        let want = (0..<count).map { Float($0 % 9_973) }
        #expect(try first.host().scalars == want)
        #expect(try second.host().scalars == want)
        let strided = try DeviceTensor(Tensor(shape: [2, count / 2], scalars: Array(want[0..<(count / 2 * 2)]))).narrowed(axis: 1, 1..<(count / 2))
        #expect(try strided.to(Self.gpu).host() == (try strided.host()))
    }

    @Test(arguments: RecurrentMechanism.allCases, [DType.float32, .bfloat16, .float16])
    func stepsRunOnTheDeviceWithoutHostCopies(_ m: RecurrentMechanism, _ dtype: DType) throws {
        let backend = try CUDADeviceBackend.register()
        for group in [1, 2] { try steps(m, dtype, group: group, backend: backend) }
    }

    /// T decode steps with HV = group·H value heads, checked against the oracle, with no host copy inside a step.
    private func steps(_ m: RecurrentMechanism, _ dtype: DType, group: Int, backend: CUDADeviceBackend) throws {
        let (B, T, H, K, V) = (2, 4, 3, 64, 64)
        let HV = H * group
        let x = try RecurrenceInputs.random(m, B: B, T: T, H: H, HV: HV, K: K, V: V, seed: 9)
        func token(_ t: Tensor?, _ i: Int) throws -> DeviceTensor? {
            guard let t else { return nil }
            let row = t.count / (B * T)
            var out: [Float] = []
            for b in 0..<B { out += t.scalars[((b * T + i) * row)..<((b * T + i + 1) * row)] }
            return try DeviceTensor(Tensor(shape: [B] + t.shape.dropFirst(2), scalars: out), dtype: dtype, on: Self.gpu)
        }
        let tokens = try (0..<T).map { i in (try token(x.q, i)!, try token(x.k, i)!, try token(x.v, i)!, try token(x.g, i), try token(x.beta, i)) }
        let state = try DeviceTensor(x.initialState!, on: Self.gpu)
        let o = try DeviceTensor.zeros([B, HV, V], on: Self.gpu)
        var outputs: [Tensor] = []
        for (q, k, v, g, beta) in tokens {
            let before = backend.hostTransferCountOnThisThread
            try Recurrence.step(m, q: q, k: k, v: v, g: g, beta: beta, state: state, o: o)
            #expect(backend.hostTransferCountOnThisThread == before, "a host copy inside the step")
            outputs.append(try o.host())
        }
        // The oracle on the inputs as the device holds them.
        var rounded = x
        (rounded.q, rounded.k, rounded.v) = (CUDAUpload.rounded(x.q, dtype), CUDAUpload.rounded(x.k, dtype), CUDAUpload.rounded(x.v, dtype))
        (rounded.g, rounded.beta) = (x.g.map { CUDAUpload.rounded($0, dtype) }, x.beta.map { CUDAUpload.rounded($0, dtype) })
        let want = try Recurrence.forward(m, rounded, form: .reference)
        let tolerance = dtype == .float32 ? 1e-5 : 2e-3
        #expect(ErrorStats(try state.host(), want.finalState).relativeRMS < tolerance, "\(m) \(dtype) HV = \(HV) final state")
        var last: [Float] = []
        for b in 0..<B {
            let start = (b * T + T - 1) * HV * V
            last += want.o.scalars[start..<(start + HV * V)]
        }
        let lastWanted = try Tensor(shape: [B, HV, V], scalars: last)
        #expect(ErrorStats(outputs[T - 1], lastWanted).relativeRMS < tolerance, "\(m) \(dtype) HV = \(HV) last o")
    }

    @Test(arguments: RecurrentMechanism.allCases, [DType.float32, .bfloat16])
    func chunkedForwardRunsWhereTheInputsLive(_ m: RecurrentMechanism, _ dtype: DType) throws {
        for group in [1, 2] { try chunkedForward(m, dtype, group: group) }
    }

    /// One chunked call on the GPU with HV = group·H value heads against the oracle.
    private func chunkedForward(_ m: RecurrentMechanism, _ dtype: DType, group: Int) throws {
        let x = try RecurrenceInputs.random(m, B: 2, T: 200, H: 2, HV: 2 * group, K: 64, V: 64, seed: 4)
        func put(_ t: Tensor?, _ type: DType) throws -> DeviceTensor? { try t.map { try DeviceTensor($0, dtype: type, on: Self.gpu) } }
        let got = try Recurrence.forward(m, q: put(x.q, dtype)!, k: put(x.k, dtype)!, v: put(x.v, dtype)!, g: put(x.g, .float32),
                                         beta: put(x.beta, .float32), initialState: put(x.initialState, .float32))
        #expect(got.o.device == Self.gpu && got.finalState.device == Self.gpu)
        var rounded = x
        (rounded.q, rounded.k, rounded.v) = (CUDAUpload.rounded(x.q, dtype), CUDAUpload.rounded(x.k, dtype), CUDAUpload.rounded(x.v, dtype))
        let want = try Recurrence.forward(m, rounded, form: .reference)
        let tolerance = dtype == .float32 ? 1e-5 : 2e-3
        #expect(ErrorStats(try got.o.host(), want.o).relativeRMS < tolerance, "\(m) \(dtype) HV = \(2 * group) o")
        #expect(ErrorStats(try got.finalState.host(), want.finalState).relativeRMS < tolerance, "\(m) \(dtype) HV = \(2 * group) final state")
    }

    @Test(arguments: [DType.float32, .bfloat16, .float16])
    func attentionRunsWhereTheInputsLive(_ dtype: DType) throws {
        let (B, T, S, Hq, Hkv, D) = (1, 5, 40, 4, 2, 64)
        let q = try Tensor.randomNormal([B, T, Hq, D], seed: 1), k = try Tensor.randomNormal([B, S, Hkv, D], seed: 2)
        let v = try Tensor.randomNormal([B, S, Hkv, D], seed: 3)
        let want = try Attention.forward(q: CUDAUpload.rounded(q, dtype), k: CUDAUpload.rounded(k, dtype), v: CUDAUpload.rounded(v, dtype),
                                         options: AttentionOptions(causal: true), form: .reference)
        for form in [nil, AttentionForm.splitKV(partitions: nil)] {
            let got = try Attention.forward(q: DeviceTensor(q, dtype: dtype, on: Self.gpu), k: DeviceTensor(k, dtype: dtype, on: Self.gpu),
                                            v: DeviceTensor(v, dtype: dtype, on: Self.gpu), options: AttentionOptions(causal: true), form: form)
            let tolerance = dtype == .float32 ? 1e-5 : 2e-3
            #expect(ErrorStats(try got.o.host(), want.o).relativeRMS < tolerance, "\(dtype) \(String(describing: form))")
            #expect(ErrorStats(try got.lse.host(), want.lse).relativeRMS < tolerance, "\(dtype) \(String(describing: form))")
        }
    }

    /// k and v as a KV cache's first S of 50 rows per sequence (B = 3, a strided view) are read in place: flash for a
    /// prefill (D 64: mma.sync, D 128: wgmma) and split-KV for one token, equal to the packed reference.
    @Test(arguments: [DType.float32, .bfloat16])
    func attentionReadsAKVCacheViewInPlace(_ dtype: DType) throws {
        for (T, D) in [(17, 64), (17, 128), (1, 64)] {
            let (B, S, capacity, Hq, Hkv) = (3, 40, 50, 4, 2)
            let q = try Tensor.randomNormal([B, T, Hq, D], seed: 1)
            let (keys, values) = (try Tensor.randomNormal([B, capacity, Hkv, D], seed: 2), try Tensor.randomNormal([B, capacity, Hkv, D], seed: 3))
            func firstRows(_ x: Tensor) throws -> DeviceTensor { try DeviceTensor(CUDAUpload.rounded(x, dtype)).narrowed(axis: 1, 0..<S) }
            let want = try Attention.forward(q: DeviceTensor(CUDAUpload.rounded(q, dtype)), k: firstRows(keys).contiguous(),
                                             v: firstRows(values).contiguous(), options: AttentionOptions(causal: true), form: .reference)
            let (k, v) = (try DeviceTensor(keys, dtype: dtype, on: Self.gpu).narrowed(axis: 1, 0..<S),
                          try DeviceTensor(values, dtype: dtype, on: Self.gpu).narrowed(axis: 1, 0..<S))
            #expect(!k.isContiguous && AttentionCall.keyRows(k: k, v: v) == capacity)
            let form: AttentionForm? = T == 1 ? .splitKV(partitions: nil) : nil
            let got = try Attention.forward(q: DeviceTensor(q, dtype: dtype, on: Self.gpu), k: k, v: v, options: AttentionOptions(causal: true), form: form)
            let tolerance = dtype == .float32 ? 1e-5 : 2e-3
            #expect(ErrorStats(try got.o.host(), try want.o.host()).relativeRMS < tolerance, "\(dtype) T = \(T) D = \(D)")
            #expect(ErrorStats(try got.lse.host(), try want.lse.host()).relativeRMS < tolerance, "\(dtype) T = \(T) D = \(D)")
        }
    }

    @Test func blockSparseRunsWhereTheInputsLive() throws {
        let (B, T, S, H, D) = (1, 64, 64, 2, 64)
        let q = try Tensor.randomNormal([B, T, H, D], seed: 1), k = try Tensor.randomNormal([B, S, H, D], seed: 2)
        let v = try Tensor.randomNormal([B, S, H, D], seed: 3)
        let mask = try BlockMask.random(B: B, H: H, T: T, S: S, blockRows: 16, blockKeys: 16, density: 0.5, seed: 4)
        let want = try BlockSparseAttention.reference(q: q, k: k, v: v, mask: mask, options: AttentionOptions(causal: true))
        let bytes = try DeviceTensor.zeros(mask.shape, dtype: .uint8)
        bytes.storage.hostPointer!.copyMemory(from: mask.values, byteCount: mask.values.count)
        let got = try BlockSparseAttention.forward(q: DeviceTensor(q, on: Self.gpu), k: DeviceTensor(k, on: Self.gpu), v: DeviceTensor(v, on: Self.gpu),
                                                   mask: bytes.to(Self.gpu), blockRows: 16, blockKeys: 16, options: AttentionOptions(causal: true))
        #expect(ErrorStats(try got.o.host(), want.o).relativeRMS < 1e-5)
        #expect(ErrorStats(try got.lse.host(), want.lse).relativeRMS < 1e-5)
    }

    @Test func refusalsNameTheReason() throws {
        let q = try DeviceTensor.zeros([1, 2, 512], on: Self.gpu), v = try DeviceTensor.zeros([1, 2, 8], on: Self.gpu)
        let state = try DeviceTensor.zeros([1, 2, 512, 8], on: Self.gpu)
        do {
            try Recurrence.step(.linearAttention, q: q, k: q, v: v, state: state)
            Issue.record("expected K = 512 to be refused")
        } catch let LineaError.unavailable(what, reason) {
            #expect(what == "linear_attn step on cuda:0" && reason.contains("K <= 256"))
        }
        // Dense attention pads D != Dv; the block-sparse kernels do not, and say so.
        let (bq, bv) = (try DeviceTensor.zeros([1, 8, 2, 64], on: Self.gpu), try DeviceTensor.zeros([1, 8, 2, 32], on: Self.gpu))
        let mask = try DeviceTensor.zeros([1, 1, 1, 1], dtype: .uint8, on: Self.gpu)
        do {
            _ = try BlockSparseAttention.forward(q: bq, k: bq, v: bv, mask: mask, blockRows: 64, blockKeys: 64)
            Issue.record("expected D != Dv to be refused by the block-sparse kernels")
        } catch let LineaError.unavailable(_, reason) {
            #expect(reason.contains("D = 64, Dv = 32"), "\(reason)")
        }
        let hostV = try DeviceTensor.zeros([1, 2, 8])
        #expect(throws: LineaError.invalidArgument(argument: "v", expected: "a tensor on cuda:0, where q is", actual: "a tensor on cpu")) {
            try Recurrence.step(.linearAttention, q: q, k: q, v: hostV, state: state)
        }
    }
}
