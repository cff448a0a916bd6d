import Foundation
import Linea

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The CUDA driver API and NVRTC are loaded with dlopen at run time, so Linea builds and its CPU path
// runs on machines without CUDA (no headers, no libraries). The few C signatures used are declared here.

typealias CUresult = Int32
typealias CUdevice = Int32
typealias CUdeviceptr = UInt64
typealias CUhandle = OpaquePointer  // CUcontext, CUmodule, CUfunction, CUstream, CUevent

typealias cuInitFn = @convention(c) (UInt32) -> CUresult
typealias cuDriverGetVersionFn = @convention(c) (UnsafeMutablePointer<Int32>?) -> CUresult
typealias cuDeviceGetCountFn = @convention(c) (UnsafeMutablePointer<Int32>?) -> CUresult
typealias cuDeviceGetFn = @convention(c) (UnsafeMutablePointer<CUdevice>?, Int32) -> CUresult
typealias cuDeviceGetAttributeFn = @convention(c) (UnsafeMutablePointer<Int32>?, Int32, CUdevice) -> CUresult
typealias cuDeviceGetNameFn = @convention(c) (UnsafeMutablePointer<CChar>?, Int32, CUdevice) -> CUresult
typealias cuDevicePrimaryCtxRetainFn = @convention(c) (UnsafeMutablePointer<CUhandle?>?, CUdevice) -> CUresult
typealias cuDevicePrimaryCtxReleaseFn = @convention(c) (CUdevice) -> CUresult
typealias cuCtxSetCurrentFn = @convention(c) (CUhandle?) -> CUresult
typealias cuCtxSynchronizeFn = @convention(c) () -> CUresult
typealias cuMemAllocFn = @convention(c) (UnsafeMutablePointer<CUdeviceptr>?, Int) -> CUresult
typealias cuMemFreeFn = @convention(c) (CUdeviceptr) -> CUresult
typealias cuMemAllocHostFn = @convention(c) (UnsafeMutablePointer<UnsafeMutableRawPointer?>?, Int) -> CUresult
typealias cuMemFreeHostFn = @convention(c) (UnsafeMutableRawPointer?) -> CUresult
typealias cuMemcpyHtoDFn = @convention(c) (CUdeviceptr, UnsafeRawPointer?, Int) -> CUresult
typealias cuMemcpyDtoHFn = @convention(c) (UnsafeMutableRawPointer?, CUdeviceptr, Int) -> CUresult
typealias cuMemcpyDtoDAsyncFn = @convention(c) (CUdeviceptr, CUdeviceptr, Int, CUhandle?) -> CUresult
typealias cuMemcpyHtoDAsyncFn = @convention(c) (CUdeviceptr, UnsafeRawPointer?, Int, CUhandle?) -> CUresult
typealias cuMemAllocAsyncFn = @convention(c) (UnsafeMutablePointer<CUdeviceptr>?, Int, CUhandle?) -> CUresult
typealias cuMemFreeAsyncFn = @convention(c) (CUdeviceptr, CUhandle?) -> CUresult
typealias cuDeviceGetDefaultMemPoolFn = @convention(c) (UnsafeMutablePointer<CUhandle?>?, CUdevice) -> CUresult
typealias cuMemPoolSetAttributeFn = @convention(c) (CUhandle?, Int32, UnsafeMutableRawPointer?) -> CUresult
typealias cuMemsetD8AsyncFn = @convention(c) (CUdeviceptr, UInt8, Int, CUhandle?) -> CUresult
typealias cuStreamCreateFn = @convention(c) (UnsafeMutablePointer<CUhandle?>?, UInt32) -> CUresult
typealias cuHandleFn = @convention(c) (CUhandle?) -> CUresult  // cuStreamDestroy, cuStreamSynchronize, ...
typealias cuEventCreateFn = @convention(c) (UnsafeMutablePointer<CUhandle?>?, UInt32) -> CUresult
typealias cuEventRecordFn = @convention(c) (CUhandle?, CUhandle?) -> CUresult
typealias cuEventElapsedTimeFn = @convention(c) (UnsafeMutablePointer<Float>?, CUhandle?, CUhandle?) -> CUresult
typealias cuModuleLoadDataFn = @convention(c) (UnsafeMutablePointer<CUhandle?>?, UnsafeRawPointer?) -> CUresult
typealias cuModuleGetFunctionFn = @convention(c) (UnsafeMutablePointer<CUhandle?>?, CUhandle?, UnsafePointer<CChar>?) -> CUresult
typealias cuFuncSetAttributeFn = @convention(c) (CUhandle?, Int32, Int32) -> CUresult
typealias cuLaunchKernelFn = @convention(c) (
    CUhandle?, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, CUhandle?,
    UnsafeMutablePointer<UnsafeMutableRawPointer?>?, UnsafeMutablePointer<UnsafeMutableRawPointer?>?
) -> CUresult
typealias cuGetErrorNameFn = @convention(c) (CUresult, UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> CUresult

typealias nvrtcProgram = OpaquePointer
typealias nvrtcCreateProgramFn = @convention(c) (
    UnsafeMutablePointer<nvrtcProgram?>?, UnsafePointer<CChar>?, UnsafePointer<CChar>?, Int32,
    UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<UnsafePointer<CChar>?>?
) -> Int32
typealias nvrtcCompileProgramFn = @convention(c) (nvrtcProgram?, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
typealias nvrtcGetSizeFn = @convention(c) (nvrtcProgram?, UnsafeMutablePointer<Int>?) -> Int32
typealias nvrtcGetBytesFn = @convention(c) (nvrtcProgram?, UnsafeMutablePointer<CChar>?) -> Int32
typealias nvrtcDestroyProgramFn = @convention(c) (UnsafeMutablePointer<nvrtcProgram?>?) -> Int32
typealias nvrtcVersionFn = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<Int32>?) -> Int32
typealias nvrtcGetErrorStringFn = @convention(c) (Int32) -> UnsafePointer<CChar>?

/// A failed CUDA driver or NVRTC call: the call, the error code and its CUDA name (e.g. `CUDA_ERROR_OUT_OF_MEMORY`).
public struct CUDAError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The C function that failed, e.g. `cuMemAlloc_v2`.
    public let call: String
    /// The numeric `CUresult` / `nvrtcResult`.
    public let code: Int32
    /// The error's name from `cuGetErrorName` / `nvrtcGetErrorString`.
    public let name: String
    /// Extra context (e.g. the NVRTC compile log).
    public let detail: String

    public var description: String {
        "\(call) failed: \(name) (\(code))" + (detail.isEmpty ? "" : "\n\(detail)")
    }
}

