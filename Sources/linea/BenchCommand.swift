import ArgumentParser
import Foundation
import Linea
import LineaCUDA

/// `linea bench`: time mechanisms and forms over sequence lengths; table, exponent fit, JSON and SVG.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmark mechanisms over sequence lengths (default: a sweep of about 1 minute on 2 cores).",
        discussion: """
            Prints the CPU's vendor and vector features and the BLAS library and core it runs, then per point: mechanism, form, \
            T, ms (fastest of at least 3 runs), tokens/s, GFLOP/s, the GFLOP/s of an OpenBLAS sgemm timed just before \
            the point and the point's share of it, peak extra resident memory; then the fitted exponent of time over T \
            per mechanism and form, and where each chunked recurrence overtakes flash attention. Recurrences run with input validation off \
            (the kernel alone). Progress goes to stderr.
            """)

    @Option(help: "Ops, comma-separated (default: every op with a form on the backend). See `linea list`.")
    var mechanism: String?

    @Option(help: "Form to time (default: the fast form of each op on the backend: attention flash, recurrences chunked).")
    var form: String?

    @Option(help: "Sequence lengths, comma-separated (default: per op and backend).")
    var lengths: String?

    @Option(help: "block_sparse: share of the blocks its random causal mask keeps, in (0, 1] (default 0.5); attention flash is timed beside it and the speed-up printed.")
    var density: Float?

    @Option(help: "block_sparse: rows = keys of its mask's blocks (default 64 on cpu, 128 on cuda: the key tile of the sm_90 kernel, which takes blocks of 128 multiples).")
    var blockSize: Int?

    @Option(help: "Heads H (default 8 on cpu, 16 on cuda).") var heads: Int?
    @Option(help: "Head dimension K = V (default 64 on cpu, 128 on cuda).") var dim: Int?
    @Option(help: "Batch size B (default 1 on cpu; on cuda tokens / T).") var batch: Int?
    @Option(help: "cuda: tokens B*T per point when --batch is not given.") var tokens: Int = 32768
    @Option(help: "Chunk size of chunked forms.") var chunkSize: Int = 64
    @Option(help: "Backend: cpu or cuda (CUDA-event timing).")
    var backend: String = "cpu"
    @Option(help: "cuda: input type of every op timed: bf16, f16 or f32 (f16, f32: the chunked recurrences run the fp32 CUDA-core kernel).")
    var dtype: String = "bf16"
    @Flag(help: "cpu: time only the reference OpenBLAS sgemm (n = 2048, or 4096 above 4 threads; the '% sgemm' column's base) and print its GFLOP/s.")
    var sgemm = false
    @Flag(help: "Time a model's recurrent decode instead: --layers layers of gated_delta_rule steps on resident fp32 states (H = 16, K = V = 128 unless given), at --batch (default: 1 and 64), on --backend; reports the state traffic against a device-to-device copy and the host copies in the loop.")
    var decode = false
    @Option(help: "--decode: number of layers.") var layers: Int = 24
    @Flag(help: "cuda: time Ops.matmul (cuBLAS, --dtype inputs and weights) at a 1B model's projection shapes instead (M x K times K x N: 4096x2048x6144, 1x2048x6144, 4096x6144x2048, 1x6144x2048).")
    var matmul = false
    @Option(help: "Time a checkpoint instead: prefill and decode tokens/s of the model in this folder (with --prompt-tokens, --new-tokens, --batch, --device).")
    var model: String?
    @Option(help: "--model: prompt lengths, comma-separated.") var promptTokens: String = "512,4096"
    @Option(help: "--model: new tokens decoded after each prompt.") var newTokens: Int = 128
    @Option(help: "--model: timed prefills per prompt length (the median is reported), after one untimed warm-up prefill.")
    var prefillReps: Int = 2
    @Option(help: "--model: device, cpu or cuda.") var device: String = "cpu"
    @Flag(help: "--model: after the figures, each phase's time per op, allocation and copy (the device waited on around each: slower; LINEA_PROFILE=1 does the same).")
    var profile = false
    @Option(help: "cpu: time each recurrence (--mechanism, default all) over 1 and N in-process context-parallel ranks and print the efficiency.")
    var contextParallel: Int?
    @Option(help: "Write the results as a JSON array to this file.") var json: String?
    @Option(help: "Draw time over T on log-log axes into this SVG file.") var svg: String?
    @OptionGroup var memory: MemoryOptions

    func validate() throws {
        if model != nil {
            let prompts = promptTokens.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !prompts.isEmpty, prompts.allSatisfy({ ($0 ?? 0) >= 1 }) else {
                throw ValidationError("--prompt-tokens: expected comma-separated positive integers, got '\(promptTokens)'")
            }
            guard newTokens >= 0 else { throw ValidationError("--new-tokens: expected >= 0, got \(newTokens)") }
            guard (1...100).contains(prefillReps) else { throw ValidationError("--prefill-reps: expected 1...100, got \(prefillReps)") }
            guard ["cpu", "cuda"].contains(device) else { throw validationErrorList(argument: "--device", got: device, known: ["cpu", "cuda"]) }
            if let batch, batch < 1 { throw ValidationError("--batch: expected >= 1, got \(batch)") }
            return
        }
        for (name, value) in [("--heads", heads), ("--dim", dim), ("--batch", batch), ("--tokens", tokens), ("--chunk-size", chunkSize),
                              ("--layers", layers)] {
            if let value, value < 1 { throw ValidationError("\(name): expected >= 1, got \(value)") }
        }
        guard ["cpu", "cuda"].contains(backend) else {
            throw validationErrorList(argument: "--backend", got: backend, known: ["cpu", "cuda"])
        }
        if let contextParallel, !(1...InProcessGroup.maxSize).contains(contextParallel) || backend != "cpu" {
            throw ValidationError("--context-parallel: expected N in 1...\(InProcessGroup.maxSize) on --backend cpu, got \(contextParallel) on \(backend)")
        }
        if let density, !(density > 0 && density <= 1) { throw ValidationError("--density: expected a share in (0, 1], got \(density)") }
        if let blockSize, !(1...65536).contains(blockSize) { throw ValidationError("--block-size: expected 1...65536, got \(blockSize)") }
        guard ["bf16", "f32", "f16"].contains(dtype) else {
            throw validationErrorList(argument: "--dtype", got: dtype, known: ["bf16", "f32", "f16"])
        }
        for f in try families(on: backend == "cuda" ? .cuda(0) : .cpu) {
            if let form { try checkUsage(f, form: linea.form(form, chunkSize: chunkSize), options: OpOptions()) }
        }
        // Every point's inputs (q, k, v, a gate up to [B, T, H, K]), output with slack, and state (initial and
        // final) must fit the memory limit, checked in Float64 so no product can overflow.
        let cuda = backend == "cuda"
        if matmul && !cuda { throw ValidationError("--matmul: expected --backend cuda (it times the GPU matrix multiply), got --backend \(backend)") }
        if decode {
            let (H, D) = (heads ?? 16, dim ?? 128)
            for B in batch.map({ [$0] }) ?? [1, 64] {
                do {
                    try MemoryBudget.check([.init("decode states", [layers + 1, B, H, D, D])])
                } catch let error as LineaError {
                    throw ValidationError("--decode --layers \(layers) --batch \(B) --heads \(H) --dim \(D): \(error)")
                }
            }
            return
        }
        let (H, D) = (heads ?? (cuda ? 16 : 8), dim ?? (cuda ? 128 : 64))
        for T in try parsedLengths() ?? [65536] {
            let B = batch ?? (cuda ? max(1, tokens / T) : 1)
            do {
                try MemoryBudget.check([.init("q, k, v, g, o", [6, B, T, H, D]), .init("states", [2, B, H, D, D])])
            } catch let error as LineaError {
                let b = batch == nil && cuda ? "--tokens \(tokens) (B = \(B))" : "--batch \(B)"
                throw ValidationError("--lengths \(T), \(b), --heads \(H), --dim \(D): \(error)")
            }
        }
    }

    func parsedLengths() throws -> [Int]? {
        guard let lengths else { return nil }
        let values = lengths.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) >= 1 }) else {
            throw ValidationError("--lengths: expected comma-separated positive integers, got '\(lengths)'")
        }
        return values.map { $0! }
    }

    /// The `--mechanism` families, else every family with a form on `device`.
    func families(on device: Device) throws -> [any OpFamily] {
        try mechanism.map { try $0.split(separator: ",").map { try family(String($0), argument: "--mechanism") } }
            ?? OpFamilies.all.filter { !$0.forms(on: device).isEmpty }
    }

    func run() throws {
        if let model {
            var options = try ModelOptions.parse(["--model", model, "--device", device])
            options.model = model
            let prompts = promptTokens.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            return try ModelBench(options: options, promptTokens: prompts, newTokens: newTokens, batch: batch ?? 1, prefillReps: prefillReps,
                                  profile: profile || Profile.enabled).run()
        }
        if decode { return try runDecode() }
        if let contextParallel { return try runContextParallel(contextParallel) }
        if matmul { return try runMatmul() }
        if sgemm {
            for line in Measure.hostDescription() { print(line) }
            let rate = Measure.SgemmReference().gflops(minSeconds: 1)
            print(String(format: "sgemm n = %d, %d threads: %.1f GFLOP/s", Measure.sgemmSize, Parallel.threadCount, rate))
            return
        }
        let cuda = backend == "cuda"
        let device = try openDevice(backend)
        let type: DType = cuda ? DType(name: dtype) ?? .bfloat16 : .float32
        let (heads, dim) = (self.heads ?? (cuda ? 16 : 8), self.dim ?? (cuda ? 128 : 64))
        var families = try families(on: device)
        if density != nil, families.contains(where: { $0.name == "block_sparse" }), !families.contains(where: { $0.name == "attention" }) {
            families.append(try family("attention", argument: "--mechanism"))  // the dense baseline of the speed-up
        }
        let userLengths = try parsedLengths()
        if cuda {
            printError("bench: \(try CUDABackend.shared.deviceName), \(dtype) inputs, H = \(heads), K = V = \(dim)")
        } else {
            for line in Measure.hostDescription() { print(line) }
            print("")
        }
        let reference = cuda ? nil : Measure.SgemmReference()
        var results: [BenchResult] = []
        for f in families {
            guard let chosen = self.form ?? f.forms(on: device).first else {
                printError("bench: \(f.name) has no form on \(device) to time; skipped")
                continue
            }
            let form = linea.form(chosen, chunkSize: chunkSize)
            for T in userLengths ?? f.benchLengths(on: device) {
                let B = batch ?? (cuda ? max(1, tokens / T) : 1)
                printError("bench: \(f.name) \(form) B = \(B) T = \(T) ...")
                do {
                    var size = BenchSize(B: B, T: T, H: heads, D: dim)
                    size.density = density
                    size.blockSize = blockSize ?? (cuda ? 128 : nil)
                    let c = try f.benchCase(size, form: form, dtype: type)
                    let inputs = try f.upload(c.makeInputs(1), form: form, dtype: type, on: device)
                    let work = { _ = try f.run(form, inputs, options: c.options) }
                    var result = BenchResult(mechanism: f.name, form: form + (cuda && type != .bfloat16 ? " \(dtype)" : ""), backend: backend,
                                             shape: BenchShape(B: B, T: T, H: heads, K: dim, V: dim), ms: 0, flops: c.flops, peakBytes: 0)
                    if let reference {
                        // An sgemm timed right before each point: a share against one sample taken at start misleads
                        // on a machine whose load changes during the sweep.
                        result.sgemmGFLOPs = reference.gflops(minSeconds: 0.25)
                        let timing = try Measure.run(work)
                        (result.ms, result.peakBytes) = (timing.ms, timing.peakExtra)
                    } else {
                        result.ms = try timeOnGPU(work)
                    }
                    results.append(result)
                } catch let error as LineaError {
                    printError("bench: skipped \(f.name) \(form) T = \(T): \(error)")
                }
            }
        }
        if cuda { reportGPU(results) } else { report(results) }
        for sparse in results where sparse.mechanism == "block_sparse" {
            guard let density, let dense = results.first(where: { $0.mechanism == "attention" && $0.shape.T == sparse.shape.T }) else { continue }
            print(String(format: "block_sparse %@ at density %g is %.2fx faster than attention %@ at T = %d (%.2f ms vs %.2f ms)",
                         sparse.form, density, dense.ms / sparse.ms, dense.form, sparse.shape.T, sparse.ms, dense.ms))
        }
        if let json { try writeJSON(results, to: json) }
        if let svg { try writeSVG(results, to: svg) }
    }

    private func report(_ results: [BenchResult]) {
        printTable(
            header: ["mechanism", "form", "B", "T", "H", "K", "ms", "tokens/s", "GFLOP/s", "sgemm", "% sgemm", "peak extra"],
            rows: results.map { r in
                [r.mechanism, r.form, "\(r.shape.B)", "\(r.shape.T)", "\(r.shape.H)", "\(r.shape.K)",
                 String(format: "%.2f", r.ms), String(format: "%.3g", r.tokensPerSecond), String(format: "%.1f", r.gflops),
                 String(format: "%.1f", r.sgemmGFLOPs ?? 0), String(format: "%.0f%%", 100 * r.gflops / (r.sgemmGFLOPs ?? .nan)),
                 formatBytes(r.peakBytes)]
            })
        print("")
        print("sgemm: OpenBLAS n = \(Measure.sgemmSize), \(Parallel.threadCount) threads, GFLOP/s timed just before each point")
        var seen = Set<String>()
        for r in results where seen.insert(r.mechanism + "/" + r.form).inserted {
            let points = results.filter { $0.mechanism == r.mechanism && $0.form == r.form }
            let large = points.filter { $0.shape.T >= 4096 }
            let fitted = (large.count >= 2 ? large : points).map { (T: $0.shape.T, ms: $0.ms) }
            if let e = Measure.exponent(fitted) {
                let span = "T = \(fitted.first!.T)...\(fitted.last!.T)"
                print(String(format: "%@ %@: time ~ T^%.2f over %@", r.mechanism, r.form, e, span))
            }
        }
        let flash = results.filter { $0.mechanism == "attention" && $0.form == "flash" }
        for name in Set(results.map(\.mechanism)).sorted() where name != "attention" && !flash.isEmpty {
            let mine = results.filter { $0.mechanism == name }
            let both = flash.compactMap { f in mine.first { $0.shape.T == f.shape.T && $0.form.hasPrefix("chunked") }.map { (f, $0) } }
            guard !both.isEmpty else { continue }
            if let first = both.first(where: { $0.1.ms < $0.0.ms }) {
                let note = first.0.shape.T == both.first!.0.shape.T ? "already at" : "from"
                print("\(name) \(first.1.form) is faster than attention flash \(note) T = \(first.0.shape.T)"
                      + String(format: " (%.2f ms vs %.2f ms)", first.1.ms, first.0.ms))
            } else {
                print("\(name): attention flash is faster at every measured T (up to \(both.last!.0.shape.T))")
            }
        }
        print("process peak resident memory: \(formatBytes(Measure.residentBytes().peak))")
    }
}

/// Problem size of one benchmark point.
struct BenchShape: Codable {
    let B: Int, T: Int, H: Int, K: Int, V: Int
}

/// One measured point.
struct BenchResult {
    let mechanism: String, form: String, backend: String
    let shape: BenchShape
    var ms: Double, flops: Double, peakBytes: Int
    /// The sgemm rate measured just before this point (CPU), nil on CUDA.
    var sgemmGFLOPs: Double? = nil
    var tokensPerSecond: Double { Double(shape.B * shape.T) / (ms / 1000) }
    var gflops: Double { flops / (ms / 1000) / 1e9 }
}
