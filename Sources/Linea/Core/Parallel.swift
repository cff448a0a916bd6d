import Dispatch
import Foundation

/// A pointer that may cross into parallel work items; each item must touch a disjoint part.
public struct SendablePointer<T>: @unchecked Sendable {
    /// The wrapped address.
    public let base: UnsafeMutablePointer<T>
    /// Wraps `base`.
    public init(_ base: UnsafeMutablePointer<T>) { self.base = base }
}

/// A read-only pointer that may cross into parallel work items.
public struct SendableConstPointer<T>: @unchecked Sendable {
    /// The wrapped address.
    public let base: UnsafePointer<T>
    /// Wraps `base`.
    public init(_ base: UnsafePointer<T>) { self.base = base }
}

/// Parallel loops over independent work items on all cores.
public enum Parallel {
    /// Number of worker threads used (defaults to the active processor count; env `LINEA_THREADS` overrides, up
    /// to 1024: each worker owns scratch buffers, so an absurd count would exhaust memory).
    public static let threadCount: Int = {
        if let text = ProcessInfo.processInfo.environment["LINEA_THREADS"], let n = Int(text), n > 0 { return min(n, 1024) }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }()

    /// Runs `body(i)` for every `i` in `0..<count`, spread over `threadCount` threads; returns when all are done.
    /// Items are handed out dynamically, so uneven items (causal blocks) balance. O(count) calls.
    public static func forEach(_ count: Int, _ body: @Sendable (Int) -> Void) {
        forEach(count) { item, _ in body(item) }
    }

    /// Like `forEach(_:_:)`, but also passes the worker's index in `0..<threadCount`, so each worker can reuse
    /// its own scratch buffers across items.
    public static func forEach(_ count: Int, _ body: @Sendable (_ item: Int, _ worker: Int) -> Void) {
        if count <= 0 { return }
        let workers = min(threadCount, count)
        if workers == 1 {
            for i in 0..<count { body(i, 0) }
            return
        }
        let next = AtomicCounter()
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            while true {
                let i = next.increment()
                if i >= count { break }
                body(i, worker)
            }
        }
    }
}

extension Parallel {
    /// Runs `body(i)` for every `i` in `0..<count`, split into one contiguous range per worker thread. Unlike
    /// `forEach` it allocates nothing (no shared counter), for per-token loops that must stay allocation-free;
    /// meant for items of equal cost. O(count) calls.
    public static func forEachStatic(_ count: Int, _ body: @Sendable (Int) -> Void) {
        let workers = min(threadCount, count)
        if workers <= 1 {
            for i in 0..<max(count, 0) { body(i) }
            return
        }
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            for i in (count * w / workers)..<(count * (w + 1) / workers) { body(i) }
        }
    }
}

/// A lock-protected counter handing out work-item indices.
final class AtomicCounter: @unchecked Sendable {
    private var value = 0
    private let lock = NSLock()

    /// Returns the current value and adds one.
    func increment() -> Int {
        lock.lock()
        defer { lock.unlock() }
        let v = value
        value += 1
        return v
    }
}
