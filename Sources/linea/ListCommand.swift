import ArgumentParser
import Linea
import LineaCUDA

/// `linea list`: mechanisms, their forms, available backends.
struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List mechanisms, their forms and the backends available here.")

    func run() throws {
        let rows = Mechanism.all.map { [$0.name, $0.forms.joined(separator: ", "), $0.inputs.joined(separator: ", "), $0.summary] }
        printTable(header: ["mechanism", "forms", "inputs", "what"], rows: rows)
        print("")
        print("backends: cpu (\(Parallel.threadCount) threads, OpenBLAS GEMM)")
        for line in Measure.hostDescription() { print("          " + line) }
        // The CUDA kernels are reachable through `op`, `verify` and `bench --backend cuda`, and the LineaCUDA library.
        let coverage = "attention (flash, split_kv, block-sparse in the library), chunked "
            + CUDAChunked.covered.map(\.rawValue).joined(separator: ", ") + ", decode steps of all recurrences"
        if let reason = CUDABackend.unavailableReason {
            print("          cuda: unavailable here (\(reason)); it would cover \(coverage)")
        } else {
            print("          cuda: available: \(coverage)")
        }
    }
}
