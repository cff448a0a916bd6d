import ArgumentParser
import Foundation
import Linea

/// `linea verify`: every form of every family on its verification cases against the Float64 reference.
struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check every form against the Float64 reference on each family's grid of random inputs; exit 1 on any failure.",
        discussion: """
            The cases (awkward sizes, value ranges, options) and the forms each device runs come from the families' \
            tables (`OpFamily.cases`), as in the tests. On cuda, inputs are rounded to --dtype before the reference runs, \
            so only the kernel's own error counts.
            """)

    @Option(help: "Only this family (see `linea list`).")
    var mechanism: String?

    @Option(help: "Pass when relative RMS error <= this (every output); default per case: 1e-5 for f32 inputs, 2e-3 for bf16, f16.")
    var tolerance: Double?

    @Option(help: "Seed of the random inputs.")
    var seed: UInt64 = 1

    @Flag(help: "Instead: each feature map's error against exact softmax attention (Performer at 16-1024 features); exit 1 only if a map's fast form disagrees with its own reference.")
    var approx = false

    @OptionGroup var device: BackendOptions
    @OptionGroup var memory: MemoryOptions

    func validate() throws {
        if let tolerance, !(tolerance.isFinite && tolerance >= 0) {
            throw ValidationError("--tolerance: expected a finite number >= 0, got \(tolerance)")
        }
        if let mechanism { _ = try family(mechanism, argument: "--mechanism") }
    }

    func run() throws {
        if approx { return try runApproximations() }
        let selected = try mechanism.map { [try family($0, argument: "--mechanism")] } ?? OpFamilies.all
        let target = try device.device()
        let dtype = device.inputDType()
        var rows: [[String]] = []
        var failures = 0
        for f in selected {
            printError("verify: \(f.name) ...")
            if f.forms(on: target).isEmpty { printError("verify: \(f.name) has no form on \(target) beside its reference; nothing to compare") }
            for (index, c) in f.cases.enumerated() {
                for form in f.forms(of: c, on: target) {
                    var check = try f.check(c, form: form, on: target, dtype: dtype, seed: seed &+ UInt64(index) &* 10)
                    if let tolerance { check.tolerance = tolerance }
                    failures += check.passed ? 0 : 1
                    let cells = check.errors.map { "\($0.name) " + String(format: "%.2e / %.2e", $0.stats.relativeRMS, $0.stats.maxAbs) }
                    rows.append([f.name, form, c.label + (dtype == .float32 ? "" : " \(dtype.shortName)"), cells.joined(separator: "  "),
                                 check.passed ? "ok" : "FAIL"])
                }
            }
        }
        printTable(header: ["op", "form", "case", "rel RMS / max abs (each output)", "result"], rows: rows)
        let limit = tolerance.map { "relative RMS <= \($0)" } ?? "relative RMS <= 1e-5 (f32 inputs), 2e-3 (bf16, f16)"
        print("\n\(rows.count - failures) passed, \(failures) failed on \(target) (tolerance: \(limit))")
        if failures > 0 { throw ExitCode(1) }
    }
}
