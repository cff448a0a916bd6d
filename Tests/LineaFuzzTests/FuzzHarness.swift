#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Linea
import Testing

/// Budget, seed and crash reporting shared by the fuzz tests.
///
/// Every case is generated from `SeededRandom(seed, iteration)` alone, so a failure reproduces with
/// `LINEA_FUZZ_SEED=S LINEA_FUZZ_ITERATION=I swift test -c release --filter <test>`. A case that kills the
/// process (a trap, a bad access) prints its reproducer from a signal handler; one that runs past
/// `hangSeconds` is printed and aborted by a watchdog thread.
enum Fuzz {
    /// Seconds each of the three fuzz tests runs when LINEA_FUZZ_SECONDS is not set: about 75 s of CI in all.
    static let defaultSeconds = 25.0
    /// Wall-clock seconds per fuzz test (LINEA_FUZZ_SECONDS, e.g. 3600 for a long local run).
    static let seconds = environment("LINEA_FUZZ_SECONDS").flatMap(Double.init) ?? defaultSeconds
    /// Base seed (LINEA_FUZZ_SEED); fixed by default so CI runs the same cases each time (as far as time allows).
    static let seed = environment("LINEA_FUZZ_SEED").flatMap { UInt64($0) } ?? 15
    /// Run only this iteration (LINEA_FUZZ_ITERATION), to reproduce a failure.
    static let only = environment("LINEA_FUZZ_ITERATION").flatMap { Int($0) }
    /// First iteration (LINEA_FUZZ_START), to go on past a case that crashed.
    static let first = environment("LINEA_FUZZ_START").flatMap { Int($0) } ?? 0
    /// A single case running longer than this is a hang: the watchdog prints it and aborts the process.
    static let hangSeconds = 120.0
    /// A case slower than this is recorded as a failure (inputs are kept small, so it means a runaway loop).
    static let slowSeconds = 20.0
    /// Stop a test after this many failing cases (one cause usually fails many cases).
    static let maxFailures = 5

    private static func environment(_ name: String) -> String? {
        ProcessInfo.processInfo.environment[name]
    }

    /// Runs `body` for iterations 0, 1, 2, ... until the budget is spent (or only LINEA_FUZZ_ITERATION);
    /// `slot` (0..<CrashReport.slots) keeps concurrent fuzz tests apart in crash reports. Returns the number of cases run.
    @discardableResult
    static func run(_ test: String, slot: Int, _ body: (inout SeededRandom, FuzzCase) throws -> Void) rethrows -> Int {
        CrashReport.install()
        let start = Date()
        var iteration = only ?? first
        var count = 0
        var failures = 0
        while failures < maxFailures {
            var rng = SeededRandom(seed: seed &+ UInt64(iteration) &* 0x9E37_79B9_7F4A_7C15)
            let fuzzCase = FuzzCase(test: test, iteration: iteration, slot: slot)
            fuzzCase.describe("(generating the case)")
            let caseStart = Date()
            try body(&rng, fuzzCase)
            let elapsed = Date().timeIntervalSince(caseStart)
            if elapsed > fuzzCase.slowSeconds { fuzzCase.fail("took \(String(format: "%.1f", elapsed)) s") }
            CrashReport.clear(slot: slot)
            failures += fuzzCase.failed ? 1 : 0
            count += 1
            iteration += 1
            if only != nil || Date().timeIntervalSince(start) > seconds { break }
        }
        print("fuzz \(test): \(count) cases in \(String(format: "%.1f", Date().timeIntervalSince(start))) s, "
            + "seed \(seed), \(failures) failing")
        return count
    }
}

/// One generated case: its reproducer (set before it runs, printed if it crashes) and its failures.
final class FuzzCase {
    let test: String, iteration: Int, slot: Int
    private(set) var failed = false
    private var reproducer = ""
    /// Wall-clock seconds past which the case fails as a runaway (`Fuzz.slowSeconds`; a case that does real work by
    /// design raises it).
    var slowSeconds = Fuzz.slowSeconds

