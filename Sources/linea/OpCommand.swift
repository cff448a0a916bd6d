import ArgumentParser
import Linea

/// `linea op`: placeholder until safetensors lands.
struct OpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "op", abstract: "Run one operation on tensors from a safetensors file.")
}
