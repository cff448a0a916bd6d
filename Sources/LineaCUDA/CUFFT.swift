import Foundation
import Linea

typealias cufftPlanManyFn = @convention(c) (
    UnsafeMutablePointer<Int32>?, Int32, UnsafeMutablePointer<Int32>?,  // plan, rank, n
    UnsafeMutablePointer<Int32>?, Int32, Int32,  // inembed, istride, idist
    UnsafeMutablePointer<Int32>?, Int32, Int32,  // onembed, ostride, odist
    Int32, Int32  // type, batch
) -> Int32
typealias cufftSetStreamFn = @convention(c) (Int32, OpaquePointer?) -> Int32
typealias cufftExecFn = @convention(c) (Int32, UInt64, UInt64) -> Int32  // plan, input, output (device addresses)
typealias cufftDestroyFn = @convention(c) (Int32) -> Int32

/// Batched single-precision real FFTs on the GPU through cuFFT, loaded with dlopen on first use like cuBLAS, so the
/// binary runs where CUDA is absent. Plans are in-place (rows of `pitch(n)` floats), bound to the context's stream,
/// and cached per context, size, batch and direction.
package enum CUFFT {
    /// The loaded entry points, or why cuFFT could not be loaded.
    static let api: Result<API, Error> = Result { try API() }

    struct API: @unchecked Sendable {
        let planMany: cufftPlanManyFn
        let setStream: cufftSetStreamFn
        let execR2C: cufftExecFn
        let execC2R: cufftExecFn
        let destroy: cufftDestroyFn
        let library: String

        init() throws {
            guard let (h, lib) = openLibrary(CUFFT.candidates) else {
                throw LineaError.unavailable(what: "cuFFT", reason: "no cuFFT library found (tried \(CUFFT.candidates.filter { !$0.isEmpty }.joined(separator: ", ")))")
            }
            planMany = try symbol(h, ["cufftPlanMany"], as: cufftPlanManyFn.self, library: lib)
            setStream = try symbol(h, ["cufftSetStream"], as: cufftSetStreamFn.self, library: lib)
            execR2C = try symbol(h, ["cufftExecR2C"], as: cufftExecFn.self, library: lib)
            execC2R = try symbol(h, ["cufftExecC2R"], as: cufftExecFn.self, library: lib)
            destroy = try symbol(h, ["cufftDestroy"], as: cufftDestroyFn.self, library: lib)
            library = lib
        }
    }

    /// The files dlopen tries, in order: `LINEA_LIBCUFFT` (empty when unset), then the sonames of CUDA 13 (.12), a later
    /// one (.13) and CUDA 12 (.11) on the loader's path, then the same in /usr/local/cuda/lib64 (where the GPU machines
    /// keep the toolkit, off the loader's path). O(1).
    package static var candidates: [String] {
        let names = ["libcufft.so.12", "libcufft.so.13", "libcufft.so.11", "libcufft.so"]
        return [ProcessInfo.processInfo.environment["LINEA_LIBCUFFT"] ?? ""] + names + names.map { "/usr/local/cuda/lib64/" + $0 }
    }

    /// The library file opened, or why none could be.
    public static var library: Result<String, Error> { api.map(\.library) }

    /// Floats per row of the in-place layout for transforms of size n: 2 (n/2 + 1). O(1).
    static func pitch(_ n: Int) -> Int { 2 * (n / 2 + 1) }

    private struct PlanKey: Hashable {
        let context: ObjectIdentifier, n: Int, batch: Int, inverse: Bool
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var plans: [PlanKey: Int32] = [:]

    /// Plans kept before the cache is emptied (each holds a cuFFT work area on the device).
    static let maxPlans = 32

    /// The plan of `batch` in-place transforms of size `n` (forward real-to-complex, or `inverse` complex-to-real) on
    /// `context`'s stream, made on first use (cuFFT allocates its work area then, which may wait for the device). O(1)
    /// when cached. The caller holds `lock`.
    static func plan(_ context: CUDAContext, n: Int, batch: Int, inverse: Bool, _ api: API) throws -> Int32 {
        let key = PlanKey(context: ObjectIdentifier(context), n: n, batch: batch, inverse: inverse)
        if let found = plans[key] { return found }
        if plans.count >= maxPlans {
            // Queued transforms may still use these plans: destroying a plan waits for its work (cuFFT synchronizes).
            try context.makeCurrent()
            for (k, p) in plans where k.context == key.context { _ = api.destroy(p) }
            plans = plans.filter { $0.key.context != key.context }
        }
        try context.makeCurrent()
        var handle: Int32 = 0
        var size = Int32(n), realEmbed = Int32(pitch(n)), complexEmbed = Int32(n / 2 + 1)
        let (real, complex) = (Int32(pitch(n)), Int32(n / 2 + 1))  // distances between rows, in elements of each side
        // CUFFT_R2C = 0x2a, CUFFT_C2R = 0x2c. A non-null embed makes cuFFT read the strides and distances.
        let status = inverse
            ? api.planMany(&handle, 1, &size, &complexEmbed, 1, complex, &realEmbed, 1, real, 0x2c, Int32(batch))
            : api.planMany(&handle, 1, &size, &realEmbed, 1, real, &complexEmbed, 1, complex, 0x2a, Int32(batch))
        try check(status, "cufftPlanMany(n \(n), batch \(batch), \(inverse ? "C2R" : "R2C"))")
        let bound = api.setStream(handle, context.stream)
        if bound != 0 {
            _ = api.destroy(handle)
            try check(bound, "cufftSetStream")
        }
        plans[key] = handle
        return handle
    }

    static func check(_ status: Int32, _ call: @autoclosure () -> String) throws {
        if status != 0 { throw CUDAError(call: call(), code: status, name: "CUFFT_RESULT \(status)", detail: "") }
    }

    /// Queues `rows` in-place transforms of size `n` on `buffer` (rows of `pitch(n)` floats; real n values in, n/2 + 1
    /// complex values out, or back with `inverse`, unnormalized) on the context's stream, in batches whose elements
    /// stay below 2^31 (cuFFT's 32-bit plans). O(rows n log n) on the device.
    static func transform(_ buffer: CUDABuffer, n: Int, rows: Int, inverse: Bool) throws {
        let api = try api.get()
        let p = pitch(n)
        try CUDAModelOps.expect("buffer", buffer, bytes: rows * p * 4)
        guard n >= 1, p <= Int(Int32.max) else {
            throw LineaError.invalidArgument(argument: "n", expected: "1...\(Int32.max - 2) (cuFFT's 32-bit sizes)", actual: "\(n)")
        }
        let perBatch = max(1, min(rows, Int(Int32.max) / p))
        var first = 0
        while first < rows {
            let count = min(perBatch, rows - first)
            // One host thread at a time per plan (cuFFT's rule): two threads executing a cached plan at once share its
            // work area. Holding the lock over the queueing only costs the launch, not the transform.
            lock.lock()
            defer { lock.unlock() }
            let plan = try plan(buffer.context, n: n, batch: count, inverse: inverse, api)
            try buffer.context.makeCurrent()
            let address = buffer.address + UInt64(first * p * 4)
            try check(inverse ? api.execC2R(plan, address, address) : api.execR2C(plan, address, address),
                      inverse ? "cufftExecC2R(n \(n))" : "cufftExecR2C(n \(n))")
            first += count
        }
    }
}
