import ArgumentParser
import Foundation
import Linea

extension BenchCommand {
    /// `linea bench --context-parallel N`: each recurrence (chunked) over one rank and over N in-process ranks in the same
    /// run, tokens/s of both and the efficiency `time(1) / (N · time(N))`. On a CPU the ranks share the cores, so the
    /// ratio measures the algorithm's extra work (the fold, the readout, the delta rules' wider pass), not scaling.
    func runContextParallel(_ ranks: Int) throws {
        let (heads, dim, B) = (self.heads ?? 8, self.dim ?? 64, batch ?? 1)
        let names = mechanism.map { $0.split(separator: ",").map(String.init) } ?? RecurrentMechanism.allCases.map(\.rawValue)
        var rows: [[String]] = []
        for name in names {
            guard let m = RecurrentMechanism(rawValue: name) else {
                throw ValidationError("--mechanism \(name): expected a recurrence with --context-parallel")
            }
            for T in try parsedLengths() ?? [4096, 16384] {
                printError("bench: \(name) chunked:\(chunkSize) B = \(B) T = \(T) over 1 and \(ranks) ranks ...")
                var x = try RecurrenceInputs.random(m, B: B, T: T, H: heads, K: dim, V: dim, seed: 1, initialState: false)
                x.validate = false
                let form = RecurrenceForm.chunked(size: chunkSize)
                let one = try Measure.run(minSeconds: 0.5) { _ = try Recurrence.forward(m, x, form: form) }.ms
                // The slices are cut before timing: on N devices each would hold its own already.
                let slices = try Recurrence.contextParallelSlices(x, ranks: ranks)
                let many = try Measure.run(minSeconds: 0.5) { _ = try Recurrence.contextParallelRun(m, slices, form: form) }.ms
                let rate = { (ms: Double) in String(format: "%.3g", Double(B * T) / (ms / 1000)) }
                rows.append([name, "\(B)", "\(T)", "\(heads)", "\(dim)", String(format: "%.2f", one), rate(one), String(format: "%.2f", many), rate(many),
                             String(format: "%.2fx", one / many), String(format: "%.0f%%", 100 * one / (Double(ranks) * many))])
            }
        }
        printTable(header: ["mechanism", "B", "T", "H", "K", "ms 1 rank", "tokens/s", "ms \(ranks) ranks", "tokens/s", "speedup", "efficiency"], rows: rows)
        print("speedup = time on 1 rank / time on \(ranks) ranks, efficiency = speedup / \(ranks); the in-process ranks share this host's "
              + "\(Parallel.threadCount) threads, so a speedup of 1 means no extra work")
    }
}
