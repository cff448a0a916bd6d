import ArgumentParser
import Foundation
import Linea

/// `linea verify`: every form against the reference on random inputs with awkward sizes.
struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check every form against the Float64 reference on a grid of random inputs; exit 1 on any failure.")

    @Option(help: "Only this mechanism (see `linea list`).")
    var mechanism: String?

    @Option(help: "Pass when relative RMS error <= this (outputs and lse/state); default 1e-5, 2e-3 for bf16.")
    var tolerance: Double?

    @Option(help: "Seed of the random inputs.")
    var seed: UInt64 = 1

    @Option(help: "Backend: cpu, or cuda (attention: flash, split-KV, block-sparse; the decode step of every recurrence).")
    var backend: String = "cpu"

    @Option(help: "Input precision on the cuda backend: f32, bf16 or f16 (default tolerance then 2e-3).")
    var dtype: String = "f32"

    @OptionGroup var memory: MemoryOptions

    func validate() throws {
        if let tolerance, !(tolerance.isFinite && tolerance >= 0) {
            throw ValidationError("--tolerance: expected a finite number >= 0, got \(tolerance)")
        }
        guard ["cpu", "cuda"].contains(backend) else { throw validationErrorList(argument: "--backend", got: backend, known: ["cpu", "cuda"]) }
        guard ["f32", "bf16", "f16"].contains(dtype) else { throw validationErrorList(argument: "--dtype", got: dtype, known: ["f32", "bf16", "f16"]) }
    }

    func run() throws {
        let selected = try mechanism.map { [try Mechanism.named($0, argument: "--mechanism")] } ?? Mechanism.all
        let tolerance = self.tolerance ?? (dtype == "f32" ? 1e-5 : 2e-3)
        var rows: [[String]] = []
        var failures = 0
        for m in selected {
            printError("verify: \(m.name) ...")
            let checks = backend == "cuda"
                ? try cudaVerificationChecks(m, dtype: dtype == "bf16" ? .bfloat16 : dtype == "f16" ? .float16 : .float32, seed: seed)
                : try verificationChecks(m, seed: seed)
            for check in checks {
                let pass = check.errors.allSatisfy { $0.stats.relativeRMS <= tolerance }
                failures += pass ? 0 : 1
                let cells = check.errors.map { "\($0.name) " + String(format: "%.2e / %.2e", $0.stats.relativeRMS, $0.stats.maxAbs) }
                rows.append([m.name, check.form, check.shape] + [cells.joined(separator: "  ")] + [pass ? "ok" : "FAIL"])
            }
        }
        printTable(header: ["mechanism", "form", "case", "rel RMS / max abs (o, lse or final state)", "result"], rows: rows)
        print("\n\(rows.count - failures) passed, \(failures) failed (tolerance: relative RMS <= \(tolerance))")
        if failures > 0 { throw ExitCode(1) }
    }
}

/// One comparison of a form against the reference.
struct VerificationCheck {
    let form: String
    let shape: String
    let errors: [(name: String, stats: ErrorStats)]
}

/// The verification grid of a mechanism.
func verificationChecks(_ m: Mechanism, seed: UInt64) throws -> [VerificationCheck] {
    switch m.kind {
    case .attention: return try attentionChecks(seed: seed)
    case .recurrence(let r): return try recurrenceChecks(r, seed: seed)
    }
}

private func attentionChecks(seed: UInt64) throws -> [VerificationCheck] {
    // (B, T, S, Hq, Hkv, D, Dv, causal, window): awkward lengths, GQA/MQA, decode against a long KV, windows.
    let grid: [(Int, Int, Int, Int, Int, Int, Int, Bool, Int?)] = [
        (1, 1, 1, 2, 2, 64, 64, true, nil),
        (1, 63, 63, 2, 1, 60, 60, true, nil),
        (2, 64, 64, 4, 4, 64, 32, false, nil),
        (1, 65, 65, 4, 2, 128, 128, true, nil),
        (1, 1000, 1000, 2, 1, 64, 64, true, nil),
        (1, 1000, 1000, 2, 2, 64, 64, true, 129),
        (3, 4, 1000, 8, 2, 64, 64, true, nil),
        (1, 300, 120, 2, 2, 32, 48, true, nil),
    ]
    var checks: [VerificationCheck] = []
    for (index, c) in grid.enumerated() {
        let (B, T, S, Hq, Hkv, D, Dv, causal, window) = c
        let s = seed &+ UInt64(index) &* 10
        let q = try Tensor.randomNormal([B, T, Hq, D], seed: s)
        let k = try Tensor.randomNormal([B, S, Hkv, D], seed: s &+ 1)
        let v = try Tensor.randomNormal([B, S, Hkv, Dv], seed: s &+ 2)
        let options = AttentionOptions(causal: causal, window: window)
        let want = try Attention.forward(q: q, k: k, v: v, options: options, form: .reference)
        let shape = "B\(B) T\(T) S\(S) Hq\(Hq) Hkv\(Hkv) D\(D) Dv\(Dv) \(causal ? "causal" : "full")\(window.map { " W\($0)" } ?? "")"
        for form in [AttentionForm.flash, .splitKV(partitions: 4)] {  // 4 partitions: the merge is exercised even on 2 cores
            let got = try Attention.forward(q: q, k: k, v: v, options: options, form: form)
            checks.append(VerificationCheck(form: form.description, shape: shape,
                                            errors: [("o", ErrorStats(got.o, want.o)), ("lse", ErrorStats(got.lse, want.lse))]))
        }
    }
    return checks
}

private func recurrenceChecks(_ r: RecurrentMechanism, seed: UInt64) throws -> [VerificationCheck] {
    // (B, T, H, HV, K, V, gate range): awkward lengths around the chunk size, K != V, steep gates down to -20, grouped
    // value heads (HV = 2H, 4H).
    let grid: [(Int, Int, Int, Int, Int, Int, ClosedRange<Float>)] = [
        (1, 1, 2, 2, 64, 64, -1...(-1e-4)),
        (3, 63, 2, 2, 60, 32, -1...(-1e-4)),
        (1, 65, 2, 2, 64, 128, -20...(-1e-4)),
        (2, 200, 2, 2, 128, 64, -1...(-1e-4)),
        (1, 1000, 1, 1, 64, 64, -20...(-1e-4)),
        (2, 130, 2, 4, 64, 32, -1...(-1e-4)),
        (1, 70, 1, 4, 32, 64, -20...(-1e-4)),
    ]
    var checks: [VerificationCheck] = []
    for (index, c) in grid.enumerated() {
        let (B, T, H, HV, K, V, gates) = c
        let inputs = try RecurrenceInputs.random(r, B: B, T: T, H: H, HV: HV, K: K, V: V, seed: seed &+ UInt64(index) &* 10,
                                                 gateRange: gates)
        let want = try Recurrence.forward(r, inputs, form: .reference)
        let hasGate = inputs.g != nil
        let shape = "B\(B) T\(T) H\(H)\(HV == H ? "" : " HV\(HV)") K\(K) V\(V)" + (hasGate ? " g in [\(Int(gates.lowerBound)), 0)" : "")
        for form in [RecurrenceForm.recurrent, .chunked(size: 64), .chunked(size: 16)] {
            let got = try Recurrence.forward(r, inputs, form: form)
            let name = if case .chunked(let n) = form { "chunked:\(n)" } else { "recurrent" }
            checks.append(VerificationCheck(form: name, shape: shape, errors: [
                ("o", ErrorStats(got.o, want.o)), ("state", ErrorStats(got.finalState, want.finalState))]))
        }
    }
    return checks
}