/// Opens the first loadable library among `candidates`; returns the handle and the name used.
func openLibrary(_ candidates: [String]) -> (UnsafeMutableRawPointer, String)? {
    for name in candidates where !name.isEmpty {
        if let handle = dlopen(name, RTLD_NOW | RTLD_GLOBAL) { return (handle, name) }
    }
    return nil
}

/// Looks up `name` in `handle` and casts it to the function type `T`; throws `unavailable` if missing.
func symbol<T>(_ handle: UnsafeMutableRawPointer, _ names: [String], as: T.Type, library: String) throws -> T {
    for name in names {
        if let pointer = dlsym(handle, name) { return unsafeBitCast(pointer, to: T.self) }
    }
    throw LineaError.unavailable(what: "CUDA backend", reason: "\(library) has no symbol \(names.joined(separator: " / "))")
}

/// The CUDA driver API entry points used by Linea (loaded from `libcuda.so.1`).
final class DriverAPI: @unchecked Sendable {
    let cuInit: cuInitFn
    let cuDriverGetVersion: cuDriverGetVersionFn
    let cuDeviceGetCount: cuDeviceGetCountFn
    let cuDeviceGet: cuDeviceGetFn
    let cuDeviceGetAttribute: cuDeviceGetAttributeFn
    let cuDeviceGetName: cuDeviceGetNameFn
    let cuDevicePrimaryCtxRetain: cuDevicePrimaryCtxRetainFn
    let cuDevicePrimaryCtxRelease: cuDevicePrimaryCtxReleaseFn
    let cuCtxSetCurrent: cuCtxSetCurrentFn
    let cuCtxSynchronize: cuCtxSynchronizeFn
    let cuMemAlloc: cuMemAllocFn
    let cuMemFree: cuMemFreeFn
    let cuMemAllocHost: cuMemAllocHostFn
    let cuMemFreeHost: cuMemFreeHostFn
    let cuMemcpyHtoD: cuMemcpyHtoDFn
    let cuMemcpyDtoH: cuMemcpyDtoHFn
    let cuMemcpyDtoDAsync: cuMemcpyDtoDAsyncFn
    let cuMemcpyHtoDAsync: cuMemcpyHtoDAsyncFn
    /// The stream-ordered allocator (CUDA 11.2+); nil on older drivers.
    let cuMemAllocAsync: cuMemAllocAsyncFn?
    let cuMemFreeAsync: cuMemFreeAsyncFn?
    let cuDeviceGetDefaultMemPool: cuDeviceGetDefaultMemPoolFn?
    let cuMemPoolSetAttribute: cuMemPoolSetAttributeFn?
    let cuMemsetD8Async: cuMemsetD8AsyncFn
    let cuStreamCreate: cuStreamCreateFn
    let cuStreamDestroy: cuHandleFn
    let cuStreamSynchronize: cuHandleFn
    let cuEventCreate: cuEventCreateFn
    let cuEventDestroy: cuHandleFn
    let cuEventRecord: cuEventRecordFn
    let cuEventSynchronize: cuHandleFn
    let cuEventElapsedTime: cuEventElapsedTimeFn
    let cuModuleLoadData: cuModuleLoadDataFn
    let cuModuleUnload: cuHandleFn
    let cuModuleGetFunction: cuModuleGetFunctionFn
    let cuFuncSetAttribute: cuFuncSetAttributeFn
    let cuLaunchKernel: cuLaunchKernelFn
    let cuGetErrorName: cuGetErrorNameFn

