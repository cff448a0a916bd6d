import Foundation

/// Per-op timing of everything dispatched (`LINEA_PROFILE=1`, or `linea bench --profile`): each op, allocation and
/// transfer waits for its device before and after, so its wall time is its own; times are summed per op name, dtype
/// and shape. Slows the run (one synchronize per op): for finding where the time goes, not for throughput figures.
/// `LINEA_PROFILE=host` times the same calls without waiting: the host's cost of queueing each op, which bounds a
/// GPU decode step when the kernels are shorter than their launches.
public enum Profile {
    /// Whether dispatch times each op; set from `LINEA_PROFILE=1` at start, or by a caller before the work.
    public static var enabled: Bool {
        get { state.value.enabled }
        set { state.update { $0.enabled = newValue } }
    }

    /// One row of the report: how many calls and their summed seconds.
    public struct Entry: Sendable { public var calls = 0, seconds = 0.0 }

    private struct State: Sendable {
        var enabled = ["1", "host"].contains(ProcessInfo.processInfo.environment["LINEA_PROFILE"])
        var entries: [String: Entry] = [:]
        /// `recording` scopes open on any thread: while there are none, a dispatch looks up no thread's scope.
        var recordings = 0
    }
    private static let state = LockedValue(State())
    private static let depthKey = "linea.profile.measuring"
    private static let scopeKey = "linea.profile.scope"

    /// The entries of one `recording` call (a class, so that the thread dictionary holds it by reference).
    private final class Scope { var entries: [String: Entry] = [:] }

    /// Runs `body` with the ops this thread dispatches timed, whatever `enabled` says, and returns their entries with
    /// the body's result; they go neither to nor from the process-wide entries, so that threads running beside it
    /// (tests in parallel, another command in the same process) neither add to them nor take them. O(1) besides the body.
    public static func recording<R>(_ body: () throws -> R) rethrows -> (result: R, entries: [String: Entry]) {
        let scope = Scope(), outer = Thread.current.threadDictionary[scopeKey]
        Thread.current.threadDictionary[scopeKey] = scope
        state.update { $0.recordings += 1 }
        defer {
            state.update { $0.recordings -= 1 }
            Thread.current.threadDictionary[scopeKey] = outer
        }
        let result = try body()
        return (result, scope.entries)
    }

    /// Whether the timed calls wait for their device (`LINEA_PROFILE=1`, the default) or time the host's queueing only
    /// (`LINEA_PROFILE=host`). Read once.
    public static let waitsForDevice = ProcessInfo.processInfo.environment["LINEA_PROFILE"] != "host"

    /// Runs `body` timed under `key` when profiling (the device synchronized before and after unless the profile times
    /// the host only), else just runs it. O(1) besides the body.
    static func measure<R>(_ key: @autoclosure () -> String, on device: Device, _ body: () throws -> R) throws -> R {
        // Every dispatched op passes here: with profiling off and no scope open, one read of the state and nothing else.
        let current = state.value
        guard current.enabled || current.recordings > 0 else { return try body() }
        // A nested call (an allocation inside a timed op) is part of the outer one's time.
        let scope = Thread.current.threadDictionary[scopeKey] as? Scope
        guard current.enabled || scope != nil, Thread.current.threadDictionary[depthKey] == nil else { return try body() }
        Thread.current.threadDictionary[depthKey] = true
        defer { Thread.current.threadDictionary[depthKey] = nil }
        let backend = waitsForDevice ? try Backends.backend(for: device) : nil
        try backend?.synchronize()
        let start = DispatchTime.now().uptimeNanoseconds
        let result = try body()
        try backend?.synchronize()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let name = key()
        func add(_ entries: inout [String: Entry]) { entries[name, default: Entry()].calls += 1; entries[name, default: Entry()].seconds += seconds }
        if let scope { add(&scope.entries) } else { state.update { add(&$0.entries) } }
        return result
    }

    /// The key of one dispatched call: its name and its first two tensors' dtypes and shapes (a matmul's input and
    /// weight). O(tensors).
    static func key(_ call: some OpCall) -> String {
        var name = call.name, count = 0
        call.forEachTensor { _, t in
            if count < 2 { name += " \(t.dtype.shortName)\(t.shape)" }
            count += 1
        }
        return name
    }

    /// The entries so far, and clears them. O(entries).
    public static func take() -> [String: Entry] {
        var taken: [String: Entry] = [:]
        state.update { taken = $0.entries; $0.entries = [:] }
        return taken
    }

    /// `entries` as a table, slowest first, with each row's share of their sum; at most `limit` rows; with the phase's
    /// `wall` seconds, a last line with the time outside every timed call (host work between ops, the profile's own
    /// bookkeeping). O(entries log entries).
    public static func format(_ entries: [String: Entry], limit: Int = 40, wall: Double? = nil) -> String {
        let total = entries.values.reduce(0) { $0 + $1.seconds }
        var lines = ["  total ms    calls    us/call  share  op, dtype[shape] of its first two tensors"]
        for (name, e) in entries.sorted(by: { $0.value.seconds > $1.value.seconds }).prefix(limit) {
            lines.append(String(format: "%10.2f %8d %10.1f %5.1f%%  %@", e.seconds * 1e3, e.calls, e.seconds * 1e6 / Double(max(e.calls, 1)),
                                100 * e.seconds / max(total, 1e-12), name))
        }
        lines.append(String(format: "%10.2f %8d  (sum of %d kinds)", total * 1e3, entries.values.reduce(0) { $0 + $1.calls }, entries.count))
        if let wall { lines.append(String(format: "%10.2f           (outside them: host work between the calls and the profile's own, of %.2f ms in all)", (wall - total) * 1e3, wall * 1e3)) }
        return lines.joined(separator: "\n")
    }
}
