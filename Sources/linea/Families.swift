import ArgumentParser
import Foundation
import Linea
import LineaCUDA

/// The family called `name` (`linea list`), or a usage error naming `argument` and listing the known names.
func family(_ name: String, argument: String = "name") throws -> any OpFamily {
    do {
        return try OpFamilies.named(name, argument: argument)
    } catch {
        throw validationErrorList(argument: argument, got: name, known: OpFamilies.all.map(\.name))
    }
}

/// `chunked` as `chunked:N` when `--chunk-size` is not the default; other forms unchanged.
func form(_ form: String, chunkSize: Int) -> String {
    form == "chunked" && chunkSize != RecurrenceForm.defaultChunkSize ? "chunked:\(chunkSize)" : form
}

/// A family's check of a form and options as a usage error (exit 2) naming the option.
func checkUsage(_ family: any OpFamily, form: String, options: OpOptions) throws {
    do {
        try family.check(form: form, options: options)
    } catch let error as LineaError {
        throw ValidationError("\(error)")
    }
}

/// `--backend` and `--dtype` as the commands share them: cpu or cuda (GPU 0, registered on first use), f32, bf16, f16.
struct BackendOptions: ParsableArguments {
    @Option(help: "Backend: cpu, or cuda (GPU 0).") var backend: String = "cpu"
    @Option(help: "Input precision: f32, bf16 or f16 (cuda; the cpu backend computes in f32).") var dtype: String?

    func validate() throws {
        guard ["cpu", "cuda"].contains(backend) else { throw validationErrorList(argument: "--backend", got: backend, known: ["cpu", "cuda"]) }
        if let dtype, !["f32", "bf16", "f16"].contains(dtype) {
            throw validationErrorList(argument: "--dtype", got: dtype, known: ["f32", "bf16", "f16"])
        }
        if backend == "cpu", let dtype, dtype != "f32" {
            throw ValidationError("--dtype \(dtype): only with --backend cuda (the cpu backend computes in f32)")
        }
    }

    /// The input dtype (`fallback` when not given).
    func inputDType(default fallback: DType = .float32) -> DType { dtype.flatMap { DType(name: $0) } ?? fallback }

    /// The device, its backend registered: throws CUDA's reason when the GPU cannot be used.
    func device() throws -> Device { try openDevice(backend) }
}

/// The device of `--backend` (cpu or cuda: GPU 0, its backend registered); throws CUDA's reason when the GPU cannot
/// be used.
func openDevice(_ backend: String) throws -> Device {
    guard backend == "cuda" else { return .cpu }
    if let reason = CUDABackend.unavailableReason { throw Failure(description: reason) }
    return try CUDADeviceBackend.register().device
}

/// A usage error for a name outside a known list.
func validationErrorList(argument: String, got: String, known: [String]) -> ValidationError {
    ValidationError("\(argument): expected one of \(known.joined(separator: ", ")), got '\(got)'")
}

/// Prints rows as an aligned text table with a header and a rule.
func printTable(header: [String], rows: [[String]]) {
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  ")
    }
    print(line(header))
    print(line(widths.map { String(repeating: "-", count: $0) }))
    for row in rows { print(line(row)) }
}
