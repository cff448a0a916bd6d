import Foundation
import Linea

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

typealias cublasCreateFn = @convention(c) (UnsafeMutablePointer<OpaquePointer?>?) -> Int32
typealias cublasSetStreamFn = @convention(c) (OpaquePointer?, OpaquePointer?) -> Int32
typealias cublasGemmExFn = @convention(c) (
    OpaquePointer?, Int32, Int32, Int32, Int32, Int32,  // handle, transa, transb, m, n, k
    UnsafeRawPointer?, UInt64, Int32, Int32,  // alpha, A, Atype, lda
    UInt64, Int32, Int32,  // B, Btype, ldb
    UnsafeRawPointer?, UInt64, Int32, Int32,  // beta, C, Ctype, ldc
    Int32, Int32  // computeType, algo
) -> Int32

/// Dense GEMM on the GPU through cuBLAS (`libcublas.so.13`, else `.12`; env `LINEA_LIBCUBLAS` first), loaded with
/// dlopen on first use like the driver, so nothing links against CUDA. One cuBLAS handle per context, bound to the
/// context's stream.
package enum CUBLAS {
    /// The loaded entry points, or why cuBLAS could not be loaded.
    static let api: Result<API, Error> = Result { try API() }

    struct API: @unchecked Sendable {
        let create: cublasCreateFn
        let setStream: cublasSetStreamFn
        let gemmEx: cublasGemmExFn
        let library: String

        static var candidates: [String] {
            [ProcessInfo.processInfo.environment["LINEA_LIBCUBLAS"] ?? "", "libcublas.so.13", "libcublas.so.12", "libcublas.so"]
        }

        init() throws {
            guard let (h, lib) = openLibrary(API.candidates) else {
                throw LineaError.unavailable(what: "cuBLAS", reason: "libcublas.so.13 / .12 not found (tried \(API.candidates.filter { !$0.isEmpty }))")
            }
            create = try symbol(h, ["cublasCreate_v2"], as: cublasCreateFn.self, library: lib)
            setStream = try symbol(h, ["cublasSetStream_v2"], as: cublasSetStreamFn.self, library: lib)
            gemmEx = try symbol(h, ["cublasGemmEx"], as: cublasGemmExFn.self, library: lib)
            library = lib
        }
    }

    /// The library file opened, or why none could be.
    public static var library: Result<String, Error> { api.map(\.library) }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var handles: [ObjectIdentifier: OpaquePointer] = [:]

    /// The handle of `context`, created and bound to its stream on first use (contexts live for the process).
    static func handle(_ context: CUDAContext, _ api: API) throws -> OpaquePointer {
        lock.lock()
        defer { lock.unlock() }
        if let h = handles[ObjectIdentifier(context)] { return h }
        try context.makeCurrent()
        var h: OpaquePointer?
        try check(api.create(&h), "cublasCreate_v2")
        try check(api.setStream(h, context.stream), "cublasSetStream_v2")
        handles[ObjectIdentifier(context)] = h!
        return h!
    }

    static func check(_ status: Int32, _ call: @autoclosure () -> String) throws {
        if status != 0 { throw CUDAError(call: call(), code: status, name: "CUBLAS_STATUS \(status)", detail: "") }
    }

    /// cudaDataType_t of an element type: CUDA_R_32F 0, CUDA_R_16F 2, CUDA_R_16BF 14.
    static func dataType(_ dtype: DType, argument: String) throws -> Int32 {
        switch dtype {
        case .float32: return 0
        case .float16: return 2
        case .bfloat16: return 14
        default: throw LineaError.invalidArgument(argument: argument, expected: "float32, bfloat16 or float16", actual: "\(dtype)")
        }
    }

    /// Queues `out[m, n] = x[m, k] · weight[n, k]^T` (nn.Linear layout, row-major) on the context's stream: x and
    /// weight in `dtype` (f32, bf16 or f16), out in `outputDType`, fp32 accumulation (CUBLAS_COMPUTE_32F: no TF32 for
    /// f32); with `accumulate`, out's values are added in fp32 before its one rounding. Buffers are checked against
    /// their byte counts. O(m·n·k) on the device.
    public static func linear(x: CUDABuffer, weight: CUDABuffer, out: CUDABuffer, m: Int, n: Int, k: Int,
                              dtype: DType, outputDType: DType = .float32, accumulate: Bool = false) throws {
        for (name, v) in [("m", m), ("n", n), ("k", k)] where v < 0 || v > Int(Int32.max) {
            throw LineaError.invalidArgument(argument: name, expected: "0...\(Int32.max)", actual: "\(v)")
        }
        let (a, c) = (try dataType(dtype, argument: "dtype"), try dataType(outputDType, argument: "outputDType"))
        try CUDAModelOps.expect("x", x, bytes: m * k * dtype.byteCount)
        try CUDAModelOps.expect("weight", weight, bytes: n * k * dtype.byteCount)
        try CUDAModelOps.expect("out", out, bytes: m * n * outputDType.byteCount)
        if m == 0 || n == 0 { return }
        if k == 0 { return accumulate ? () : try out.fill(byte: 0) }
        let api = try api.get()
        let h = try handle(out.context, api)
        try out.context.makeCurrent()
        var alpha: Float = 1, beta: Float = accumulate ? 1 : 0
        // Row-major y = x W^T is column-major y^T = W x^T: A = W (k x n, transposed), B = x^T (k x m).
        let status = withUnsafePointer(to: &alpha) { al in withUnsafePointer(to: &beta) { be in
            api.gemmEx(h, 1, 0, Int32(n), Int32(m), Int32(k), al, weight.address, a, Int32(k), x.address, a, Int32(k),
                       be, out.address, c, Int32(n), 68, -1)  // CUBLAS_OP_T, CUBLAS_OP_N; CUBLAS_COMPUTE_32F, default algo
        } }
        try check(status, "cublasGemmEx(m \(n), n \(m), k \(k))")
    }
}
