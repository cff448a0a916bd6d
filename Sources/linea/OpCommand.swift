import ArgumentParser
import Foundation
import Linea

/// `linea op NAME`: runs one operation on tensors from a safetensors file and writes the results to another.
struct OpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "op",
        abstract: "Run one operation on tensors named as in fla (q, k, v, g, beta, initial_state) from a safetensors file.",
        discussion: """
            attention writes o and lse; the recurrences write o and final_state. The output is written atomically \
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

    func validate() throws {
        guard chunkSize >= 1 else { throw ValidationError("--chunk-size: expected >= 1, got \(chunkSize)") }
        if let window, window < 1 { throw ValidationError("--window: expected >= 1, got \(window)") }
        _ = try Mechanism.named(name)
    }

    func run() throws {
        let mechanism = try Mechanism.named(name)
        let file = try SafeTensorsFile(path: inputs)
        let results: [String: Tensor]
        switch mechanism.kind {
        case .attention:
            guard let f = AttentionForm(name: form ?? "flash") else {
                throw validationErrorList(argument: "--form", got: form ?? "", known: mechanism.forms)
            }
            let out = try Attention.forward(
                q: try file.tensor("q"), k: try file.tensor("k"), v: try file.tensor("v"),
                options: AttentionOptions(scale: scale, causal: causal, window: window), form: f)
            results = ["o": out.o, "lse": out.lse]
        case .recurrence(let r):
            results = try runRecurrence(r, file: file)
        }
        try SafeTensors.write(results, to: output, metadata: ["producer": "linea op \(name)", "form": form ?? "default"])
        printError("op: wrote \(results.keys.sorted().joined(separator: ", ")) to \(output)")
    }

    private func runRecurrence(_ r: RecurrentMechanism, file: SafeTensorsFile) throws -> [String: Tensor] {
        let f = try Mechanism.recurrenceForm(form, chunkSize: chunkSize)
        let needed = Recurrence.requiredInputs(r)
        var inputs = RecurrenceInputs(
            q: try file.tensor("q"), k: try file.tensor("k"), v: try file.tensor("v"),
            g: needed.contains("g") ? try file.tensor("g") : nil,
            beta: needed.contains("beta") ? try file.tensor("beta") : nil,
            initialState: file.names.contains("initial_state") ? try file.tensor("initial_state") : nil,
            scale: scale)
        inputs.normalize = normalize
        inputs.useQKL2Norm = qkL2Norm
        let out = try Recurrence.forward(r, inputs, form: f)
        return ["o": out.o, "final_state": out.finalState]
    }
}
