import ArgumentParser
import Foundation
import Linea
import LineaCUDA

/// `linea op NAME`: runs one operation on tensors from a safetensors file and writes the results to another.
struct OpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "op",
        abstract: "Run one operation on tensors named as in fla (q, k, v, g, beta, initial_state) from a safetensors file.",
        discussion: """
            attention writes o and lse; the recurrences write o and final_state. For the recurrences, v, g, beta and \
            initial_state may have a multiple HV of the H heads of q and k (grouped value heads, fla's GVA: value head \
            hv reads q/k head hv / (HV/H)). The output is written atomically \
            (a temporary file renamed into place), so an existing file is replaced only when the run succeeds.
            """)

    @Argument(help: "Operation: attention, linear_attn, retention, simple_gla, gla, delta_rule, gated_delta_rule.")
    var name: String

    @Option(help: "Input safetensors file.") var inputs: String
    @Option(help: "Output safetensors file.") var output: String
    @Option(help: "Form (see `linea list`; default: the fast one).") var form: String?
    @Option(help: "Chunk size of the chunked form.") var chunkSize: Int = 64
    @Option(help: "Query scale (default 1/sqrt(K)).") var scale: Float?
    @Flag(inversion: .prefixedNo, help: "Causal mask (attention).") var causal: Bool = true
    @Option(help: "Sliding window W (attention, causal): query i sees keys j with i-W < j <= i.") var window: Int?
    @Flag(help: "linear_attn: divide by the normalizer (q·scale)·Σk as fla's normalize=True.") var normalize = false
    @Flag(help: "delta rules: L2-normalize q and k inside the kernel.") var qkL2Norm = false
    @Option(help: "Backend: cpu, or cuda (attention: flash, or split_kv for decode; recurrences: chunked, bf16).") var backend: String = "cpu"
    @Option(help: "Input precision on the cuda backend: f32, bf16 or f16 (outputs are fp32).") var dtype: String = "f32"
    @Flag(help: "Write NaN or infinite outputs instead of failing with exit 1 (-inf in lse, a query that sees no key, is always fine).")
    var allowNonfinite = false
    @OptionGroup var memory: MemoryOptions

    func validate() throws {
        guard chunkSize >= 1 else { throw ValidationError("--chunk-size: expected >= 1, got \(chunkSize)") }
        if let window, window < 1 { throw ValidationError("--window: expected >= 1, got \(window)") }
        if let scale, !(scale.isFinite && scale > 0) { throw ValidationError("--scale: expected a finite number > 0, got \(scale)") }
        let mechanism = try Mechanism.named(name)
        if normalize && name != RecurrentMechanism.linearAttention.rawValue {
            throw ValidationError("--normalize: only for linear_attn (its normalizer), got it with \(name)")
        }
        switch mechanism.kind {
        case .attention:
            if let window, !causal { throw ValidationError("--window \(window): a sliding window is causal, got --no-causal") }
            switch AttentionForm(name: form ?? "flash") {
            case nil: throw validationErrorList(argument: "--form", got: form ?? "", known: mechanism.forms + ["split_kv:N"])
            case .splitKV(let n?)? where n < 1: throw ValidationError("--form \(form ?? ""): expected split_kv:N with N >= 1 partitions, got \(n)")
            default: break
            }
        case .recurrence: _ = try Mechanism.recurrenceForm(form, chunkSize: chunkSize)
        }
        guard ["cpu", "cuda"].contains(backend) else { throw validationErrorList(argument: "--backend", got: backend, known: ["cpu", "cuda"]) }
        guard ["f32", "bf16", "f16"].contains(dtype) else {
            throw validationErrorList(argument: "--dtype", got: dtype, known: ["f32", "bf16", "f16"])
        }
        if backend == "cpu" && dtype != "f32" { throw ValidationError("--dtype \(dtype): only with --backend cuda (the cpu backend computes in f32)") }
    }

    func run() throws {
        let mechanism = try Mechanism.named(name)
        if backend == "cuda", let reason = CUDABackend.unavailableReason { throw Failure(description: reason) }
        let file = try SafeTensorsFile(path: inputs)
        let results: [String: Tensor]
        switch mechanism.kind {
        case .attention where backend == "cuda":
            results = try runAttentionOnCUDA(file: file)
        case .attention:
            guard let f = AttentionForm(name: form ?? "flash") else {
                throw validationErrorList(argument: "--form", got: form ?? "", known: mechanism.forms)
            }
            let out = try Attention.forward(
                q: try file.tensor("q"), k: try file.tensor("k"), v: try file.tensor("v"),
                options: AttentionOptions(scale: scale, causal: causal, window: window, allowNonFiniteOutputs: allowNonfinite), form: f)
            results = ["o": out.o, "lse": out.lse]
        case .recurrence(let r):
            results = try runRecurrence(r, file: file)
        }
        if !allowNonfinite && backend == "cuda" {
            // The cpu forms check their own outputs (Attention.forward, Recurrence.forward); the cuda kernels do not.
            for (name, tensor) in results.sorted(by: { $0.key < $1.key }) {
                try tensor.checkFiniteOutput(name, allowNegativeInfinity: name == "lse")
            }
        }
        try SafeTensors.write(results, to: output, metadata: [
            "producer": "linea op \(name)", "form": form ?? "default", "backend": backend,
            "dtype": backend == "cuda" ? dtype : "f32"])
        printError("op: wrote \(results.keys.sorted().joined(separator: ", ")) to \(output)")
    }

    /// A recurrence on the CPU in any form, or on cuda through the chunked kernels (`CUDAChunked.forward`).
    private func runRecurrence(_ r: RecurrentMechanism, file: SafeTensorsFile) throws -> [String: Tensor] {
        let f = try Mechanism.recurrenceForm(form, chunkSize: chunkSize)
        var cudaChunk: Int?
        if backend == "cuda" {
            guard case .chunked(let size) = f else {
                throw ValidationError("--form \(form ?? ""): the cuda backend runs recurrences in the chunked form only")
            }
            cudaChunk = size
        }
        let needed = Recurrence.requiredInputs(r)
        var inputs = RecurrenceInputs(
            q: try file.tensor("q"), k: try file.tensor("k"), v: try file.tensor("v"),
            g: needed.contains("g") ? try file.tensor("g") : nil,
            beta: needed.contains("beta") ? try file.tensor("beta") : nil,
            initialState: file.names.contains("initial_state") ? try file.tensor("initial_state") : nil,
            scale: scale)
        inputs.normalize = normalize
        inputs.useQKL2Norm = qkL2Norm
        inputs.allowNonFiniteOutputs = allowNonfinite
        let out = try cudaChunk.map {
            r == .gla ? try CUDAChunkedGLA.forward(inputs, chunkSize: $0, dtype: cudaDType)
                : try CUDAChunked.forward(r, inputs, chunkSize: $0, dtype: cudaDType)
        }
            ?? Recurrence.forward(r, inputs, form: f)
        return ["o": out.o, "final_state": out.finalState]
    }

    /// The `--dtype` inputs are uploaded as on the cuda backend.
    private var cudaDType: DType { dtype == "bf16" ? .bfloat16 : dtype == "f16" ? .float16 : .float32 }

    /// Attention on the GPU: `flash` (default) through `CUDAAttention.forward`, `split_kv[:N]` through
    /// `CUDASplitKV.forward` (decode: T <= 64, no window). Outputs fp32.
    private func runAttentionOnCUDA(file: SafeTensorsFile) throws -> [String: Tensor] {
        let type = cudaDType
        let (q, k, v) = (try file.tensor("q"), try file.tensor("k"), try file.tensor("v"))
        try Attention.checkInputs(q: q, k: k, v: v, options: AttentionOptions(scale: scale, causal: causal, window: window), form: .flash)
        switch AttentionForm(name: form ?? "flash") {
        case .flash?:
            let out = try CUDAAttention.forward(q: q, k: k, v: v, scale: scale, causal: causal, window: window, dtype: type)
            return ["o": out.o, "lse": out.lse]
        case .splitKV(let partitions)?:
            if let window { throw ValidationError("--window \(window): split_kv on cuda takes no window") }
            let out = try CUDASplitKV.forward(q: q, k: k, v: v, scale: scale, causal: causal, partitions: partitions, dtype: type)
            return ["o": out.o, "lse": out.lse]
        default:
            throw validationErrorList(argument: "--form", got: form ?? "", known: ["flash", "split_kv", "split_kv:N"])
        }
    }
}
