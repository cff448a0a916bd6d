import ArgumentParser
import Foundation
import Linea

extension VerifyCommand {
    /// `linea verify --approx`: each feature map's error against exact softmax attention (normalized, causal and not) on
    /// the same seeded inputs, and its fast form against its own reference; exit 1 only on a disagreement of the latter.
    func runApproximations() throws {
        let rows = try FeatureMapAttention.approximations(seed: seed)
        let limit = tolerance ?? 1e-5
        var failures = 0
        let table = rows.map { r -> [String] in
            let ok = r.formError <= limit
            failures += ok ? 0 : 1
            return [r.label, r.causal ? "causal" : "non-causal", String(format: "%.3e", r.softmaxError), String(format: "%.2e", r.formError),
                    ok ? "ok" : "FAIL"]
        }
        printTable(header: ["map", "mask", "rel RMS vs softmax", "fast vs reference", "result"], rows: table)
        print("\nB1 T128 H2 K16 V16, q and k N(0, 1/4), normalized, seed \(seed); the error against softmax is the map's approximation, not a failure; "
              + "\(rows.count - failures) of \(rows.count) fast forms within rel RMS \(limit) of their reference")
        if failures > 0 { throw ExitCode(1) }
    }
}
