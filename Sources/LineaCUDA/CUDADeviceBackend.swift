import Foundation
import Linea

/// The backend of one CUDA GPU for Linea's dispatch: device memory, transfers and the ops whose kernels live here.
/// Ops queue on the context's stream; only transfers to the host wait. Register it once with `register(ordinal:)`.
public final class CUDADeviceBackend: Backend, @unchecked Sendable {
    /// The device this backend owns.
    public let device: Device
    /// The context every allocation and launch of this backend uses.
    public let context: CUDAContext
    private let counters = NSLock()
    private var hostTransfers = 0
    private var retentionDecayCache: [Int: CUDABuffer] = [:]
    private let staging: CUDAStaging
    /// Freed blocks kept for reuse by size (at most 1 GiB).
    private let recycler = Recycler(limit: 1 << 30)

    /// Whether allocations come from the device's stream-ordered pool (`cuMemAllocAsync`; else `cuMemAlloc`).
    public let streamOrdered: Bool

    /// A backend on `context`'s GPU. Its memory comes from the device's default stream-ordered pool, told to keep
    /// what is freed (release threshold: unlimited), so that dropping a tensor never synchronizes and a decode
    /// loop's scratch is recycled in place. O(1).
    public init(context: CUDAContext, ordinal: Int) {
        self.context = context
        device = .cuda(ordinal)
        staging = CUDAStaging(context: context)
        let d = context.driver
        var pool: OpaquePointer?
        var keepAll = UInt64.max
        if let getPool = d.cuDeviceGetDefaultMemPool, let setAttribute = d.cuMemPoolSetAttribute, d.cuMemAllocAsync != nil,
           d.cuMemFreeAsync != nil, getPool(&pool, context.device) == 0,
           setAttribute(pool, 4 /* CU_MEMPOOL_ATTR_RELEASE_THRESHOLD */, &keepAll) == 0 {
            streamOrdered = true
        } else {
            streamOrdered = false
        }
    }

    private static let registering = NSLock()

    /// Creates (device 0: shares `CUDABackend.shared`) and registers the backend of GPU `ordinal`, so that tensors on
    /// `.cuda(ordinal)` dispatch here; throws `LineaError.unavailable` without a driver, device or NVRTC. O(1) after the first.
    @discardableResult
    public static func register(ordinal: Int = 0) throws -> CUDADeviceBackend {
        // One at a time: two threads registering at once would each make a backend, and the one replaced would keep
        // its recycled blocks and pinned staging to itself.
        registering.lock()
        defer { registering.unlock() }
        if let existing = try? Backends.backend(for: .cuda(ordinal)) as? CUDADeviceBackend { return existing }
        let context = ordinal == 0 ? try CUDABackend.shared : try CUDAContext(device: ordinal)
        let backend = CUDADeviceBackend(context: context, ordinal: ordinal)
        Backends.register(backend)
        return backend
    }

    /// Host↔device copies made so far (each `copy` call that crossed PCIe counts once), for benchmarks that must
    /// show none inside a loop. O(1).
    public var hostTransferCount: Int {
        counters.lock()
        defer { counters.unlock() }
        return hostTransfers
    }

    /// Zeroed device memory, queued on the stream: from the stream-ordered pool (freed with `cuMemFreeAsync` on
    /// the same stream when the storage goes, without waiting), else `cuMemAlloc`. O(1) plus the fill on the device.
    public func allocate(byteCount: Int) throws -> TensorStorage {
        try allocate(byteCount: byteCount, fill: 0)
    }

    /// Device memory left as the pool hands it over (no fill queued), for outputs an op writes whole; filled with
    /// 0xFF bytes (NaN in every float dtype) when `LINEA_POISON_UNINITIALIZED=1`, so a test run catches an element
    /// a kernel forgot to write. O(1).
    public func allocateUninitialized(byteCount: Int) throws -> TensorStorage {
        try allocate(byteCount: byteCount, fill: Backends.poisonUninitialized ? 0xFF : nil)
    }