    init(test: String, iteration: Int, slot: Int) {
        self.test = test
        self.iteration = iteration
        self.slot = slot
    }

    /// How to run this case again, plus `detail` (the inputs as text, argv or base64 bytes).
    var header: String {
        "LINEA_FUZZ_SEED=\(Fuzz.seed) LINEA_FUZZ_ITERATION=\(iteration) swift test -c release --filter \(test)"
    }

    /// Records what the case is about to run; printed if the process dies or hangs during it.
    func describe(_ detail: String) {
        reproducer = detail
        CrashReport.set(slot: slot, text: "fuzz case: \(header)\n  \(detail)\n")
    }

    /// Records a failure of this case with its reproducer.
    func fail(_ what: String) {
        failed = true
        Issue.record("\(what)\n  reproduce: \(header)\n  \(reproducer)")
    }
}

/// Fixed-size text slots written before each case and printed by a signal handler or the watchdog.
enum CrashReport {
    static let slots = 4
    private static let slotBytes = 1 << 16
    nonisolated(unsafe) private static let buffer: UnsafeMutablePointer<CChar> = {
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: slots * slotBytes)
        p.initialize(repeating: 0, count: slots * slotBytes)
        return p
    }()
    nonisolated(unsafe) private static let startTimes: UnsafeMutablePointer<Double> = {
        let p = UnsafeMutablePointer<Double>.allocate(capacity: slots)
        p.initialize(repeating: 0, count: slots)
        return p
    }()
    nonisolated(unsafe) fileprivate static let previous = UnsafeMutablePointer<sigaction>.allocate(capacity: 65)
    private static let installed: Bool = {
        _ = buffer
        _ = startTimes
        for signal in [SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGFPE, SIGABRT] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = crashHandler
            sigemptyset(&action.sa_mask)
            sigaction(signal, &action, previous + Int(signal))
        }
        Thread.detachNewThread { watchdog() }
        return true
    }()

    /// Installs the signal handlers and the watchdog once per process.
    static func install() { _ = installed }

    /// Stores `text` (truncated to the slot) as the case now running in `slot`.
    static func set(slot: Int, text: String) {
        let base = buffer + slot * slotBytes
        let bytes = Array(text.utf8.prefix(slotBytes - 1))
        base[0] = 0
        bytes.withUnsafeBufferPointer { raw in
            raw.withMemoryRebound(to: CChar.self) { base.update(from: $0.baseAddress!, count: bytes.count) }
        }
        base[bytes.count] = 0
        startTimes[slot] = Date().timeIntervalSince1970
    }

    /// Marks `slot` idle.
    static func clear(slot: Int) {
        startTimes[slot] = 0
        buffer[slot * slotBytes] = 0
    }

    /// Writes every non-empty slot to stderr with `write` only (async-signal-safe).
    fileprivate static func dump(_ title: StaticString) {
        _ = Glibc.write(2, title.utf8Start, title.utf8CodeUnitCount)
        for slot in 0..<slots {
            let base = buffer + slot * slotBytes
            let length = strlen(base)
            if length > 0 { _ = Glibc.write(2, base, length) }
        }
    }

    private static func watchdog() {
        while true {
            sleep(1)
            let now = Date().timeIntervalSince1970
            for slot in 0..<slots where startTimes[slot] > 0 && now - startTimes[slot] > Fuzz.hangSeconds {
                dump("\nfuzz: a case ran longer than the hang limit; the cases running:\n")
                abort()
            }
        }
    }
}

/// Prints the running cases, restores the previous handler (Swift's backtracer, or the default) and re-raises.
private func crashHandler(_ signal: Int32) {
    CrashReport.dump("\nfuzz: the process died on a signal; the cases running:\n")
    sigaction(signal, CrashReport.previous + Int(signal), nil)
    raise(signal)
}

extension SeededRandom {
    /// A uniform integer in `0..<n` (n > 0).
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    /// True with probability `p`.
    mutating func chance(_ p: Double) -> Bool { nextUnit() < p }
    /// A uniformly chosen element of a non-empty array.
    mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }
}
