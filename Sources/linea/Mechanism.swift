import Linea

/// A mechanism the CLI can verify, benchmark and run, with its forms and the tensors it reads.
struct Mechanism {
    let name: String
    let forms: [String]
    let inputs: [String]
    let summary: String

    static let attention = Mechanism(
        name: "attention", forms: AttentionForm.all.map(\.description), inputs: ["q", "k", "v"],
        summary: "exact softmax attention (causal, window, GQA); flash is O(T) memory")

    static let all: [Mechanism] = [attention]

    /// Looks a mechanism up by name; a usage error lists the known names.
    static func named(_ name: String) throws -> Mechanism {
        guard let m = all.first(where: { $0.name == name }) else {
            throw ValidationErrorList(argument: "mechanism", got: name, known: all.map(\.name))
        }
        return m
    }
}

import ArgumentParser

/// A usage error for a name outside a known list.
func ValidationErrorList(argument: String, got: String, known: [String]) -> ValidationError {
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
import Foundation
