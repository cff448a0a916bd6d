import CFFTW
import Foundation

/// FFTW's single-precision plans for one transform size n: real-to-complex and complex-to-real, made once per size and
/// kept for the process. Sizes below `measuredSize` are planned with FFTW_ESTIMATE (no timing runs, the same plan every
/// time); larger ones with FFTW_MEASURE, which times candidate plans once (about a second per size here) and runs
/// about twice as fast at these sizes, whose arrays spill out of the caches, but may pick another plan in another
/// process (outputs then differ in the last bits). FFTW's planner is not
/// thread-safe, so planning holds a lock; executing a plan on other arrays (`fftwf_execute_dft_r2c`/`_c2r`) is, so the
/// workers share the plans. Every array a plan runs on comes from `fftwf_alloc_*`, aligned as the planning arrays were.
final class FFTPlans: @unchecked Sendable {  // `plans` is only touched under `lock`; a plan is immutable once made
    /// The two plans of one size.
    struct Pair: @unchecked Sendable {  // FFTW plans may be executed from several threads at once
        let forward: OpaquePointer, inverse: OpaquePointer
    }

    /// The process's plans.
    static let shared = FFTPlans()

    /// The smallest size planned with FFTW_MEASURE (sequences of 8192 tokens and more).
    static let measuredSize = 16384

    private let lock = NSLock()
    private var plans: [Int: Pair] = [:]

    /// The plans of size `n` (1...Int32.max), made on first use. O(1) when made, else FFTW's planning (O(n log n)).
    func pair(_ n: Int) throws -> Pair {
        lock.lock()
        defer { lock.unlock() }
        if let found = plans[n] { return found }
        guard let size = Int32(exactly: n), size >= 1, let real = fftwf_alloc_real(n), let spectrum = fftwf_alloc_complex(n / 2 + 1) else {
            throw LineaError.unavailable(what: "an FFT of size \(n)", reason: "FFTW could not allocate its planning arrays")
        }
        defer {
            fftwf_free(real)
            fftwf_free(spectrum)
        }
        let flags = UInt32(n >= Self.measuredSize ? FFTW_MEASURE : FFTW_ESTIMATE) | UInt32(FFTW_DESTROY_INPUT)
        guard let forward = fftwf_plan_dft_r2c_1d(size, real, spectrum, flags) else {
            throw LineaError.unavailable(what: "an FFT of size \(n)", reason: "FFTW made no real-to-complex plan")
        }
        guard let inverse = fftwf_plan_dft_c2r_1d(size, spectrum, real, flags) else {
            fftwf_destroy_plan(forward)
            throw LineaError.unavailable(what: "an FFT of size \(n)", reason: "FFTW made no complex-to-real plan")
        }
        let pair = Pair(forward: forward, inverse: inverse)
        plans[n] = pair
        return pair
    }
}

/// One worker's FFTW-aligned arrays: a real sequence of n and a spectrum of n/2 + 1 complex values.
private struct FFTScratch: @unchecked Sendable {  // each worker touches only its own
    let real: UnsafeMutablePointer<Float>, spectrum: UnsafeMutablePointer<fftwf_complex>

    init(_ n: Int) throws {
        guard let real = fftwf_alloc_real(n), let spectrum = fftwf_alloc_complex(n / 2 + 1) else {
            throw LineaError.unavailable(what: "FFT scratch of size \(n)", reason: "fftwf_malloc returned nil")
        }
        (self.real, self.spectrum) = (real, spectrum)
    }

    func free() {
        fftwf_free(real)
        fftwf_free(spectrum)
    }
}

extension LongConv {
    /// The transform size for a sequence of L: 2m for the smallest m >= L whose prime factors are 2, 3, 5 and 7, so
    /// n >= 2L - 1 (no product wraps into the first L outputs) and FFTW runs its fastest codelets; n = 2L, safari's
    /// size, whenever L has no larger prime factor. O(log L).
    public static func fftSize(_ L: Int) -> Int {
        var m = max(L, 1)
        while true {
            var r = m
            for p in [2, 3, 5, 7] { while r % p == 0 { r /= p } }
            if r == 1 { return 2 * m }
            m += 1
        }
    }

    /// Whether the fft form runs channel by channel (each worker transforms a filter and convolves the B sequences of
    /// its channel, the spectrum staying in cache: enough channels to fill the workers) rather than transforming every
    /// filter first (fewer channels than workers: the B·H sequences are the parallel items). O(1).
    static func fftByChannel(_ s: Shape) -> Bool { s.channels >= Parallel.threadCount || s.batch == 1 }

