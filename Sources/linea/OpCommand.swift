import ArgumentParser
import Foundation
import Linea

/// `linea op NAME`: runs one family's form on tensors from a safetensors file and writes its outputs to another.
struct OpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "op",
        abstract: "Run one op (see `linea list`) on tensors named as in fla (q, k, v, g, beta, initial_state, mask) from a safetensors file.",
        discussion: """
            attention, block_sparse and neighborhood write o and lse; the recurrences write o and final_state. neighborhood \
            reads q, k, v [B, *spatial, heads, D] with --kernel-size 5,3 [--stride 2,3] [--dilation 1,2] [--causal 1,0] \
            (NATTEN's na1d/na2d/na3d; the number of kernel sizes is the grid's rank). For the recurrences, \
            v, g, beta and initial_state may have a multiple HV of the H heads of q and k (grouped value heads, fla's \
            GVA: value head hv reads q/k head hv / (HV/H)); kda with --gate-in-kernel also reads A_log [HV] and dt_bias \
            [HV*K]. long_conv reads u [B, H, L], k [H, Lk] and optionally D [H] and writes o [B, H, L] \
            (o[b,h,t] = sum_{s<=t} k[h,s] u[b,h,t-s] + D[h] u[b,h,t]; --form fft or direct). The output is written atomically (a temporary file renamed \
            into place), so an existing file is replaced only when the run succeeds.
            """)

    @Argument(help: "The op: attention, block_sparse, neighborhood, linear_attn, retention, simple_gla, gla, delta_rule, gated_delta_rule, kda, selective_scan, long_conv, linear_attn_<feature map>, scan_order.")
    var name: String

    @Option(help: "Input safetensors file (every op but scan_order).") var inputs: String?
    @Option(help: "Output safetensors file.") var output: String
    @Option(help: "Form (see `linea list`; default: the fast one on the backend).") var form: String?
    @Option(help: "Chunk size of the chunked form.") var chunkSize: Int = 64
    @Option(help: "Query scale (default 1/sqrt(K)).") var scale: Float?
    @Flag(inversion: .prefixedNo, help: "Causal mask (attention).") var causal: Bool = true
    @Option(help: "Sliding window W (attention, causal): query i sees keys j with i-W < j <= i.") var window: Int?
    @Flag(help: "linear_attn: divide by the normalizer (q·scale)·Σk as fla's normalize=True.") var normalize = false
    @Flag(help: "delta rules: L2-normalize q and k inside the kernel.") var qkL2Norm = false
    @Option(help: "neighborhood: kernel size per spatial axis, comma-separated; their count is the grid's rank (e.g. 5,3).")
    var kernelSize: String?
    @Option(help: "neighborhood: stride per axis (1...kernel), or one for every axis.") var stride: String?
    @Option(help: "neighborhood: dilation per axis, or one for every axis.") var dilation: String?
    @Option(name: .customLong("causal-axes"), help: "neighborhood: causal per axis, 0 or 1 (e.g. 1,0; also written --causal 1,0).")
    var causalAxes: String?
    @Flag(help: "kda: g is the raw gate, activated inside as -exp(A_log)·softplus(g + dt_bias) (fla's use_gate_in_kernel; inputs A_log [HV], dt_bias [HV*K]).")
    var gateInKernel = false
    @Option(parsing: .unconditional, help: "kda with --gate-in-kernel: the gate lower_bound·sigmoid(exp(A_log)·(g + dt_bias)) instead (fla's lower_bound, < 0; A_log optional).")
    var lowerBound: Float?
    @Flag(help: "kda: beta is given as logits, activated inside by a sigmoid (fla's use_beta_sigmoid_in_kernel).") var betaSigmoid = false
    @Flag(help: "kda with --beta-sigmoid: beta = 2·sigmoid(beta) (fla's allow_neg_eigval).") var allowNegEigval = false
    @Option(parsing: .singleValue, help: "An op's own integer setting, NAME=VALUE (block_sparse: block_rows, block_keys; default 64).")
    var set: [String] = []
    @Flag(help: "Write NaN or infinite outputs instead of failing with exit 1 (-inf in lse, a query that sees no key, is always fine).")
    var allowNonfinite = false
    @Option(help: "Recurrences on the cpu: run over N in-process context-parallel ranks (contiguous slices of T, one thread each; same outputs).")
    var contextParallel: Int?
    @Option(help: "scan_order: raster, bidirectional, cross, hilbert, zigzag or rotary-major.") var order: String?
    @Option(help: "scan_order: the grid's sizes, outermost first: H,W or T,H,W (e.g. 16,16 or 8,16,16).") var grid: String?
    @OptionGroup var device: BackendOptions
    @OptionGroup var memory: MemoryOptions
    @OptionGroup var selection: SelectorOptions

    /// The options the flags describe.
    func options() throws -> OpOptions {
        var o = OpOptions()
        (o.scale, o.causal, o.window, o.normalize, o.useQKL2Norm) = (scale, causal, window, normalize, qkL2Norm)
        o.allowNonFiniteOutputs = allowNonfinite
        o.activations = InKernelActivations(gateInKernel: gateInKernel, lowerBound: lowerBound, betaSigmoid: betaSigmoid, allowNegEigval: allowNegEigval)
        for item in set {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let value = Int(parts[1]) else { throw ValidationError("--set: expected NAME=INTEGER, got '\(item)'") }
            o.settings[parts[0]] = value
        }
        if let size = selection.blockSize { (o.settings["block_rows"], o.settings["block_keys"]) = (size, size) }
        if let kernelSize {
            let lists = try NeighborhoodOptions.settings(kernelSize: kernelSize, stride: stride, dilation: dilation, causal: causalAxes)
            o.settings.merge(lists) { _, list in list }
        } else if stride ?? dilation ?? causalAxes != nil {
            throw ValidationError("--stride, --dilation, --causal AXES: expected with --kernel-size (neighborhood)")
        }
        return o
    }

    /// `linea op ... --causal 1,0` (a per-axis list: neighborhood) as `--causal-axes 1,0`, so that `--causal` alone stays
    /// attention's flag; other arguments unchanged. O(arguments).
    static func causalAxesArguments(_ arguments: [String]) -> [String] {
        guard arguments.first == "op" else { return arguments }
        let word = /(0|1|true|false)(,(0|1|true|false))*/
        var result = arguments
        for i in result.indices.dropLast() where result[i] == "--causal" && result[i + 1].wholeMatch(of: word) != nil {
            result[i] = "--causal-axes"
        }
        return result.map { $0.hasPrefix("--causal=") ? "--causal-axes=" + $0.dropFirst("--causal=".count) : $0 }
    }

    /// The form to run: `--form`, else the family's default on the backend; `chunked` takes `--chunk-size`.
    func resolvedForm(_ f: any OpFamily) -> String {
        linea.form(form ?? f.forms(on: device.backend == "cuda" ? .cuda(0) : .cpu).first ?? "reference", chunkSize: chunkSize)
    }

    func validate() throws {
        if name == ScanOrderOp.name { return try validateScanOrder() }
        if order ?? grid != nil { throw ValidationError("--order, --grid: expected with scan_order, got \(name)") }
        guard inputs != nil else { throw ValidationError("--inputs: expected a safetensors file for \(name), got none") }
        guard chunkSize >= 1 else { throw ValidationError("--chunk-size: expected >= 1, got \(chunkSize)") }
        if let scale, !(scale.isFinite && scale > 0) { throw ValidationError("--scale: expected a finite number > 0, got \(scale)") }
        let f = try family(name)
        if name != "block_sparse" && (selection.selector != nil || selection.blockSize != nil) {
            throw ValidationError("--selector, --block-size: block_sparse only, got \(name)")
        }
        if selection.selector != nil, let shape = set.first(where: { $0.hasPrefix("block_rows=") || $0.hasPrefix("block_keys=") }) {
            // A selector's mask has square blocks of --block-size (default 64): a --set block shape would be ignored.
            throw ValidationError("--set \(shape): with --selector the blocks are square, use --block-size N")
        }
        if try name != RecurrentMechanism.kda.rawValue && !options().activations.isEmpty {
            throw ValidationError("--gate-in-kernel, --lower-bound, --beta-sigmoid, --allow-neg-eigval: kda only, got \(name)")
        }
        try checkUsage(f, form: resolvedForm(f), options: options())
        if let contextParallel {
            guard (1...InProcessGroup.maxSize).contains(contextParallel) else {
                throw ValidationError("--context-parallel: expected 1...\(InProcessGroup.maxSize), got \(contextParallel)")
            }
            guard f is RecurrenceFamily, device.backend == "cpu" else {
                throw ValidationError("--context-parallel: expected a recurrence on --backend cpu, got \(name) on \(device.backend)")
            }
        }
    }

    func run() throws {
        if name == ScanOrderOp.name { return try runScanOrder() }
        let f = try family(name)
        let target = try device.device()
        let (form, dtype) = (resolvedForm(f), device.inputDType())
        var options = try options()
        let file = try SafeTensorsFile(path: inputs ?? "")
        var host: [String: Tensor] = [:]
        var uploaded: [String: DeviceTensor] = [:]
        let selecting = selection.selector != nil
        for input in f.inputs where (!input.optional || file.names.contains(input.name)) && !(selecting && input.name == "mask") {
            let type = f.inputDType(input.name, form: form, compute: dtype)
            if type.isFloatingPoint {
                host[input.name] = try file.tensor(input.name)
                uploaded[input.name] = try DeviceTensor(host[input.name]!, dtype: type, on: target)
            } else {  // a mask: integers as stored, or floats read as 0 / 1
                let stored = try file.deviceTensor(input.name)
                uploaded[input.name] = stored.dtype.isFloatingPoint
                    ? try DeviceTensor(integers: stored.host().scalars.map { $0 != 0 ? 1 : 0 }, shape: stored.shape, dtype: type, on: target)
                    : try stored.to(target)
            }
        }
        var results: [String: Tensor] = [:]
        // Only block_sparse takes a selector (checked above); other ops may have no q at all (long_conv).
        // On a GPU the selector scores there (BlockSelector's device forms); the time includes the scores' download.
        var started = Date()
        var selected: BlockSelection?
        if selecting, let q = host["q"], let k = host["k"] {
            for _ in 0..<selection.selectorRuns {
                started = Date()
                selected = try selection.select(q: q, k: k, device: uploaded["q"].flatMap { dq in uploaded["k"].map { (dq, $0) } }, options: options)
            }
        }
        if let chosen = selected, let q = host["q"], let k = host["k"] {
            let selectSeconds = Date().timeIntervalSince(started)
            // Exact keys (vertical-slash) run as a mask of 1-key blocks on either backend, never as the block superset.
            let mask = try chosen.exactMask()
            uploaded["mask"] = try mask.deviceTensor(on: target)
            (options.settings["block_rows"], options.settings["block_keys"]) = (mask.blockRows, mask.blockKeys)
            results["mask"] = try Tensor(shape: mask.shape, scalars: mask.values.map(Float.init))
            results["density"] = try Tensor(shape: [1], scalars: [Float(chosen.density)])
            let error = !selection.selectorError ? "not computed (--no-selector-error)" : String(format: "%.3g", try chosen.outputError(
                q: q, k: k, v: host["v"]!, options: AttentionOptions(scale: options.scale, causal: options.causal)))
            let heads = chosen.patterns.isEmpty ? "" : "; heads: " + chosen.patterns.map(\.description).joined(separator: ", ")
            let share = chosen.pairs.map { "exact keys: \($0.attended) of \($0.visible) visible pairs, mask of \(mask.blockRows)x1 blocks written" }
                ?? "blocks"
            printError(String(format: "op: %@ kept %d of %d visible blocks (density %.4f, %@); rel-RMS against dense attention %@; selected on %@ in %.1f ms",
                              selection.selector!, chosen.kept, chosen.visible, chosen.density, share, error, "\(target)", selectSeconds * 1000) + heads)
        }
        // The CPU forms check their inputs' values and their outputs themselves; the GPU kernels check shapes only.
        if target != .cpu { try f.checkValues(host, form: form, options: options) }
        if let ranks = contextParallel, let recurrence = f as? RecurrenceFamily {
            results = try recurrence.runContextParallel(form, host, options: options, ranks: ranks)
        } else {
            for (name, tensor) in try f.run(form, uploaded, options: options) { results[name] = try tensor.host() }
        }
        if !allowNonfinite && target != .cpu {
            for (name, tensor) in results.sorted(by: { $0.key < $1.key }) {
                try tensor.checkFiniteOutput(name, allowNegativeInfinity: name == "lse")
            }
        }
        try SafeTensors.write(results, to: output, metadata: [
            "producer": "linea op \(name)", "form": form, "backend": device.backend, "dtype": dtype.shortName])
        printError("op: wrote \(results.keys.sorted().joined(separator: ", ")) to \(output)")
    }
}
