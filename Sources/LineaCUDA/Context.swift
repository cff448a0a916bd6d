import Foundation
import Linea

/// Entry point of the CUDA backend: whether a GPU is usable here, and the shared context on device 0.
public enum CUDABackend {
    private static let sharedResult: Result<CUDAContext, Error> = Result { try CUDAContext(device: 0) }

    /// The context on device 0, created on first use (O(1) after that); throws `LineaError.unavailable`
    /// (no driver, no device, no NVRTC) or `CUDAError` (a failing driver call).
    public static var shared: CUDAContext {
        get throws { try sharedResult.get() }
    }

    /// True when `shared` can be created: a driver, a device and NVRTC are present.
    public static var isAvailable: Bool { (try? shared) != nil }

    /// Why the backend is unavailable (the thrown error's text), or nil when it is available.
    public static var unavailableReason: String? {
        do { _ = try shared; return nil } catch { return "\(error)" }
    }
}

/// One value passed to a kernel: device pointers, 32-bit ints and floats (the only kinds Linea's kernels take).
package enum CUDAKernelArgument: Sendable {
    /// A device address (`CUdeviceptr`, e.g. `CUDABuffer.address`).
    case pointer(UInt64)
    /// A C `int`.
    case int32(Int32)
    /// A C `float`.
    case float(Float)
}

/// A kernel entry point loaded from a compiled module.
package struct CUDAFunction: @unchecked Sendable {
    let handle: OpaquePointer
    /// The `extern "C"` entry name.
    public let name: String
}

/// A CUDA context (the device's primary context), one stream, the NVRTC compiler and the module cache.
/// Thread-safe: lookups take a lock, NVRTC compiles run outside it (several modules at once, each compiled once); work
/// goes to one in-order stream.
public final class CUDAContext: @unchecked Sendable {
    let driver: DriverAPI
    let nvrtc: NVRTCAPI
    let device: Int32
    let context: OpaquePointer
    /// The stream every launch and copy of this context goes to.
    let stream: OpaquePointer
    /// Device name as reported by the driver, e.g. `NVIDIA H100 80GB HBM3`.
    public let deviceName: String
    /// Compute capability (major, minor), e.g. (9, 0).
    public let computeCapability: (major: Int, minor: Int)
    /// Number of streaming multiprocessors.
    public let multiprocessorCount: Int
    /// Largest dynamic shared memory a block may opt into, in bytes.
    public let maxSharedMemoryPerBlock: Int
    /// NVRTC version "major.minor".
    public let nvrtcVersion: String

    /// Guards the tables below; also signals the end of a compile to the threads waiting for the same module.
    private let lock = NSCondition()
    private var modules: [UInt64: OpaquePointer] = [:]
    /// Keys of the modules being compiled now (by another thread, with `lock` released).
    private var compiling: Set<UInt64> = []
    private var functions: [String: CUDAFunction] = [:]
    /// FNV-1a hashes of the sources seen, by the address of their UTF-8 bytes, so that a launch does not rehash a
    /// kernel source (tens of µs for 30 KB) every time. The stored string keeps those bytes alive, so the address
    /// names no other string while it is here; the equality check (O(1) when the storage is the same) covers
    /// the temporary copies of small strings.
    private var sourceHashes: [UInt: (source: String, hash: UInt64)] = [:]
    private var sharedLimits: [String: Int] = [:]
    /// Functions by the identity of their lookup (name, options, the addresses of the source and header texts), so
    /// that a launch in a decode loop skips the hashing of `function`. Each entry keeps its source and headers
    /// alive, so their addresses name no other text while it is here.
    private var byIdentity: [LookupIdentity: (source: String, headers: [(name: String, source: String)], function: CUDAFunction)] = [:]

    /// What `byIdentity` is keyed by: compared field by field, never formatted (a launch pays for none of it).
    private struct LookupIdentity: Hashable {
        let name: String, options: [String], source: UInt, sourceBytes: Int, headers: UInt, headerCount: Int
    }