    private func allocate(byteCount: Int, fill: UInt8?) throws -> TensorStorage {
        guard streamOrdered, byteCount > 0, let alloc = context.driver.cuMemAllocAsync, let free = context.driver.cuMemFreeAsync else {
            let buffer = try CUDABuffer(context: context, byteCount: byteCount)
            if let fill { try buffer.fill(byte: fill) }
            return TensorStorage(device: device, address: UInt(buffer.address), byteCount: byteCount, owner: buffer)
        }
        try context.makeCurrent()
        let size = (byteCount + 511) & ~511
        var address: UInt64 = 0
        if let reused = recycler.take(size) {
            address = reused
        } else if alloc(&address, size, context.stream) != 0 {
            recycler.drain { _ = free($0, context.stream) }  // blocks of other sizes back to the pool, then once more
            try context.driver.check(alloc(&address, size, context.stream), "cuMemAllocAsync(\(formatBytes(byteCount)))")
        }
        if let fill {
            try context.driver.check(context.driver.cuMemsetD8Async(address, fill, byteCount, context.stream), "cuMemsetD8Async")
        }
        let (ctx, stream, pointer, recycler) = (context, UInt(bitPattern: context.stream), address, recycler)
        return TensorStorage(device: device, address: UInt(address), byteCount: byteCount, owner: context) {
            guard !recycler.keep(pointer, size) else { return }
            _ = ctx.driver.cuCtxSetCurrent(ctx.context)
            _ = free(pointer, OpaquePointer(bitPattern: stream))
        }
    }

    /// Freed pool blocks by size, handed out again without a driver call: a decode step allocates and drops the same
    /// few hundred small tensors every token, and `cuMemAllocAsync` plus `cuMemFreeAsync` cost microseconds each on
    /// the host. Safe as the pool's own reuse is: every op of the backend runs on the one stream, so whatever the
    /// next owner queues runs after the last use queued by the previous one. Holds at most `limit` bytes; an
    /// allocation the pool refuses first returns them all.
    package final class Recycler: @unchecked Sendable {
        private let lock = NSLock()
        private var blocks: [Int: [UInt64]] = [:]
        private var bytes = 0
        /// The most bytes kept at once.
        package let limit: Int

        /// An empty recycler that keeps at most `limit` bytes. O(1).
        package init(limit: Int) { self.limit = limit }

        /// A kept block of exactly `size` bytes, if any. O(1).
        package func take(_ size: Int) -> UInt64? {
            lock.lock()
            defer { lock.unlock() }
            guard let address = blocks[size]?.popLast() else { return nil }
            bytes -= size
            return address
        }

        /// Keeps `address` (`size` bytes) for a later `take`; false when that would pass the limit (the caller frees it). O(1).
        package func keep(_ address: UInt64, _ size: Int) -> Bool {
            lock.lock()
            defer { lock.unlock() }
            guard bytes + size <= limit else { return false }
            blocks[size, default: []].append(address)
            bytes += size
            return true
        }

        /// Hands every kept block to `free` and forgets them. O(blocks).
        package func drain(_ free: (UInt64) -> Void) {
            lock.lock()
            let all = blocks.values.joined()
            blocks = [:]
            bytes = 0
            lock.unlock()
            all.forEach(free)
        }
    }

    /// Host→device (queued; the source may change once it returns), device→host (waits for queued work, then returns
    /// with the bytes on the host) and device→device (queued) copies, one per packed run of the two views. O(bytes).
    public func copy(_ source: DeviceTensor, into destination: DeviceTensor) throws {
        let e = source.dtype.byteCount
        let d = context.driver
        try context.makeCurrent()
        switch (source.device, destination.device) {
        case (.cpu, device):
            // Queued behind the kernels that may still read the destination; the source bytes are staged (pinned slots
            // for large runs, the driver's bounce buffer for small ones) before this returns, so the host may change
            // them at once and nothing waits for the device.
            try StridedRuns(source, destination).forEach { s, t, n in
                guard let from = UnsafeRawPointer(bitPattern: source.storage.address + UInt(s * e)), n > 0 else { return }
                try staging.upload(from: from, to: UInt64(destination.storage.address) + UInt64(t * e), byteCount: n * e)
            }
            countTransfer()
        case (device, .cpu):
            try context.synchronize()
            try StridedRuns(source, destination).forEach { s, t, n in
                try d.check(d.cuMemcpyDtoH(UnsafeMutableRawPointer(bitPattern: destination.storage.address + UInt(t * e)),
                                           UInt64(source.storage.address) + UInt64(s * e), n * e), "cuMemcpyDtoH_v2")
            }
            countTransfer()
        case (device, device):
            // A strided view (a slice of a fused projection, T rows) in one launch rather than one copy per packed run.
            let runs = StridedRuns(source, destination), box = runs.merged
            let oneRun = box.shape.count == 1 && box.a == [1] && box.b == [1]
            if !oneRun, box.shape.count <= 6, [1, 2, 4, 8].contains(e), source.count <= Int(Int32.max),
               (box.a + box.b).allSatisfy({ $0 >= 0 && $0 <= Int(Int32.max) }) {
                func view(_ x: DeviceTensor, _ strides: [Int]) -> CUDABuffer {
                    CUDABuffer(context: context, viewing: UInt64(x.address),
                               byteCount: CUDAModelOps.stridedBytes(shape: box.shape, strides: strides, elementBytes: e))
                }
                return try CUDAModelOps.copyStrided(x: view(source, box.a), out: view(destination, box.b), shape: box.shape,
                                                    sourceStrides: box.a, targetStrides: box.b, elementBytes: e)
            }
            try runs.forEach { s, t, n in
                try d.check(d.cuMemcpyDtoDAsync(UInt64(destination.storage.address) + UInt64(t * e),
                                                UInt64(source.storage.address) + UInt64(s * e), n * e, context.stream), "cuMemcpyDtoDAsync_v2")
            }
        default:
            throw LineaError.unavailable(what: "copy \(source.device) -> \(destination.device)",
                                         reason: "\(device)'s backend copies between the host and \(device) only (go through the host)")
        }
    }

