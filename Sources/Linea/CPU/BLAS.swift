#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CLineaCPU
import Foundation

/// Dense single-precision GEMM from OpenBLAS, row-major. OpenBLAS is loaded with `dlopen` on first use, after its
/// kernel set ("core") is chosen from the CPU's feature flags: OpenBLAS itself picks by CPU model name, and on hosts
/// whose model it does not know (virtual machines that hide it, CPUs newer than the build) it falls back to SSE3
/// kernels at a fifth of the machine's speed. Without OpenBLAS a portable loop keeps every result correct, slowly.
public enum BLAS {
    /// What was loaded and why: printed by `linea bench` and `linea list`.
    public struct Info: Sendable {
        /// The library file opened, or nil when none could be (the portable fallback then runs).
        public let library: String?
        /// The core OpenBLAS reports running (`openblas_get_corename`), e.g. "skylakex", "haswell".
        public let core: String
        /// OpenBLAS's build description (`openblas_get_config`), e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH ...".
        public let config: String
        /// How the core was chosen, in words.
        public let choice: String
    }

    /// The loaded library's description.
    public static var info: Info { runtime.info }

    /// Sets OpenBLAS's own thread count (`Parallel.threadCount` from the load on, so a lone large GEMM, a model's
    /// projection, uses all of Linea's cores). Kernels that call GEMM from `Parallel.forEach`'s workers run inside
    /// `singleThreaded` instead.
    public static func setThreads(_ n: Int) {
        runtime.setThreads?(Int32(clamping: n))
    }

    /// Runs `body` with OpenBLAS on one thread (its sgemm calls come from every worker at once), and puts
    /// `Parallel.threadCount` back when the last such region ends: regions may overlap (context-parallel ranks).
    /// Leaving one thread set made every projection after a model's first chunked layer run on one core. O(body).
    public static func singleThreaded<R>(_ body: () throws -> R) rethrows -> R {
        singleThreadedRegions.enter()
        defer { singleThreadedRegions.leave() }
        return try body()
    }

    /// The count of open `singleThreaded` regions; the first sets one thread, the last restores the default.
    private final class Regions: @unchecked Sendable {  // `count` only under `lock`
        private let lock = NSLock()
        private var count = 0
        func enter() { lock.withLock { count += 1; if count == 1 { BLAS.setThreads(1) } } }
        func leave() { lock.withLock { count -= 1; if count == 0 { BLAS.setThreads(Parallel.threadCount) } } }
    }
    private static let singleThreadedRegions = Regions()

    /// OpenBLAS's current thread count (1 for the portable fallback).
    public static var threads: Int { runtime.getThreads.map { Int($0()) } ?? 1 }

    /// The OpenBLAS core to run on a CPU with `features`: the widest kernel set it can execute. nil leaves the
    /// choice to OpenBLAS (no AVX2: its own detection is as good as ours there).
    public static func core(for features: CPUFeatures) -> String? {
        if features.isSuperset(of: .avx512) { return "SkylakeX" }
        if features.isSuperset(of: [.avx2, .fma]) { return "Haswell" }
        return nil
    }