    /// The extra buffers of the fft form: the filters' spectra (one per worker, or per channel) and each worker's
    /// arrays (Float32 counts). O(1).
    static func fftScratch(_ s: Shape) -> [MemoryBudget.Buffer] {
        let n = fftSize(s.length), workers = min(Parallel.threadCount, fftByChannel(s) ? s.channels : s.batch * s.channels)
        return [.init("filter spectra", [fftByChannel(s) ? workers : s.channels, n / 2 + 1, 2]),
                .init("FFT scratch", [workers, n + 2 * (n / 2 + 1)])]
    }

    /// The fft form on packed f32 buffers (shapes checked by `shape`): each filter's first min(Lk, L) taps transformed
    /// once (zero-padded to n, scaled by 1/n), then per sequence: zero-pad to n, forward transform, multiply by its
    /// channel's filter spectrum, inverse transform, keep the first L values and add D·u. Parallel over channels (each
    /// worker one filter and its B sequences) or, with fewer channels than workers, over filters and then sequences;
    /// each worker with its own arrays. O(B·H·n log n), n = `fftSize(L)` ~ 2L.
    static func fft(_ s: Shape, u: UnsafePointer<Float>, k: UnsafePointer<Float>, D: UnsafePointer<Float>?, o: UnsafeMutablePointer<Float>) throws {
        let (L, Lk, taps, H, B) = (s.length, s.filterLength, s.taps, s.channels, s.batch)
        let n = fftSize(L), bins = n / 2 + 1
        guard n <= Int(Int32.max) else {
            throw LineaError.invalidArgument(argument: "u", expected: "L <= \(Int(Int32.max) / 4) for the fft form (FFTW's 32-bit sizes)", actual: "L = \(L)")
        }
        let plans = try FFTPlans.shared.pair(n)
        let byChannel = fftByChannel(s)
        let workers = min(Parallel.threadCount, byChannel ? H : B * H)
        var scratch: [FFTScratch] = []
        defer { scratch.forEach { $0.free() } }
        for _ in 0..<workers { scratch.append(try FFTScratch(n)) }
        let spectra = UnsafeMutablePointer<Float>.allocate(capacity: (byChannel ? workers : H) * bins * 2)
        defer { spectra.deallocate() }
        let (pu, pk, pd, po, pf) = (SendableConstPointer(u), SendableConstPointer(k), D.map(SendableConstPointer.init), SendablePointer(o),
                                    SendablePointer(spectra))
        let arrays = scratch, scale = 1 / Float(n)
        /// Filter h's spectrum, scaled by 1/n, into `row` (2·bins floats), through `w`.
        @Sendable func transformFilter(_ h: Int, into row: UnsafeMutablePointer<Float>, _ w: FFTScratch) {
            w.real.update(from: pk.base + h * Lk, count: taps)
            (w.real + taps).update(repeating: 0, count: n - taps)
            fftwf_execute_dft_r2c(plans.forward, w.real, w.spectrum)
            UnsafeMutableRawPointer(w.spectrum).withMemoryRebound(to: Float.self, capacity: 2 * bins) { z in
                for i in 0..<(2 * bins) { row[i] = z[i] * scale }
            }
        }
        /// Sequence `channel` (b·H + h) convolved with the spectrum at `f`, through `w`.
        @Sendable func convolve(_ channel: Int, _ f: UnsafePointer<Float>, _ w: FFTScratch) {
            let h = channel % H, x = pu.base + channel * L, y = po.base + channel * L
            w.real.update(from: x, count: L)
            (w.real + L).update(repeating: 0, count: n - L)
            fftwf_execute_dft_r2c(plans.forward, w.real, w.spectrum)
            UnsafeMutableRawPointer(w.spectrum).withMemoryRebound(to: Float.self, capacity: 2 * bins) { z in
                for i in 0..<bins {
                    let (a, b, c, d) = (z[2 * i], z[2 * i + 1], f[2 * i], f[2 * i + 1])
                    z[2 * i] = a * c - b * d
                    z[2 * i + 1] = a * d + b * c
                }
            }
            fftwf_execute_dft_c2r(plans.inverse, w.spectrum, w.real)
            let skip = pd?.base[h] ?? 0
            for t in 0..<L { y[t] = w.real[t] + skip * x[t] }
        }
        if byChannel {
            Parallel.forEach(H) { h, worker in
                let row = pf.base + worker * 2 * bins
                transformFilter(h, into: row, arrays[worker])
                for b in 0..<B { convolve(b * H + h, row, arrays[worker]) }
            }
        } else {
            Parallel.forEach(H) { h, worker in transformFilter(h, into: pf.base + h * 2 * bins, arrays[worker]) }
            Parallel.forEach(B * H) { channel, worker in convolve(channel, pf.base + (channel % H) * 2 * bins, arrays[worker]) }
        }
    }
}
