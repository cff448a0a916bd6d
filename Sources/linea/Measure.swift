import Foundation
import Linea

/// Timing and memory measurement for `linea bench`.
enum Measure {
    /// Resident set size and its high-water mark in bytes, from /proc/self/status (0 where unavailable).
    static func residentBytes() -> (current: Int, peak: Int) {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (0, 0) }
        func field(_ name: String) -> Int {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
            let kib = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
            return kib * 1024
        }
        return (field("VmRSS"), field("VmHWM"))
    }

    /// Resets the kernel's peak-RSS counter to the current RSS (Linux `clear_refs` value 5); false if refused.
    @discardableResult
    static func resetPeak() -> Bool {
        guard let handle = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
        defer { try? handle.close() }
        return (try? handle.write(contentsOf: Data("5".utf8))) != nil
    }

    /// Runs `body` at least `minRuns` times and until `minSeconds` have passed or `maxRuns` runs are done.
    /// Returns the fastest time in ms (on a shared machine noise only ever adds time, so the minimum is the
    /// stable estimate) and the peak resident bytes above the level before the first run.
    static func run(minSeconds: Double = 1, minRuns: Int = 3, maxRuns: Int = 10, _ body: () throws -> Void) rethrows -> (ms: Double, peakExtra: Int) {
        resetPeak()
        let before = residentBytes().current
        var times: [Double] = []
        var total = 0.0
        repeat {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            times.append(seconds)
            total += seconds
        } while times.count < minRuns || (total < minSeconds && times.count < maxRuns)
        let peak = residentBytes().peak
        return (times.min()! * 1000, max(0, peak - before))
    }

    /// Side of the reference sgemm: 2048 fills a few cores; on a 16-core host an n = 2048 sgemm reached only
    /// 223 GFLOP/s, less than half of what flash attention reached there, so more cores get 4096.
    static let sgemmSize = Parallel.threadCount <= 4 ? 2048 : 4096

    /// The reference sgemm (multi-threaded OpenBLAS at `n x n x n`, the machine's practical GEMM limit); its operands
    /// are allocated once, so that timing it before every bench point does not allocate and fill 3·n² floats each time.
    final class SgemmReference {
        let n: Int
        private var a: [Float], b: [Float], c: [Float]

        init(n: Int = sgemmSize) {
            self.n = n
            (a, b, c) = ([Float](repeating: 0.5, count: n * n), [Float](repeating: 0.25, count: n * n), [Float](repeating: 0, count: n * n))
        }

        /// The rate at `n x n x n` on all threads, in GFLOP/s, fastest of runs lasting at least `minSeconds`.
        func gflops(minSeconds: Double) -> Double {
            let n = self.n
            let time = a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                run(minSeconds: minSeconds, maxRuns: 10) {
                    BLAS.sgemm(m: n, n: n, k: n, a: ap.baseAddress!, lda: n, b: bp.baseAddress!, ldb: n, c: cp.baseAddress!, ldc: n)
                }
            } } }
            return 2 * Double(n) * Double(n) * Double(n) / (time.ms / 1000) / 1e9
        }
    }

    /// What the CPU numbers ran on: the CPU's vendor and vector features, the width of Linea's own kernels, the BLAS
    /// library and core, and why.
    static func hostDescription() -> [String] {
        let blas = BLAS.info
        let features = CPUFeatures.current
        return [
            "cpu: \(CPUFeatures.vendor.isEmpty ? "unknown" : CPUFeatures.vendor), \(Parallel.threadCount) threads, \(features); "
                + "kernels: \(CPUKernels.width) (LINEA_CPU_KERNELS=avx2|avx512 to choose)",
            "blas: \(blas.library ?? "none") core \(blas.core) (\(blas.choice)); \(blas.config)",
        ]
    }

    /// Least-squares slope of log(ms) over log(T): ~1 for linear mechanisms, ~2 for attention.
    static func exponent(_ points: [(T: Int, ms: Double)]) -> Double? {
        guard points.count >= 2 else { return nil }
        let xs = points.map { log(Double($0.T)) }, ys = points.map { log($0.ms) }
        let mx = xs.reduce(0, +) / Double(xs.count), my = ys.reduce(0, +) / Double(ys.count)
        var num = 0.0, den = 0.0
        for (x, y) in zip(xs, ys) {
            num += (x - mx) * (y - my)
            den += (x - mx) * (x - mx)
        }
        return den > 0 ? num / den : nil
    }
}
