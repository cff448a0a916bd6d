import ArgumentParser
import Linea

/// `linea list`: mechanisms, their forms, available backends.
struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List mechanisms, their forms and the backends available here.")

    func run() throws {
        let rows = Mechanism.all.map { [$0.name, $0.forms.joined(separator: ", "), $0.inputs.joined(separator: ", "), $0.summary] }
        printTable(header: ["mechanism", "forms", "inputs", "what"], rows: rows)
        print("")
        print("backends: cpu (\(Parallel.threadCount) threads, OpenBLAS GEMM)")
        print("          cuda: not built in this version")
    }
}
