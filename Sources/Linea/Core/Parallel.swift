import CLineaCPU
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

/// The work items of `Parallel.forEachStatic`: a value whose `run(_:)` handles one item (a struct rather than a
/// closure, so that handing it to the parked threads allocates nothing).
public protocol ParallelItems: Sendable {
    /// Handles item `item`; called once for every item, from several threads at once.
    func run(_ item: Int)
    /// Calls `run(item)` on the value of this type at `pointer` (the threads' entry; keep the default).
    static func run(at pointer: UnsafeRawPointer, _ item: Int)
}

extension ParallelItems {
    /// Calls `run(item)` on the value at `pointer`. O(1) plus the item.
    public static func run(at pointer: UnsafeRawPointer, _ item: Int) {
        pointer.assumingMemoryBound(to: Self.self).pointee.run(item)
    }
}

extension Parallel {
    /// Runs `items.run(i)` for every `i` in `0..<count`, split into one contiguous range per worker thread. Unlike
    /// `forEach` it allocates nothing after its first call: its helper threads are started once and parked between
    /// calls (GCD's `concurrentPerform` allocates per call), for per-token loops that must stay allocation-free.
    /// Meant for items of equal cost; while the threads run one loop, another (from another thread, or nested) runs on
    /// its caller's thread. O(count) calls.
    public static func forEachStatic<Items: ParallelItems>(_ count: Int, _ items: Items) {
        let workers = min(threadCount, count)
        if workers <= 1 {
            for i in 0..<max(count, 0) { items.run(i) }
            return
        }
        withUnsafePointer(to: items) { StaticPool.shared.run(count, workers: workers, Items.self, UnsafeRawPointer($0)) }
    }
}

/// The helper threads of `Parallel.forEachStatic`: `threadCount - 1` threads. After a loop each spins a while on the
/// loop counter before it parks on its own semaphore: a decode step runs a hundred short loops a few microseconds
/// apart, and waking a parked thread through the kernel every time cost more than the loops (llama 130M f32 decode on
/// 2 cores measured 80 -> 95-112 tokens/s, bf16 123 -> 205).
private final class StaticPool: @unchecked Sendable {
    static let shared = StaticPool(helpers: Parallel.threadCount - 1)
    /// Spins (x86 `pause`, tens of cycles each) a helper waits for the next loop before parking: about a millisecond.
    static let spins = 20_000

    private let starts: [CountingSemaphore]
    private let turn = NSLock()
    /// Counters shared with the helpers through atomics: the number of loops started, the helpers still in the current
    /// loop, then one flag per helper, 1 while it is parked (or about to be) on its semaphore.
    private let counters: UnsafeMutablePointer<Int>
    private var started: UnsafeMutablePointer<Int> { counters }
    private var running: UnsafeMutablePointer<Int> { counters + 1 }
    private func parked(_ helper: Int) -> UnsafeMutablePointer<Int> { counters + 2 + helper }
    /// The loop being run: the items' type and address (valid only while `run` holds `turn` and waits).
    private var items: (type: any ParallelItems.Type, address: UnsafeRawPointer)?
    private var count = 0, workers = 1

    private init(helpers: Int) {
        starts = (0..<helpers).map { _ in CountingSemaphore() }
        counters = .allocate(capacity: 2 + helpers)
        counters.initialize(repeating: 0, count: 2 + helpers)
        for helper in 0..<helpers {
            let thread = Thread { [unowned self] in
                var seen = 0
                while true {
                    waitForLoop(helper, after: seen)
                    seen += 1
                    share(helper + 1)
                    linea_atomic_add(running, -1)
                }
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Returns once more than `seen` loops have started: spinning first, then parked on the helper's semaphore.
    private func waitForLoop(_ helper: Int, after seen: Int) {
        for _ in 0..<Self.spins {
            if linea_atomic_load(started) != seen { return }
            linea_cpu_relax()
        }
        linea_atomic_store(parked(helper), 1)
        // Look again after raising the flag: a loop that started meanwhile either saw the flag (and signals, so take
        // that signal) or did not (then the flag is still ours to lower).
        if linea_atomic_load(started) != seen && linea_atomic_cas(parked(helper), 1, 0) != 0 { return }
        starts[helper].wait()
    }

    /// Items `[count·w/workers, count·(w+1)/workers)` of the current loop; helpers past `workers` have none.
    private func share(_ w: Int) {
        guard w < workers, let items else { return }
        for i in (count * w / workers)..<(count * (w + 1) / workers) { items.type.run(at: items.address, i) }
    }

    /// Runs the loop on the helpers; when they are busy (another thread's loop, or this call nested inside one of
    /// their items) it runs on the calling thread instead of waiting, so nesting cannot deadlock.
    func run(_ count: Int, workers: Int, _ type: any ParallelItems.Type, _ address: UnsafeRawPointer) {
        guard turn.try() else {
            for i in 0..<count { type.run(at: address, i) }
            return
        }
        defer { turn.unlock() }
        (items, self.count, self.workers) = ((type, address), count, workers)
        linea_atomic_store(running, starts.count)
        linea_atomic_add(started, 1)
        for helper in starts.indices where linea_atomic_cas(parked(helper), 1, 0) != 0 { starts[helper].signal() }
        share(0)
        while linea_atomic_load(running) != 0 { linea_cpu_relax() }
        items = nil
    }
}

/// A counting semaphore on a pthread mutex and condition variable, which never allocate once made (libdispatch's
/// semaphores measured one heap allocation per wake-up here).
private final class CountingSemaphore: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var value = 0

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    func signal() {
        pthread_mutex_lock(mutex)
        value += 1
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    func wait() {
        pthread_mutex_lock(mutex)
        while value == 0 { pthread_cond_wait(condition, mutex) }
        value -= 1
        pthread_mutex_unlock(mutex)
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