    /// Library names tried in order (env `LINEA_LIBCUDA` first).
    static var candidates: [String] {
        [ProcessInfo.processInfo.environment["LINEA_LIBCUDA"] ?? "", "libcuda.so.1", "libcuda.so"]
    }

    init() throws {
        guard let (h, lib) = openLibrary(DriverAPI.candidates) else {
            let why = dlerror().map { String(cString: $0) } ?? "dlopen failed"
            throw LineaError.unavailable(
                what: "CUDA backend",
                reason: "the CUDA driver library libcuda.so.1 not found (no NVIDIA driver on this machine?); "
                    + "tried \(DriverAPI.candidates.filter { !$0.isEmpty }), last error: \(why)")
        }
        func f<T>(_ names: String..., as t: T.Type) throws -> T { try symbol(h, names, as: t, library: lib) }
        cuInit = try f("cuInit", as: cuInitFn.self)
        cuDriverGetVersion = try f("cuDriverGetVersion", as: cuDriverGetVersionFn.self)
        cuDeviceGetCount = try f("cuDeviceGetCount", as: cuDeviceGetCountFn.self)
        cuDeviceGet = try f("cuDeviceGet", as: cuDeviceGetFn.self)
        cuDeviceGetAttribute = try f("cuDeviceGetAttribute", as: cuDeviceGetAttributeFn.self)
        cuDeviceGetName = try f("cuDeviceGetName", as: cuDeviceGetNameFn.self)
        cuDevicePrimaryCtxRetain = try f("cuDevicePrimaryCtxRetain", as: cuDevicePrimaryCtxRetainFn.self)
        cuDevicePrimaryCtxRelease = try f("cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease", as: cuDevicePrimaryCtxReleaseFn.self)
        cuCtxSetCurrent = try f("cuCtxSetCurrent", as: cuCtxSetCurrentFn.self)
        cuCtxSynchronize = try f("cuCtxSynchronize", as: cuCtxSynchronizeFn.self)
        cuMemAlloc = try f("cuMemAlloc_v2", as: cuMemAllocFn.self)
        cuMemFree = try f("cuMemFree_v2", as: cuMemFreeFn.self)
        cuMemAllocHost = try f("cuMemAllocHost_v2", as: cuMemAllocHostFn.self)
        cuMemFreeHost = try f("cuMemFreeHost", as: cuMemFreeHostFn.self)
        cuMemcpyHtoD = try f("cuMemcpyHtoD_v2", as: cuMemcpyHtoDFn.self)
        cuMemcpyDtoH = try f("cuMemcpyDtoH_v2", as: cuMemcpyDtoHFn.self)
        cuMemcpyDtoDAsync = try f("cuMemcpyDtoDAsync_v2", as: cuMemcpyDtoDAsyncFn.self)
        cuMemcpyHtoDAsync = try f("cuMemcpyHtoDAsync_v2", as: cuMemcpyHtoDAsyncFn.self)
        cuMemAllocAsync = try? f("cuMemAllocAsync", as: cuMemAllocAsyncFn.self)
        cuMemFreeAsync = try? f("cuMemFreeAsync", as: cuMemFreeAsyncFn.self)
        cuDeviceGetDefaultMemPool = try? f("cuDeviceGetDefaultMemPool", as: cuDeviceGetDefaultMemPoolFn.self)
        cuMemPoolSetAttribute = try? f("cuMemPoolSetAttribute", as: cuMemPoolSetAttributeFn.self)
        cuMemsetD8Async = try f("cuMemsetD8Async", as: cuMemsetD8AsyncFn.self)
        cuStreamCreate = try f("cuStreamCreate", as: cuStreamCreateFn.self)
        cuStreamDestroy = try f("cuStreamDestroy_v2", "cuStreamDestroy", as: cuHandleFn.self)
        cuStreamSynchronize = try f("cuStreamSynchronize", as: cuHandleFn.self)
        cuEventCreate = try f("cuEventCreate", as: cuEventCreateFn.self)
        cuEventDestroy = try f("cuEventDestroy_v2", "cuEventDestroy", as: cuHandleFn.self)
        cuEventRecord = try f("cuEventRecord", as: cuEventRecordFn.self)
        cuEventSynchronize = try f("cuEventSynchronize", as: cuHandleFn.self)
        cuEventElapsedTime = try f("cuEventElapsedTime_v2", "cuEventElapsedTime", as: cuEventElapsedTimeFn.self)
        cuModuleLoadData = try f("cuModuleLoadData", as: cuModuleLoadDataFn.self)
        cuModuleUnload = try f("cuModuleUnload", as: cuHandleFn.self)
        cuModuleGetFunction = try f("cuModuleGetFunction", as: cuModuleGetFunctionFn.self)
        cuFuncSetAttribute = try f("cuFuncSetAttribute", as: cuFuncSetAttributeFn.self)
        cuLaunchKernel = try f("cuLaunchKernel", as: cuLaunchKernelFn.self)
        cuGetErrorName = try f("cuGetErrorName", as: cuGetErrorNameFn.self)
    }