    private func countTransfer() {
        counters.lock()
        hostTransfers += 1
        counters.unlock()
        let thread = Thread.current.threadDictionary
        thread[Self.threadTransfersKey] = ((thread[Self.threadTransfersKey] as? Int) ?? 0) + 1
    }

    private static let threadTransfersKey = "linea.cuda.hostTransfers"

    /// Host↔device copies that the calling thread made so far: what a test running beside others checks (their
    /// copies count in `hostTransferCount` too). O(1).
    public var hostTransferCountOnThisThread: Int {
        (Thread.current.threadDictionary[Self.threadTransfersKey] as? Int) ?? 0
    }

    /// Packed tensors only (attention's k and v may also be a KV cache's first rows per sequence, `keyRows`); per op,
    /// the dtypes and sizes its kernels take (each refusal says which and why). O(1).
    public func supports<Call: OpCall>(_ call: Call) -> Support {
        var strided: String?
        let cache = (call as? AttentionCall)?.keyRows != nil
        call.forEachTensor { name, tensor in
            if strided == nil, !tensor.isContiguous, !(cache && ["k", "v"].contains(name)) { strided = name }
        }
        if let strided { return .unsupported("\(strided) is a strided view; the GPU kernels take packed tensors (contiguous())") }
        switch call {
        case let c as RecurrentStepCall: return stepSupport(c)
        case let c as RecurrenceCall: return scans(c) ? scanSupport(c) : chunkedSupport(c)
        case let c as AttentionCall: return attentionSupport(q: c.q, k: c.k, v: c.v, window: c.options.window, form: c.form)
        case let c as ModelOpCall: return modelOpSupport(c)
        case let c as BlockSparseCall:
            if c.options.window != nil { return .unsupported("the block-sparse kernel has no sliding window (fold it into the mask)") }
            // Dense attention pads D != Dv (attention(_:)); the block-sparse kernels read v and write o at q's head dim.
            if c.q.shape[3] != c.v.shape[3] { return .unsupported("D = \(c.q.shape[3]), Dv = \(c.v.shape[3]); the block-sparse kernels take D = Dv") }
            return attentionSupport(q: c.q, k: c.k, v: c.v, window: nil, form: nil)
        case let c as SelectiveScanCall: return selectiveScanSupport(c)
        case let c as NeighborhoodCall: return neighborhoodSupport(c)
        case let c as LongConvCall: return longConvSupport(c)
        case let c as FeatureMapCall: return featureMapSupport(c)
        case let c as BlockScoresCall: return blockScoresSupport(c)
        default: return .unsupported("no CUDA kernel for \(call.name)")
        }
    }

    /// Queues the call's kernels on the context's stream (no host transfer). O(1) launches.
    public func execute<Call: OpCall>(_ call: Call) throws {
        switch call {
        case let c as RecurrentStepCall: try step(c)
        case let c as RecurrenceCall: try scans(c) ? scan(c) : chunked(c)
        case let c as AttentionCall: try attention(c)
        case let c as ModelOpCall: try modelOp(c)
        case let c as BlockSparseCall: try blockSparse(c)
        case let c as SelectiveScanCall: try selectiveScan(c)
        case let c as NeighborhoodCall: try neighborhood(c)
        case let c as LongConvCall: try longConv(c)
        case let c as FeatureMapCall: try featureMap(c)
        case let c as BlockScoresCall: try blockScores(c)
        default: throw LineaError.unavailable(what: call.name, reason: "no CUDA kernel")
        }
    }

    /// Waits for the stream.
    public func synchronize() throws { try context.synchronize() }

    /// A non-owning buffer over a tensor's bytes, for the launchers. O(1).
    func buffer(_ x: DeviceTensor) -> CUDABuffer {
        CUDABuffer(context: context, viewing: UInt64(x.address), byteCount: x.byteCount)
    }

    // MARK: Recurrences

