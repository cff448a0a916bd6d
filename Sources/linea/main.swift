import ArgumentParser
import Linea

struct LineaCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "linea",
        abstract: "Attention and sequence mixing in linear time and memory.",
        subcommands: [])
}

LineaCommand.main()