    /// Throws a `CUDAError` naming `call` unless `result` is `CUDA_SUCCESS`.
    func check(_ result: CUresult, _ call: @autoclosure () -> String, _ detail: String = "") throws {
        guard result != 0 else { return }  // the message is built only for a failure (a launch's would cost microseconds)
        var namePointer: UnsafePointer<CChar>?
        let name = cuGetErrorName(result, &namePointer) == 0 && namePointer != nil
            ? String(cString: namePointer!) : "CUDA error \(result)"
        throw CUDAError(call: call(), code: result, name: name, detail: detail)
    }
}

/// The NVRTC entry points used by Linea (loaded from `libnvrtc.so.13` or `LINEA_NVRTC`).
final class NVRTCAPI: @unchecked Sendable {
    let createProgram: nvrtcCreateProgramFn
    let compileProgram: nvrtcCompileProgramFn
    let getProgramLogSize: nvrtcGetSizeFn
    let getProgramLog: nvrtcGetBytesFn
    let getCUBINSize: nvrtcGetSizeFn
    let getCUBIN: nvrtcGetBytesFn
    let getPTXSize: nvrtcGetSizeFn
    let getPTX: nvrtcGetBytesFn
    let destroyProgram: nvrtcDestroyProgramFn
    let version: nvrtcVersionFn
    let getErrorString: nvrtcGetErrorStringFn
    /// The library file that was opened.
    let libraryName: String

    /// Library names tried in order.
    static var candidates: [String] {
        [
            ProcessInfo.processInfo.environment["LINEA_NVRTC"] ?? "",
            "libnvrtc.so.13", "libnvrtc.so",
            "/usr/local/cuda-13.0/targets/x86_64-linux/lib/libnvrtc.so.13",
            "/usr/local/cuda/lib64/libnvrtc.so.13", "/usr/local/cuda/lib64/libnvrtc.so",
        ]
    }