    /// Opens device `device` (primary context) and NVRTC; throws `LineaError.unavailable` when either is missing.
    public init(device ordinal: Int = 0) throws {
        driver = try DriverAPI()
        let d = driver
        let initResult = d.cuInit(0)
        if initResult != 0 {
            var namePointer: UnsafePointer<CChar>?
            let name = d.cuGetErrorName(initResult, &namePointer) == 0 && namePointer != nil ? String(cString: namePointer!) : "\(initResult)"
            throw LineaError.unavailable(what: "CUDA backend", reason: "cuInit failed with \(name) (no usable NVIDIA GPU?)")
        }
        var count: Int32 = 0
        try d.check(d.cuDeviceGetCount(&count), "cuDeviceGetCount")
        guard ordinal >= 0, ordinal < Int(count) else {
            throw LineaError.unavailable(what: "CUDA backend", reason: "device \(ordinal) requested, \(count) CUDA device(s) present")
        }
        nvrtc = try NVRTCAPI()
        nvrtcVersion = nvrtc.versionString
        var dev: CUdevice = 0
        try d.check(d.cuDeviceGet(&dev, Int32(ordinal)), "cuDeviceGet")
        device = dev
        func attribute(_ id: Int32) throws -> Int {
            var value: Int32 = 0
            try d.check(d.cuDeviceGetAttribute(&value, id, dev), "cuDeviceGetAttribute(\(id))")
            return Int(value)
        }
        computeCapability = (try attribute(75), try attribute(76))  // COMPUTE_CAPABILITY_MAJOR / MINOR
        multiprocessorCount = try attribute(16)  // MULTIPROCESSOR_COUNT
        maxSharedMemoryPerBlock = try attribute(97)  // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        var nameBytes = [CChar](repeating: 0, count: 256)
        try d.check(d.cuDeviceGetName(&nameBytes, 256, dev), "cuDeviceGetName")
        deviceName = String(decoding: nameBytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var ctx: OpaquePointer?
        try d.check(d.cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain")
        context = ctx!
        try d.check(d.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        var s: OpaquePointer?
        // CU_STREAM_DEFAULT (blocking): orders with the synchronous copies on the legacy stream.
        try d.check(d.cuStreamCreate(&s, 0), "cuStreamCreate")
        stream = s!
    }

    deinit {
        _ = driver.cuCtxSetCurrent(context)
        for module in modules.values { _ = driver.cuModuleUnload(module) }
        _ = driver.cuStreamDestroy(stream)
        _ = driver.cuDevicePrimaryCtxRelease(device)
    }

    /// Makes this context current on the calling thread (every public entry does this; O(1)).
    func makeCurrent() throws {
        try driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent")
    }

    /// `sm_XY` for this device's compute capability.
    public var architecture: String { "sm_\(computeCapability.major)\(computeCapability.minor)" }

    /// Waits until all work queued on this context's stream has finished.
    public func synchronize() throws {
        try makeCurrent()
        try driver.check(driver.cuStreamSynchronize(stream), "cuStreamSynchronize")
    }

    /// The kernel `name` from `source`, compiled for this device by NVRTC on first use with `headers` (include name,
    /// text) available to its `#include`s; cached in memory and on disk (see `KernelCache`), keyed by FNV-1a 64 of
    /// source, headers, architecture, options and NVRTC version.
    package func function(
        source: String, name: String, options: [String] = [], headers: [(name: String, source: String)] = CUDAKernels.headers
    ) throws -> CUDAFunction {
        try makeCurrent()
        let sourceAddress = source.utf8.withContiguousStorageIfAvailable { UInt(bitPattern: $0.baseAddress) } ?? 0
        let identity = sourceAddress == 0 ? nil : LookupIdentity(
            name: name, options: options, source: sourceAddress, sourceBytes: source.utf8.count,
            headers: headers.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }, headerCount: headers.count)
        lock.lock()
        defer { lock.unlock() }
        if let identity, let known = byIdentity[identity] { return known.function }
        let function = try lookUp(source: source, name: name, options: options, headers: headers)
        if let identity {
            if byIdentity.count >= 256 { byIdentity.removeAll() }  // sources built at run time (labs) come and go
            byIdentity[identity] = (source, headers, function)
        }
        return function
    }

    /// `function`'s slow path (call with `lock` held; it is released while NVRTC compiles, minutes for the largest
    /// modules on a fresh machine, so that other threads' lookups and compiles go on): hash the texts, then the
    /// in-memory, disk or NVRTC compile. A thread that needs a module another thread is compiling waits for it.
    private func lookUp(source: String, name: String, options: [String], headers: [(name: String, source: String)]) throws -> CUDAFunction {
        let allOptions = ["--gpu-architecture=\(architecture)", "--std=c++17", "-default-device"] + options
        // A header's text is part of the key: editing one must not load an image compiled from the old text.
        let headerParts = headers.flatMap { [$0.name, String(sourceHash($0.source), radix: 16)] }
        let key = KernelCache.key(sourceHash: sourceHash(source), parts: allOptions + [nvrtcVersion] + headerParts)
        let functionKey = "\(key):\(name)"
        if let f = functions[functionKey] { return f }
        while compiling.contains(key) { lock.wait() }
        let module: OpaquePointer
        if let m = modules[key] {
            module = m
        } else {
            compiling.insert(key)
            lock.unlock()
            let image: Result<[UInt8], Error> = Result {
                if let cached = KernelCache.load(key: key) { return cached }
                let compiled = try nvrtc.compile(
                    source: source, name: "linea_\(String(key, radix: 16)).cu", options: allOptions, headers: headers, cubin: true)
                KernelCache.store(key: key, image: compiled)
                return compiled
            }
            lock.lock()
            compiling.remove(key)
            lock.broadcast()
            var m: OpaquePointer?
            try image.get().withUnsafeBytes { try driver.check(driver.cuModuleLoadData(&m, $0.baseAddress), "cuModuleLoadData") }
            module = m!
            modules[key] = module
        }
        var f: OpaquePointer?
        try driver.check(driver.cuModuleGetFunction(&f, module, name), "cuModuleGetFunction(\(name))")
        let function = CUDAFunction(handle: f!, name: name)
        functions[functionKey] = function
        return function
    }

    /// `KernelCache.fnv1a64(source.utf8)`, remembered per source string (call with `lock` held). O(1) once seen.
    private func sourceHash(_ source: String) -> UInt64 {
        let address = source.utf8.withContiguousStorageIfAvailable { UInt(bitPattern: $0.baseAddress) } ?? 0
        if address != 0, let known = sourceHashes[address], known.source == source { return known.hash }
        let hash = KernelCache.fnv1a64(source.utf8)
        if address != 0 {
            if sourceHashes.count >= 64 { sourceHashes.removeAll() }  // sources built at run time (labs) come and go
            sourceHashes[address] = (source, hash)
        }
        return hash
    }

    /// Queues `function` on the stream with the given grid, block, dynamic shared memory and arguments.
    /// Raises the function's dynamic shared-memory limit first when `sharedBytes` exceeds 48 KiB.
    package func launch(
        _ function: CUDAFunction, grid: (Int, Int, Int), block: (Int, Int, Int), sharedBytes: Int = 0,
        arguments: [CUDAKernelArgument]
    ) throws {
        try makeCurrent()
        guard sharedBytes <= maxSharedMemoryPerBlock else {
            throw LineaError.invalidArgument(
                argument: "sharedBytes (\(function.name))", expected: "<= \(maxSharedMemoryPerBlock) bytes of shared memory",
                actual: "\(sharedBytes)")
        }
        if sharedBytes > 48 * 1024 {
            let key = "\(UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(function.handle))))"
            lock.lock()
            let current = sharedLimits[key] ?? 0
            lock.unlock()
            if current < sharedBytes {
                // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
                try driver.check(driver.cuFuncSetAttribute(function.handle, 8, Int32(sharedBytes)), "cuFuncSetAttribute(\(function.name))")
                lock.lock()
                sharedLimits[key] = sharedBytes
                lock.unlock()
            }
        }
        guard grid.0 > 0, grid.1 > 0, grid.2 > 0 else { return }  // nothing to do
        let storage = UnsafeMutableRawPointer.allocate(byteCount: 8 * max(arguments.count, 1), alignment: 8)
        defer { storage.deallocate() }
        var pointers = [UnsafeMutableRawPointer?](repeating: nil, count: arguments.count)
        for (i, argument) in arguments.enumerated() {
            let slot = storage + 8 * i
            switch argument {
            case .pointer(let p): slot.storeBytes(of: p, as: UInt64.self)
            case .int32(let v): slot.storeBytes(of: v, as: Int32.self)
            case .float(let v): slot.storeBytes(of: v, as: Float.self)
            }
            pointers[i] = slot
        }
        let result = pointers.withUnsafeMutableBufferPointer {
            driver.cuLaunchKernel(
                function.handle, UInt32(grid.0), UInt32(grid.1), UInt32(grid.2),
                UInt32(block.0), UInt32(block.1), UInt32(block.2), UInt32(sharedBytes), stream, $0.baseAddress, nil)
        }
        try driver.check(result, "cuLaunchKernel(\(function.name), grid \(grid), block \(block), smem \(sharedBytes))")
    }
}

/// Device memory owned by this object (freed on deinit). Copies go through the context's stream.
public final class CUDABuffer: @unchecked Sendable {
    /// The context that owns the memory.
    public let context: CUDAContext
    /// Size in bytes.
    public let byteCount: Int
    /// The device address (`CUdeviceptr`); 0 for an empty buffer.
    public let address: UInt64
    /// False for a view of memory another object owns (not freed here).
    private let owned: Bool

    /// Allocates `byteCount` bytes of device memory (uninitialized); O(1).
    public init(context: CUDAContext, byteCount: Int) throws {
        guard byteCount >= 0 else {
            throw LineaError.invalidArgument(argument: "byteCount", expected: ">= 0", actual: "\(byteCount)")
        }
        self.context = context
        self.byteCount = byteCount
        var p: UInt64 = 0
        if byteCount > 0 {
            try context.makeCurrent()
            try context.driver.check(context.driver.cuMemAlloc(&p, byteCount), "cuMemAlloc_v2(\(formatBytes(byteCount)))")
        }
        address = p
        owned = true
    }

    /// A view of `byteCount` bytes at `address` that another object owns and frees (a `DeviceTensor`'s storage). O(1).
    init(context: CUDAContext, viewing address: UInt64, byteCount: Int) {
        self.context = context
        self.address = address
        self.byteCount = byteCount
        owned = false
    }

    /// Allocates a buffer holding a copy of `values` (any trivial element type, e.g. Float or UInt16); O(n).
    public convenience init<T>(context: CUDAContext, copying values: [T]) throws {
        try self.init(context: context, byteCount: values.count * MemoryLayout<T>.stride)
        try upload(values)
    }

    deinit {
        if owned && address != 0 {
            _ = context.driver.cuCtxSetCurrent(context.context)
            _ = context.driver.cuMemFree(address)
        }
    }

    /// Copies `values` to the start of the buffer (waits for queued work first); O(n).
    public func upload<T>(_ values: [T]) throws {
        let bytes = values.count * MemoryLayout<T>.stride
        guard bytes <= byteCount else {
            throw LineaError.invalidArgument(argument: "upload", expected: "<= \(byteCount) bytes", actual: "\(bytes) bytes")
        }
        guard bytes > 0 else { return }
        try context.synchronize()
        try values.withUnsafeBytes {
            try context.driver.check(context.driver.cuMemcpyHtoD(address, $0.baseAddress, bytes), "cuMemcpyHtoD_v2")
        }
    }

    /// Copies the first `count` elements of type `T` back to the host (waits for queued work first); O(n).
    public func download<T>(_ type: T.Type, count: Int) throws -> [T] {
        let bytes = count * MemoryLayout<T>.stride
        guard count >= 0, bytes <= byteCount else {
            throw LineaError.invalidArgument(argument: "download count", expected: "<= \(byteCount) bytes", actual: "\(bytes) bytes")
        }
        guard count > 0 else { return [] }
        try context.synchronize()
        return try [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            try context.driver.check(context.driver.cuMemcpyDtoH(buffer.baseAddress, address, bytes), "cuMemcpyDtoH_v2")
            initialized = count
        }
    }

    /// Queues a copy of `byteCount` bytes from `source` into this buffer on the stream; O(n) on the device.
    public func copy(from source: CUDABuffer, byteCount count: Int? = nil) throws {
        let bytes = count ?? min(byteCount, source.byteCount)
        guard bytes <= byteCount, bytes <= source.byteCount else {
            throw LineaError.invalidArgument(argument: "byteCount", expected: "<= both buffers' sizes", actual: "\(bytes)")
        }
        try context.makeCurrent()
        try context.driver.check(context.driver.cuMemcpyDtoDAsync(address, source.address, bytes, context.stream), "cuMemcpyDtoDAsync_v2")
    }

    /// Queues a fill of every byte with `value` on the stream; O(n) on the device.
    public func fill(byte value: UInt8 = 0) throws {
        guard byteCount > 0 else { return }
        try context.makeCurrent()
        try context.driver.check(context.driver.cuMemsetD8Async(address, value, byteCount, context.stream), "cuMemsetD8Async")
    }
}

/// A CUDA event on the context's stream, for timing (freed on deinit).
package final class CUDAEvent: @unchecked Sendable {
    let context: CUDAContext
    let handle: OpaquePointer

    /// Creates an event with timing enabled.
    public init(context: CUDAContext) throws {
        self.context = context
        try context.makeCurrent()
        var e: OpaquePointer?
        try context.driver.check(context.driver.cuEventCreate(&e, 0), "cuEventCreate")
        handle = e!
    }

    deinit { _ = context.driver.cuEventDestroy(handle) }

    /// Records the event on the stream (after the work queued so far).
    public func record() throws {
        try context.driver.check(context.driver.cuEventRecord(handle, context.stream), "cuEventRecord")
    }

    /// Waits until the work queued before the last `record()` has run (at once if never recorded).
    public func synchronize() throws {
        try context.driver.check(context.driver.cuEventSynchronize(handle), "cuEventSynchronize")
    }

    /// Milliseconds between `start` and this event, waiting for this event first.
    public func milliseconds(since start: CUDAEvent) throws -> Double {
        try context.driver.check(context.driver.cuEventSynchronize(handle), "cuEventSynchronize")
        var ms: Float = 0
        try context.driver.check(context.driver.cuEventElapsedTime(&ms, start.handle, handle), "cuEventElapsedTime")
        return Double(ms)
    }
}

/// Times device work with CUDA events.
package enum CUDABench {
    /// Runs `body` `warmup` times, then `iterations` times each between two events, as `triton.testing.do_bench` does:
    /// every run is queued behind a 256 MiB fill that evicts L2, and the host waits only once, after the last run, so
    /// the host's launch overhead overlaps the device's work instead of being counted. Returns the median and minimum
    /// milliseconds per run. `body` must only queue work on `context`'s stream (a synchronizing call inside it puts
    /// its host time back into the figure).
    public static func time(
        context: CUDAContext, warmup: Int = 3, iterations: Int = 10, _ body: () throws -> Void
    ) throws -> (median: Double, min: Double) {
        guard iterations > 0 else {
            throw LineaError.invalidArgument(argument: "iterations", expected: "> 0", actual: "\(iterations)")
        }
        let flush = try CUDABuffer(context: context, byteCount: 256 << 20)
        for _ in 0..<warmup { try body() }
        try context.synchronize()
        let starts = try (0..<iterations).map { _ in try CUDAEvent(context: context) }
        let stops = try (0..<iterations).map { _ in try CUDAEvent(context: context) }
        for i in 0..<iterations {
            try flush.fill()
            try starts[i].record()
            try body()
            try stops[i].record()
        }
        let times = try zip(starts, stops).map { try $0.1.milliseconds(since: $0.0) }.sorted()
        return (times[times.count / 2], times[0])
    }
}
