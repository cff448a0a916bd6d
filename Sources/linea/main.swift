import ArgumentParser
import Foundation
import Linea
import LineaLM

/// The `linea` command-line tool.
struct LineaCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "linea",
        abstract: "Attention and sequence mixing in linear time and memory: verify, benchmark, run.",
        discussion: "Exit codes: 0 success, 1 failure (a check failed, bad data in a file), 2 usage error.",
        subcommands: [ListCommand.self, VerifyCommand.self, BenchCommand.self, OpCommand.self, GenerateCommand.self, LogitsCommand.self,
                      TokenizeCommand.self, ModelCommand.self, StreamCommand.self])
}

/// A failure that is not a usage error: printed without help text, exit code 1.
struct Failure: Error, CustomStringConvertible {
    let description: String
}

/// Writes a line to standard error.
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

// Parse and run by hand so that usage errors exit 2 and data/compute errors exit 1, never with a stack trace.
do {
    var command = try LineaCommand.parseAsRoot(OpCommand.causalAxesArguments(Array(CommandLine.arguments.dropFirst())))
    try command.run()
} catch let error as LineaError {
    let hint = if case .nonFinite = error { " (linea op --allow-nonfinite writes them anyway)" } else { "" }
    printError("error: \(error)\(hint)")
    exit(1)
} catch let error as TokenizerError {
    printError("error: \(error)")
    exit(1)
} catch let error as Failure {
    printError("error: \(error)")
    exit(1)
} catch {
    let code = LineaCommand.exitCode(for: error)
    if code == .success {
        print(LineaCommand.fullMessage(for: error))
        exit(0)
    }
    printError(LineaCommand.fullMessage(for: error))
    exit(error is ExitCode ? code.rawValue : 2)
}