    /// The step kernel reads one input dtype (f32, bf16 or f16) for q, k, v, g, beta and K <= 256. O(1).
    private func stepSupport(_ c: RecurrentStepCall) -> Support {
        let inputs = [("k", c.k), ("v", c.v), ("g", c.g), ("beta", c.beta)]
        guard CUDAUpload.inputTypes.contains(c.q.dtype) else { return .unsupported("q has dtype \(c.q.dtype.shortName); the step kernel takes f32, bf16 or f16") }
        for (name, x) in inputs where x != nil && x!.dtype != c.q.dtype {
            return .unsupported("\(name) has dtype \(x!.dtype.shortName), q \(c.q.dtype.shortName); the step kernel reads one input dtype")
        }
        if c.shape.K > 256 { return .unsupported("K = \(c.shape.K); the step kernel takes K <= 256") }
        if !c.activations.isEmpty { return .unsupported(Self.noActivations) }
        return .supported
    }

    private func step(_ c: RecurrentStepCall) throws {
        let s = c.shape
        let (q, k) = c.useQKL2Norm ? (try l2Normalized(c.q, dim: s.K), try l2Normalized(c.k, dim: s.K)) : (c.q, c.k)
        try CUDARecurrentStep.step(
            c.mechanism, q: buffer(q), k: buffer(k), v: buffer(c.v), g: c.g.map(buffer), beta: c.beta.map(buffer),
            state: buffer(c.state), o: buffer(c.o), batch: s.B, heads: s.H, valueHeads: s.HV, keyDim: s.K, valueDim: s.V, scale: c.scale, dtype: c.q.dtype,
            columnsPerThread: Self.stepColumns, warpsPerBlock: Self.stepWarps)
    }

    /// Whether a whole-sequence call runs the recurrent scan kernel: asked for (`form` recurrent), and kda where its
    /// chunked kernel (`CUDAChunkedKDA`: bf16, K and V up to 128) does not apply: f32 / f16 inputs in the automatic or
    /// chunked form, larger heads in the automatic form (the scan kernel takes K up to 256), and devices whose shared
    /// memory or architecture the chunked kda kernel does not fit (before sm_80; A100's 163 KB at K > 64). O(1).
    func scans(_ c: RecurrenceCall) -> Bool {
        if c.form == .recurrent { return true }
        guard c.mechanism == .kda else { return false }
        return (c.form == nil && (c.shape.K > 128 || c.shape.V > 128))
            || (c.q.dtype != .bfloat16 && (c.form == nil || c.form == .chunked(size: 64)))
            || !CUDAChunkedKDA.fits(keyDim: c.shape.K <= 64 ? 64 : 128, context: context)
    }

    /// The scan kernel: q, k, v in one of f32, bf16, f16; g and beta f32; K <= 256; o f32 or bf16. O(1).
    private func scanSupport(_ c: RecurrenceCall) -> Support {
        guard CUDAUpload.inputTypes.contains(c.q.dtype), c.k.dtype == c.q.dtype, c.v.dtype == c.q.dtype else {
            return .unsupported("q, k, v dtypes \(c.q.dtype.shortName), \(c.k.dtype.shortName), \(c.v.dtype.shortName); the recurrent kernel takes one of f32, bf16, f16 for all three")
        }
        for (name, x) in [("g", c.g), ("beta", c.beta)] where x != nil && x!.dtype != .float32 {
            return .unsupported("\(name) has dtype \(x!.dtype.shortName); the recurrent kernel reads f32 gates")
        }
        if c.shape.K > 256 { return .unsupported("K = \(c.shape.K); the recurrent kernel takes K <= 256") }
        if !c.activations.isEmpty { return .unsupported(Self.noActivations) }
        if c.o.dtype != .float32 && c.o.dtype != .bfloat16 { return .unsupported("o has dtype \(c.o.dtype.shortName); the recurrent kernel writes f32 or bf16") }
        return .supported
    }

    /// An empty call (T = 0 or no heads) done: o is empty, the final state is the initial one (or zeros; the outputs
    /// come uninitialized). Returns whether the call was empty. O(state).
    private func finishedEmpty(_ c: RecurrenceCall) throws -> Bool {
        guard c.shape.T == 0 || c.shape.B * c.shape.H == 0 else { return false }
        try c.finalState.copy(from: c.initialState ?? DeviceTensor(Tensor(zeros: c.finalState.shape), on: device))
        return true
    }

    private func scan(_ c: RecurrenceCall) throws {
        let s = c.shape
        if try finishedEmpty(c) { return }
        let (q, k) = c.useQKL2Norm ? (try l2Normalized(c.q, dim: s.K), try l2Normalized(c.k, dim: s.K)) : (c.q, c.k)
        let g = c.mechanism == .retention ? nil : c.g.map(buffer)
        try CUDARecurrentStep.sequence(
            c.mechanism, q: buffer(q), k: buffer(k), v: buffer(c.v), g: g, beta: c.beta.map(buffer),
            initialState: c.initialState.map(buffer), finalState: buffer(c.finalState), o: buffer(c.o), batch: s.B, length: s.T,
            heads: s.H, valueHeads: s.HV, keyDim: s.K, valueDim: s.V, scale: c.scale, dtype: c.q.dtype, outputDType: c.o.dtype)
    }

