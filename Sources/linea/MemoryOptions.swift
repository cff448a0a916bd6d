import ArgumentParser
import Foundation
import Linea

/// `--max-memory`, shared by op, bench and verify: sets `MemoryBudget.limit` after checking the flag and
/// `LINEA_MAX_MEMORY` (a malformed value in either is a usage error naming it).
struct MemoryOptions: ParsableArguments {
    @Option(help: "Most memory one operation may allocate, e.g. 32G, 512M or a byte count (default: $LINEA_MAX_MEMORY, else 80% of physical memory).")
    var maxMemory: String?

    func validate() throws {
        let env = MemoryBudget.environmentVariable
        for (name, text) in [("--max-memory", maxMemory), (env, ProcessInfo.processInfo.environment[env])] {
            guard let text else { continue }
            guard let bytes = MemoryBudget.parseBytes(text) else {
                throw ValidationError("\(name): expected a byte count such as 32G, 512M or 1048576 (> 0, below 8 EiB), got '\(text)'")
            }
            MemoryBudget.limit = bytes
            return
        }
    }
}
