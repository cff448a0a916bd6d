// package-benchmark suite (`swift package benchmark`): the issues' performance targets as regression-tracked
// benchmarks. Each one reports wall-clock time, peak resident memory and a custom "GFLOP/s" metric; OpenBLAS
// sgemm runs in the same suite as the yardstick. `linea bench` remains the sweep with exponent fits and plots.
import Benchmark
import Foundation
import Linea

/// GFLOP/s as an integer metric (larger is better; not multiplied by the scaling factor).
let gflops = BenchmarkMetric.custom("GFLOP/s", polarity: .prefersLarger, useScalingFactor: false)


/// Runs `body` once per iteration and records its GFLOP/s for `flops` floating-point operations; the clock of
/// the other metrics starts here too, after the caller built its inputs.
func measure(_ benchmark: Benchmark, flops: Double, _ body: () throws -> Void) throws {
    benchmark.startMeasurement()
    defer { benchmark.stopMeasurement() }
    for _ in benchmark.scaledIterations {
        let start = ContinuousClock.now
        try body()
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        benchmark.measurement(gflops, Int((flops / seconds / 1e9).rounded()))
    }
}

let benchmarks: @Sendable () -> Void = {
    // Few, long iterations: each call takes milliseconds to seconds.
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .peakMemoryResident, gflops], warmupIterations: 1, maxDuration: .seconds(10), maxIterations: 5)

    let n = Parallel.threadCount > 4 ? 4096 : 2048
    Benchmark("sgemm n=\(n) (OpenBLAS, \(Parallel.threadCount) threads)") { benchmark in
        let a = [Float](repeating: 0.5, count: n * n), b = [Float](repeating: 0.25, count: n * n)
        var c = [Float](repeating: 0, count: n * n)
        BLAS.setThreads(Parallel.threadCount)
        try measure(benchmark, flops: 2 * Double(n) * Double(n) * Double(n)) {
            BLAS.sgemm(m: n, n: n, k: n, a: a, lda: n, b: b, ldb: n, beta: 0, c: &c, ldc: n)
        }
        blackHole(c[0])
    }

    for T in [4096, 16384] {
        Benchmark("attention flash causal T=\(T) H=8 D=64") { benchmark in
            let q = try Tensor.randomNormal([1, T, 8, 64], seed: 1), k = try Tensor.randomNormal([1, T, 8, 64], seed: 2)
            let v = try Tensor.randomNormal([1, T, 8, 64], seed: 3)
            try measure(benchmark, flops: Attention.flops(B: 1, T: T, S: T, H: 8, D: 64, causal: true)) {
                blackHole(try Attention.forward(q: q, k: k, v: v, options: AttentionOptions(causal: true), form: .flash))
            }
        }
    }

    // Issue 16's allocation target: after the first step, a decode step allocates nothing on the heap
    // (mallocCountTotal per iteration, one iteration = one token through every layer).
    for batch in [1, 64] {
        Benchmark("decode gated_delta_rule 24 layers B=\(batch) H=16 K=V=128 (cpu)",
                  configuration: .init(metrics: [.wallClock, .mallocCountTotal], warmupIterations: 2,
                                       maxDuration: .seconds(10), maxIterations: 20)) { benchmark in
            let work = try RecurrentDecodeWorkload(.gatedDeltaRule, layers: 24, batch: batch, heads: 16, keyDim: 128, valueDim: 128)
            try work.step()
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations { try work.step() }
            benchmark.stopMeasurement()
        }
    }

    for (m, T, dim) in [(RecurrentMechanism.simpleGLA, 16384, 64), (.simpleGLA, 65536, 64), (.gatedDeltaRule, 16384, 64),
                        (.simpleGLA, 16384, 128), (.gla, 16384, 128), (.gatedDeltaRule, 16384, 128)] {
        Benchmark("\(m.rawValue) chunked T=\(T) H=8 K=V=\(dim)") { benchmark in
            var x = try RecurrenceInputs.random(m, B: 1, T: T, H: 8, K: dim, V: dim, seed: 1)
            x.validate = false  // time the kernel, not the input checks (as `linea bench`)
            try measure(benchmark, flops: Recurrence.chunkedFLOPs(m, B: 1, T: T, H: 8, K: dim, V: dim, chunkSize: 64)) {
                blackHole(try Recurrence.forward(m, x, form: .chunked(size: 64)))
            }
        }
    }
}
