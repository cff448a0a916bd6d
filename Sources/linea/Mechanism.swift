import ArgumentParser
import Foundation
import Linea

/// A mechanism the CLI can verify, benchmark and run, with its forms and the tensors it reads.
struct Mechanism {
    /// What computes it.
    enum Kind {
        case attention
        case recurrence(RecurrentMechanism)
    }

    let name: String
    let kind: Kind
    let forms: [String]
    let inputs: [String]
    let summary: String

    static let attention = Mechanism(
        name: "attention", kind: .attention, forms: AttentionForm.all.map(\.description), inputs: ["q", "k", "v"],
        summary: "exact softmax attention (causal, window, GQA); flash is O(T) memory")

    static let all: [Mechanism] = [attention] + RecurrentMechanism.allCases.map { r in
        Mechanism(name: r.rawValue, kind: .recurrence(r), forms: ["reference", "recurrent", "chunked"],
                  inputs: Recurrence.requiredInputs(r) + ["initial_state?"], summary: recurrenceSummaries[r]!)
    }

    private static let recurrenceSummaries: [RecurrentMechanism: String] = [
        .linearAttention: "linear attention: S += k vᵀ (optional normalizer)",
        .retention: "RetNet: fixed decay 1 - 2^(-5-h) per (value) head",
        .simpleGLA: "scalar gate per head (Mamba-2 SSD core)",
        .gla: "vector gate over K (GLA, HGRN2)",
        .deltaRule: "DeltaNet: delta-rule write with strength beta",
        .gatedDeltaRule: "Gated DeltaNet: scalar gate + delta rule",
    ]

    /// Looks a mechanism up by name; a usage error lists the known names.
    static func named(_ name: String, argument: String = "mechanism") throws -> Mechanism {
        guard let m = all.first(where: { $0.name == name }) else {
            throw validationErrorList(argument: argument, got: name, known: all.map(\.name))
        }
        return m
    }

    /// Parses a recurrence form name: `reference`, `recurrent`, `chunked` (with `chunkSize`) or `chunked:N`.
    static func recurrenceForm(_ name: String?, chunkSize: Int) throws -> RecurrenceForm {
        switch name ?? "chunked" {
        case "reference": return .reference
        case "recurrent": return .recurrent
        case "chunked", "auto": return .chunked(size: chunkSize)
        case let other:
            if other.hasPrefix("chunked:"), let n = Int(other.dropFirst(8)), n >= 1 { return .chunked(size: n) }
            throw validationErrorList(argument: "--form", got: other, known: ["reference", "recurrent", "chunked", "chunked:N"])
        }
    }
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
