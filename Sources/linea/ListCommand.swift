import ArgumentParser
import Linea
import LineaCUDA

/// `linea list`: the op families, their forms on each device and inputs, the backends available here.
struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the op families, their forms and the backends available here.")

    func run() throws {
        let gpu = Device.cuda(0)
        let rows = OpFamilies.all.map { f in
            [f.name, (f.forms(on: .cpu) + ["reference"]).joined(separator: ", "), f.forms(on: gpu).joined(separator: ", "),
             f.inputs.map { $0.name + ($0.optional ? "?" : "") }.joined(separator: ", "), f.summary]
        }
        printTable(header: ["op", "cpu forms", "cuda forms", "inputs", "what"], rows: rows)
        print("scan_order: `linea op scan_order --order \(ScanOrderKind.allCases.map(\.rawValue).joined(separator: "|")) --grid H,W or T,H,W --output FILE`")
        print("")
        print("backends: cpu (\(Parallel.threadCount) threads, OpenBLAS GEMM)")
        for line in Measure.hostDescription() { print("          " + line) }
        if let reason = CUDABackend.unavailableReason {
            print("          cuda: unavailable here (\(reason))")
        } else {
            print("          cuda: available (\((try? CUDABackend.shared.deviceName) ?? "GPU 0"))")
        }
    }
}