    init() throws {
        guard let (h, lib) = openLibrary(NVRTCAPI.candidates) else {
            throw LineaError.unavailable(
                what: "CUDA backend",
                reason: "NVRTC (libnvrtc.so.13) not found; set LINEA_NVRTC to its path (tried \(NVRTCAPI.candidates.filter { !$0.isEmpty }))")
        }
        libraryName = lib
        // NVRTC dlopens libnvrtc-builtins when compiling; when it was found by path, load its builtins from
        // the same folder first so no LD_LIBRARY_PATH is needed.
        if lib.contains("/") {
            let dir = (lib as NSString).deletingLastPathComponent
            let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
            for name in names.sorted() where name.hasPrefix("libnvrtc-builtins.so.") && !name.contains(".alt.") {
                _ = dlopen(dir + "/" + name, RTLD_NOW | RTLD_GLOBAL)
            }
        }
        func f<T>(_ name: String, as t: T.Type) throws -> T { try symbol(h, [name], as: t, library: lib) }
        createProgram = try f("nvrtcCreateProgram", as: nvrtcCreateProgramFn.self)
        compileProgram = try f("nvrtcCompileProgram", as: nvrtcCompileProgramFn.self)
        getProgramLogSize = try f("nvrtcGetProgramLogSize", as: nvrtcGetSizeFn.self)
        getProgramLog = try f("nvrtcGetProgramLog", as: nvrtcGetBytesFn.self)
        getCUBINSize = try f("nvrtcGetCUBINSize", as: nvrtcGetSizeFn.self)
        getCUBIN = try f("nvrtcGetCUBIN", as: nvrtcGetBytesFn.self)
        getPTXSize = try f("nvrtcGetPTXSize", as: nvrtcGetSizeFn.self)
        getPTX = try f("nvrtcGetPTX", as: nvrtcGetBytesFn.self)
        destroyProgram = try f("nvrtcDestroyProgram", as: nvrtcDestroyProgramFn.self)
        version = try f("nvrtcVersion", as: nvrtcVersionFn.self)
        getErrorString = try f("nvrtcGetErrorString", as: nvrtcGetErrorStringFn.self)
    }

    /// Throws a `CUDAError` naming `call` unless `result` is `NVRTC_SUCCESS`.
    func check(_ result: Int32, _ call: @autoclosure () -> String, _ detail: String = "") throws {
        guard result != 0 else { return }
        let name = getErrorString(result).map { String(cString: $0) } ?? "NVRTC error \(result)"
        throw CUDAError(call: call(), code: result, name: name, detail: detail)
    }

    /// "major.minor" of the loaded NVRTC.
    var versionString: String {
        var major: Int32 = 0, minor: Int32 = 0
        _ = version(&major, &minor)
        return "\(major).\(minor)"
    }

    /// Compiles `source` with `options` and the in-memory `headers` (include name, text) that it may `#include`;
    /// returns a CUBIN (`cubin == true`) or NUL-terminated PTX image. Throws a `CUDAError` carrying the compile log.
    func compile(
        source: String, name: String, options: [String], headers: [(name: String, source: String)] = [], cubin: Bool
    ) throws -> [UInt8] {
        var program: nvrtcProgram?
        let headerTexts = headers.map { strdup($0.source) }, includeNames = headers.map { strdup($0.name) }
        defer { (headerTexts + includeNames).forEach { free($0) } }
        let created = headerTexts.map { UnsafePointer<CChar>($0) }.withUnsafeBufferPointer { texts in
            includeNames.map { UnsafePointer<CChar>($0) }.withUnsafeBufferPointer { names in
                createProgram(&program, source, name, Int32(headers.count), texts.baseAddress, names.baseAddress)
            }
        }
        try check(created, "nvrtcCreateProgram")
        defer { _ = destroyProgram(&program) }
        let cOptions = options.map { strdup($0) }
        defer { cOptions.forEach { free($0) } }
        let result = cOptions.map { UnsafePointer<CChar>($0) }.withUnsafeBufferPointer {
            compileProgram(program, Int32(options.count), $0.baseAddress)
        }
        var logSize = 0
        _ = getProgramLogSize(program, &logSize)
        var log = [CChar](repeating: 0, count: max(logSize, 1))
        _ = getProgramLog(program, &log)
        let logText = String(decoding: log.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        try check(result, "nvrtcCompileProgram(\(name), \(options.joined(separator: " ")))", logText)
        var size = 0
        try check(cubin ? getCUBINSize(program, &size) : getPTXSize(program, &size), "nvrtcGet\(cubin ? "CUBIN" : "PTX")Size")
        var bytes = [CChar](repeating: 0, count: size)
        try check(cubin ? getCUBIN(program, &bytes) : getPTX(program, &bytes), "nvrtcGet\(cubin ? "CUBIN" : "PTX")")
        return bytes.map { UInt8(bitPattern: $0) }
    }
}