    /// `x / sqrt(sum x^2 + 1e-6)` over rows of `dim` (the CPU forms' qk L2 normalization) by the norm kernel, ahead of a
    /// recurrence's kernels. O(n).
    private func l2Normalized(_ x: DeviceTensor, dim: Int) throws -> DeviceTensor {
        let out = try DeviceTensor.uninitialized(x.shape, dtype: x.dtype, on: device)
        try CUDAModelOps.l2Norm(x: buffer(x), out: buffer(out), rows: x.count / max(dim, 1), dim: dim, eps: 1e-6, dtype: x.dtype)
        return out
    }

    /// Launch-plan overrides of the step kernel for measurements: `LINEA_STEP_WARPS` (8 or 16) and
    /// `LINEA_STEP_COLUMNS` (1 or 4 columns per thread); the kernel's defaults otherwise.
    static let stepWarps = Int(ProcessInfo.processInfo.environment["LINEA_STEP_WARPS"] ?? "") ?? 8
    static let stepColumns = Int(ProcessInfo.processInfo.environment["LINEA_STEP_COLUMNS"] ?? "")

    /// Why a call with kda's in-kernel activations does not run here.
    static let noActivations = "kda's in-kernel gate and beta activations (use_gate_in_kernel, use_beta_sigmoid_in_kernel) are not implemented on the GPU; activate g and beta first"

    /// The chunked kernels: q, k, v in one of f32, bf16, f16; g and beta f32; K, V <= 128 (under 64 or between 64 and
    /// 128 padded with zeros to 64 or 128); chunk 64. O(1).
    private func chunkedSupport(_ c: RecurrenceCall) -> Support {
        if let form = c.form, form != .chunked(size: 64) { return .unsupported("form \(form); the GPU runs the chunked form with chunks of 64") }
        guard CUDAUpload.inputTypes.contains(c.q.dtype), c.k.dtype == c.q.dtype, c.v.dtype == c.q.dtype else {
            return .unsupported("q, k, v dtypes \(c.q.dtype.shortName), \(c.k.dtype.shortName), \(c.v.dtype.shortName); the chunked kernels take one of f32, bf16, f16 for all three")
        }
        for (name, x) in [("g", c.g), ("beta", c.beta)] where x != nil && x!.dtype != .float32 {
            return .unsupported("\(name) has dtype \(x!.dtype.shortName); the chunked kernels read f32 gates")
        }
        for (name, n) in [("K", c.shape.K), ("V", c.shape.V)] where n < 1 || n > 128 {
            return .unsupported("\(name) = \(n); the chunked kernels take 1 to 128")
        }
        if !c.activations.isEmpty { return .unsupported(Self.noActivations) }
        if c.o.dtype != .float32 && c.o.dtype != .bfloat16 { return .unsupported("o has dtype \(c.o.dtype.shortName); the chunked kernels write f32 or bf16") }
        return .supported
    }

    private func chunked(_ c: RecurrenceCall) throws {
        let s = c.shape
        if try finishedEmpty(c) { return }
        let (q, k) = c.useQKL2Norm ? (try l2Normalized(c.q, dim: s.K), try l2Normalized(c.k, dim: s.K)) : (c.q, c.k)
        let (kp, vp) = (s.K <= 64 ? 64 : 128, s.V <= 64 ? 64 : 128)
        guard kp == s.K && vp == s.V else { return try chunkedPadded(c, q: q, k: k, keyDim: kp, valueDim: vp) }
        try chunked(c, q: q, k: k, v: c.v, g: c.g, initialState: c.initialState, o: c.o, finalState: c.finalState,
                    shape: CUDAChunkedShape(batch: s.B, length: s.T, heads: s.H, valueHeads: s.HV, keyDim: s.K, valueDim: s.V))
    }