    /// `C = alpha * op(A) * op(B) + beta * C`, row-major; `op(A)` is `m x k`, `op(B)` is `k x n`, C is `m x n`.
    /// `lda`, `ldb`, `ldc` are row strides in elements. O(m·n·k).
    public static func sgemm(
        transA: Bool = false, transB: Bool = false,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            // BLAS would only scale C; keep the same contract without calling out.
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } }
            return
        }
        guard let gemm = runtime.sgemm,
              let m32 = Int32(exactly: m), let n32 = Int32(exactly: n), let k32 = Int32(exactly: k),
              let lda32 = Int32(exactly: lda), let ldb32 = Int32(exactly: ldb), let ldc32 = Int32(exactly: ldc)
        else {
            portableSgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                          b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            return
        }
        let (noTrans, trans): (Int32, Int32) = (111, 112)  // CblasNoTrans, CblasTrans
        gemm(101, transA ? trans : noTrans, transB ? trans : noTrans,  // 101: CblasRowMajor
             m32, n32, k32, alpha, a, lda32, b, ldb32, beta, c, ldc32)
    }

    /// The same product as a plain loop: used only when OpenBLAS is missing or a size exceeds its 32-bit indices.
    package static func portableSgemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        let row = UnsafeMutablePointer<Float>.allocate(capacity: n)
        defer { row.deallocate() }
        for i in 0..<m {
            row.initialize(repeating: 0, count: n)
            for p in 0..<k {
                let x = transA ? a[p * lda + i] : a[i * lda + p]
                if transB { for j in 0..<n { row[j] += x * b[j * ldb + p] } }
                else { for j in 0..<n { row[j] += x * b[p * ldb + j] } }
            }
            for j in 0..<n { c[i * ldc + j] = alpha * row[j] + (beta == 0 ? 0 : beta * c[i * ldc + j]) }
        }
    }

    typealias SgemmFn = @convention(c) (
        Int32, Int32, Int32, Int32, Int32, Int32, Float, UnsafePointer<Float>?, Int32, UnsafePointer<Float>?, Int32,
        Float, UnsafeMutablePointer<Float>?, Int32) -> Void

    /// The resolved entry points; loaded once, thread-safely (a global's lazy initializer).
    struct Runtime: @unchecked Sendable {
        var sgemm: SgemmFn?
        var setThreads: (@convention(c) (Int32) -> Void)?
        var getThreads: (@convention(c) () -> Int32)?
        var info: Info
    }

    static let runtime: Runtime = loadRuntime()

    /// Candidate library files: `LINEA_OPENBLAS` if set, a `lib/` folder beside the executable (the packed static
    /// binary for the GPU machine), then the system's names.
    static func candidates() -> [String] {
        var names: [String] = []
        if let path = ProcessInfo.processInfo.environment["LINEA_OPENBLAS"], !path.isEmpty { names.append(path) }
        let executable = URL(fileURLWithPath: CommandLine.arguments.first ?? "").resolvingSymlinksInPath()
        names.append(executable.deletingLastPathComponent().appendingPathComponent("lib/libopenblas.so.0").path)
        names += ["libopenblas.so.0", "libopenblas.so", "libopenblas.dylib",
                  "/opt/homebrew/opt/openblas/lib/libopenblas.dylib", "/usr/local/opt/openblas/lib/libopenblas.dylib"]
        return names
    }

    static func loadRuntime() -> Runtime {
        let environment = ProcessInfo.processInfo.environment
        let forced = environment["LINEA_BLAS_CORETYPE"].flatMap { $0.isEmpty || $0 == "auto" ? nil : $0 }
        let previous = environment["OPENBLAS_CORETYPE"]
        let chosen = forced ?? core(for: .current)
        var choice: String
        if let forced {
            choice = "LINEA_BLAS_CORETYPE=\(forced)"
        } else if let chosen {
            choice = "from CPU flags (\(CPUFeatures.current.isSuperset(of: .avx512) ? "avx512f/dq/bw/vl" : "avx2+fma"))"
            if let previous, previous.lowercased() != chosen.lowercased() {
                choice += "; OPENBLAS_CORETYPE=\(previous) replaced (set LINEA_BLAS_CORETYPE to force a core)"
            }
        } else {
            choice = previous.map { "OPENBLAS_CORETYPE=\($0)" } ?? "OpenBLAS's own detection"
        }
        // OpenBLAS reads OPENBLAS_CORETYPE in its load-time constructor: set it around dlopen, then restore the
        // caller's value so child processes see the environment they were given.
        if let chosen { setenv("OPENBLAS_CORETYPE", chosen, 1) }
        defer {
            if chosen != nil {
                if let previous { setenv("OPENBLAS_CORETYPE", previous, 1) } else { unsetenv("OPENBLAS_CORETYPE") }
            }
        }
        // Its idle threads also call sched_yield for 2^28 cycles (about 0.1 s) after every GEMM before they sleep: between
        // a prefill's GEMMs Linea's own threads run the mixers, and the yielding threads took turns on their cores (11%
        // of a Mamba-2 prefill's samples in the kernel's scheduler on 2 cores). 2^4 cycles puts them to sleep at once; the
        // next GEMM wakes them, microseconds against its milliseconds. A value the caller set is kept.
        let setTimeout = environment["OPENBLAS_THREAD_TIMEOUT"] == nil
        if setTimeout { setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1) }
        defer { if setTimeout { unsetenv("OPENBLAS_THREAD_TIMEOUT") } }
        for name in candidates() {
            guard let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL), let sgemm = dlsym(handle, "cblas_sgemm") else {
                continue
            }
            func symbol<T>(_ s: String, as type: T.Type) -> T? { dlsym(handle, s).map { unsafeBitCast($0, to: type) } }
            let corename = symbol("openblas_get_corename", as: (@convention(c) () -> UnsafePointer<CChar>?).self)
            let config = symbol("openblas_get_config", as: (@convention(c) () -> UnsafePointer<CChar>?).self)
            let path = linea_library_path(sgemm).map { String(cString: $0) } ?? name
            let info = Info(
                library: path,
                core: corename?().map { String(cString: $0) } ?? "unknown",
                config: config?().map { String(cString: $0) } ?? "unknown",
                choice: choice)
            let setThreads = symbol("openblas_set_num_threads", as: (@convention(c) (Int32) -> Void).self)
            setThreads?(Int32(clamping: Parallel.threadCount))  // OpenBLAS's own default is every core, not LINEA_THREADS
            return Runtime(
                sgemm: unsafeBitCast(sgemm, to: SgemmFn.self),
                setThreads: setThreads,
                getThreads: symbol("openblas_get_num_threads", as: (@convention(c) () -> Int32).self),
                info: info)
        }
        return Runtime(info: Info(library: nil, core: "portable", config: "none",
                                  choice: "OpenBLAS not found (install libopenblas0 or set LINEA_OPENBLAS); a plain loop runs"))
    }
}