    /// The chunked kernels at head dims they take: q, k (and gla's per-channel g, 0 = no decay) padded with zeros to
    /// `keyDim`, v to `valueDim`, the state to both; zero key channels and value columns leave the rest of the state
    /// and of o as they would be, so o and the final state are the padded results cropped. The scale stays 1/sqrt(K).
    /// O(padded inputs) besides the kernels.
    private func chunkedPadded(_ c: RecurrenceCall, q qt: DeviceTensor, k kt: DeviceTensor, keyDim kp: Int, valueDim vp: Int) throws {
        let s = c.shape
        func padded(_ x: DeviceTensor, n: Int, rows: Int, cols: Int, toRows: Int, toCols: Int) throws -> DeviceTensor {
            let out = try DeviceTensor.uninitialized([n, toRows, toCols], dtype: x.dtype, on: device)
            try CUDAModelOps.pad2d(x: buffer(x), out: buffer(out), n: n, xRows: rows, xCols: cols, rows: toRows, cols: toCols, dtype: x.dtype)
            return out
        }
        let qkRows = s.B * s.T * s.H, vRows = s.B * s.T * s.HV, states = s.B * s.HV
        let q = try padded(qt, n: 1, rows: qkRows, cols: s.K, toRows: qkRows, toCols: kp)
        let k = try padded(kt, n: 1, rows: qkRows, cols: s.K, toRows: qkRows, toCols: kp)
        let v = try padded(c.v, n: 1, rows: vRows, cols: s.V, toRows: vRows, toCols: vp)
        let perChannel = c.g.map { $0.count == vRows * s.K } ?? false
        let g = try perChannel ? padded(c.g!, n: 1, rows: vRows, cols: s.K, toRows: vRows, toCols: kp) : c.g
        let h0 = try c.initialState.map { try padded($0, n: states, rows: s.K, cols: s.V, toRows: kp, toCols: vp) }
        let o = try DeviceTensor.uninitialized([vRows, vp], dtype: c.o.dtype, on: device)
        let ht = try DeviceTensor.uninitialized([states, kp, vp], on: device)
        try chunked(c, q: q, k: k, v: v, g: g, initialState: h0, o: o, finalState: ht,
                    shape: CUDAChunkedShape(batch: s.B, length: s.T, heads: s.H, valueHeads: s.HV, keyDim: kp, valueDim: vp),
                    scale: c.scale ?? 1 / Float(s.K).squareRoot())
        try CUDAModelOps.pad2d(x: buffer(o), out: buffer(c.o), n: 1, xRows: vRows, xCols: vp, rows: vRows, cols: s.V, dtype: c.o.dtype)
        try CUDAModelOps.pad2d(x: buffer(ht), out: buffer(c.finalState), n: states, xRows: kp, xCols: vp, rows: s.K, cols: s.V, dtype: .float32)
    }

    /// The chunked kernels on tensors of `shape` (K, V in {64, 128}). O(1) launches.
    private func chunked(_ c: RecurrenceCall, q qt: DeviceTensor, k kt: DeviceTensor, v vt: DeviceTensor, g gt: DeviceTensor?,
                         initialState: DeviceTensor?, o ot: DeviceTensor, finalState: DeviceTensor, shape: CUDAChunkedShape,
                         scale: Float? = nil) throws {
        let s = c.shape
        let (q, k, v, o) = (buffer(qt), buffer(kt), buffer(vt), buffer(ot))
        let (h0, ht, beta) = (initialState.map(buffer), buffer(finalState), c.beta.map(buffer))
        let g = c.mechanism == .retention ? try retentionDecays(heads: s.HV) : gt.map(buffer)
        let scale = scale ?? c.scale
        if c.q.dtype != .bfloat16 {
            try CUDAChunkedSIMT.forward(c.mechanism, q: q, k: k, v: v, g: g, beta: beta, initialState: h0, finalState: ht, o: o,
                                        shape: shape, scale: scale, inputDType: c.q.dtype, outputDType: c.o.dtype)
            return
        }
        // Scratch from the stream-ordered pool: freed without waiting once the kernels are queued (a scratch the
        // launchers allocated themselves would cost a synchronize per call).
        let bytes = c.mechanism == .gla ? CUDAChunkedGLA.scratchBytes(shape, context: context)
            : c.mechanism == .kda ? CUDAChunkedKDA.scratchBytes(shape, context: context)
            : CUDAChunked.scratchBytes(c.mechanism, shape, context: context)
        let scratch = bytes > 0 ? try allocateUninitialized(byteCount: bytes) : nil
        let work = scratch.map { CUDABuffer(context: context, viewing: UInt64($0.address), byteCount: $0.byteCount) }
        if c.mechanism == .gla {
            try CUDAChunkedGLA.forward(q: q, k: k, v: v, g: g!, initialState: h0, finalState: ht, o: o, shape: shape,
                                       scale: scale, outputDType: c.o.dtype, scratch: work)
        } else if c.mechanism == .kda {
            try CUDAChunkedKDA.forward(q: q, k: k, v: v, g: g!, beta: beta!, initialState: h0, finalState: ht, o: o, shape: shape,
                                       scale: scale, outputDType: c.o.dtype, scratch: work)
        } else {
            try CUDAChunked.forward(c.mechanism, q: q, k: k, v: v, g: g, beta: beta, initialState: h0, finalState: ht, o: o,
                                    shape: shape, scale: scale, outputDType: c.o.dtype, scratch: work)
        }
        withExtendedLifetime(scratch) {}  // its cuMemFreeAsync is queued behind the kernels
    }

    // MARK: Attention

    /// Flash (any T) and split-KV (decode) kernels: q, k, v of one dtype among f32, bf16, f16, head dims <= 256. O(1).
    private func attentionSupport(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, window: Int?, form: AttentionForm?) -> Support {
        guard CUDAUpload.inputTypes.contains(q.dtype), k.dtype == q.dtype, v.dtype == q.dtype else {
            return .unsupported("q, k, v dtypes \(q.dtype.shortName), \(k.dtype.shortName), \(v.dtype.shortName); the attention kernels take one of f32, bf16, f16 for all three")
        }
        let (D, Dv) = (q.shape[3], v.shape[3])
        if max(D, Dv) > 256 { return .unsupported("D = \(D), Dv = \(Dv); the attention kernels take head dims <= 256") }
        if form == .reference { return .unsupported("the reference form runs on the CPU only (Float64)") }
        if case .splitKV = form, window != nil { return .unsupported("split-KV has no sliding window on the GPU (flash has)") }
        if case .splitKV = form, q.shape[1] > CUDASplitKV.maxQueryLength {
            return .unsupported("T = \(q.shape[1]) queries; split-KV takes at most \(CUDASplitKV.maxQueryLength) (flash takes any)")
        }
        return .supported
    }

    /// The launch shape of an attention call on `q`, `k`, or nil when there is nothing to launch: no query row, or no
    /// key (then lse is set to -inf; o stays 0). O(1) plus that fill.
    private func attentionShape(q: DeviceTensor, k: DeviceTensor, o: DeviceTensor, lse: DeviceTensor, keyRows: Int? = nil) throws -> CUDAAttentionShape? {
        let (B, T, Hq, D) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let (S, Hkv) = (k.shape[1], k.shape[2])
        if B * T * Hq == 0 { return nil }
        if S == 0 {  // the outputs come uninitialized: o = 0, lse = -inf
            try lse.copy(from: Tensor(zeros: lse.shape, value: -.infinity))
            try o.copy(from: Tensor(zeros: o.shape))
            return nil
        }
        return CUDAAttentionShape(batch: B, queryLength: T, keyLength: S, queryHeads: Hq, kvHeads: Hkv, headDim: D, keyRows: keyRows)
    }

    private func attention(_ c: AttentionCall) throws {
        let (D, Dv) = (c.q.shape[3], c.v.shape[3])
        // The kernels take one head dim: the narrower side is padded with zeros (zero key channels add nothing to the
        // scores, zero value columns give o columns that are cropped), the scale staying 1/sqrt(D).
        let width = max(D, Dv)
        func widened(_ x: DeviceTensor) throws -> DeviceTensor {
            let d = x.shape[3]
            guard d != width else { return x }
            let out = try DeviceTensor.uninitialized(Array(x.shape.dropLast()) + [width], dtype: x.dtype, on: device)
            try CUDAModelOps.pad2d(x: buffer(x), out: buffer(out), n: 1, xRows: x.count / max(d, 1), xCols: d, rows: x.count / max(d, 1),
                                   cols: width, dtype: x.dtype)
            return out
        }
        let (qt, kt, vt) = (try widened(c.q), try widened(c.k), try widened(c.v))
        let cropped = Dv != width
        let ot = cropped ? try DeviceTensor.uninitialized(Array(c.o.shape.dropLast()) + [width], dtype: c.o.dtype, on: device) : c.o
        guard let shape = try attentionShape(q: qt, k: kt, o: ot, lse: c.lse, keyRows: AttentionCall.keyRows(k: kt, v: vt)) else {
            if cropped { try c.o.copy(from: Tensor(zeros: c.o.shape)) }
            return
        }
        let scale = c.options.scale ?? 1 / Float(D).squareRoot()
        // k and v may be a KV cache's first rows per sequence: their buffers span every row read.
        func spanned(_ x: DeviceTensor) -> CUDABuffer {
            CUDABuffer(context: context, viewing: UInt64(x.address),
                       byteCount: CUDAModelOps.stridedBytes(shape: x.shape, strides: x.strides, elementBytes: x.dtype.byteCount))
        }
        let (q, k, v, o, lse) = (buffer(qt), spanned(kt), spanned(vt), buffer(ot), buffer(c.lse))
        if case .splitKV(let partitions) = c.form {
            // The partial results' workspace from the stream-ordered pool, freed behind the kernels: a workspace the
            // launcher allocated itself would cost a synchronize per call (per layer of a decode step).
            let p = max(1, partitions ?? CUDASplitKV.defaultPartitions(shape, context: context))
            let used = CUDASplitKV.keysPerPartition(shape, partitions: p).partitions
            let scratch = try allocateUninitialized(byteCount: max(1, CUDASplitKV.workspaceBytes(shape, partitions: used)))
            try CUDASplitKV.forward(q: q, k: k, v: v, o: o, lse: lse, shape: shape, scale: scale, causal: c.options.causal,
                                    partitions: p, dtype: c.q.dtype, outputDType: c.o.dtype,
                                    workspace: CUDABuffer(context: context, viewing: UInt64(scratch.address), byteCount: scratch.byteCount))
            withExtendedLifetime(scratch) {}
        } else {
            try CUDAAttention.forward(q: q, k: k, v: v, o: o, lse: lse, shape: shape, scale: scale, causal: c.options.causal,
                                      window: c.options.window, dtype: c.q.dtype, outputDType: c.o.dtype)
        }
        if cropped {
            try CUDAModelOps.pad2d(x: o, out: buffer(c.o), n: 1, xRows: c.o.count / max(Dv, 1), xCols: width, rows: c.o.count / max(Dv, 1),
                                   cols: Dv, dtype: c.o.dtype)
        }
    }

    private func blockSparse(_ c: BlockSparseCall) throws {
        guard let shape = try attentionShape(q: c.q, k: c.k, o: c.o, lse: c.lse) else { return }
        try CUDABlockSparse.forward(q: buffer(c.q), k: buffer(c.k), v: buffer(c.v), mask: buffer(c.mask), maskShape: c.mask.shape,
                                    blockRows: c.blockRows, blockKeys: c.blockKeys, o: buffer(c.o), lse: buffer(c.lse), shape: shape,
                                    scale: c.options.scale, causal: c.options.causal, dtype: c.q.dtype, outputDType: .float32)
    }

    /// The neighborhood kernel: the fused form, q, k, v of one dtype among f32, bf16, f16, D and Dv <= 256, o among
    /// f32, bf16, f16 and lse f32. O(1).
    private func neighborhoodSupport(_ c: NeighborhoodCall) -> Support {
        if c.form == .reference { return .unsupported("the reference form runs on the CPU only (Float64)") }
        guard CUDAUpload.inputTypes.contains(c.q.dtype), c.k.dtype == c.q.dtype, c.v.dtype == c.q.dtype else {
            return .unsupported("q, k, v dtypes \(c.q.dtype.shortName), \(c.k.dtype.shortName), \(c.v.dtype.shortName); the neighborhood kernel takes one of f32, bf16, f16 for all three")
        }
        if !CUDAUpload.inputTypes.contains(c.o.dtype) || c.lse.dtype != .float32 {
            return .unsupported("o, lse dtypes \(c.o.dtype.shortName), \(c.lse.dtype.shortName); the neighborhood kernel writes o as f32, bf16 or f16 and lse as f32")
        }
        let (D, Dv) = (c.q.shape.last ?? 0, c.v.shape.last ?? 0)
        if D > CUDANeighborhood.maxHeadDim || Dv > CUDANeighborhood.maxHeadDim {
            return .unsupported("D = \(D), Dv = \(Dv); the neighborhood kernel takes head dims <= \(CUDANeighborhood.maxHeadDim)")
        }
        return .supported
    }

    private func neighborhood(_ c: NeighborhoodCall) throws {
        let r = c.options.rank
        // The call's shapes were checked by NeighborhoodAttention.forward; the launcher checks them again against the buffers.
        guard c.q.shape.count == r + 3, c.v.shape.count == r + 3, c.k.shape.count == r + 3 else {
            throw LineaError.shapeMismatch(argument: "q", expected: "[B, \(r) spatial axes, heads, D]", actual: "\(c.q.shape)")
        }
        try CUDANeighborhood.forward(q: buffer(c.q), k: buffer(c.k), v: buffer(c.v), o: buffer(c.o), lse: buffer(c.lse),
                                     batch: c.q.shape[0], spatial: Array(c.q.shape[1...r]), queryHeads: c.q.shape[r + 1],
                                     kvHeads: c.k.shape[r + 1], headDim: c.q.shape[r + 2], valueDim: c.v.shape[r + 2],
                                     options: c.options, dtype: c.q.dtype, outputDType: c.o.dtype, kernel: CUDANeighborhood.dispatchKernel)
    }

    /// Retention's per-head log decays on the device, made once per head count. O(H) the first time.
    private func retentionDecays(heads: Int) throws -> CUDABuffer {
        counters.lock()
        defer { counters.unlock() }
        if let found = retentionDecayCache[heads] { return found }
        let made = try CUDAChunked.retentionDecays(heads: heads, context: context)
        retentionDecayCache[heads] = made
        return made
    }
}
