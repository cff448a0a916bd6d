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
    /// its own scratch buffers across items. Runs on `forEachStatic`'s threads, one share per worker taking items from
    /// a shared counter (GCD's `concurrentPerform` woke its own threads per call, which then competed for the cores with
    /// the spinning helpers).
    public static func forEach(_ count: Int, _ body: @Sendable (_ item: Int, _ worker: Int) -> Void) {
        if count <= 0 { return }
        let workers = min(threadCount, count)
        if workers == 1 {
            for i in 0..<count { body(i, 0) }
            return
        }
        let next = UnsafeMutablePointer<Int>.allocate(capacity: 1)
        next.initialize(to: 0)
        defer { next.deallocate() }
        withoutActuallyEscaping(body) { body in
            forEachStatic(workers, DynamicItems(count: count, next: next, body: body))
        }
    }
}

/// `Parallel.forEach`'s shares: share `worker` takes item after item from the counter at `next` until none is left.
private struct DynamicItems: ParallelItems, @unchecked Sendable {  // `next` is only touched through atomics
    let count: Int, next: UnsafeMutablePointer<Int>, body: @Sendable (Int, Int) -> Void

    func run(_ worker: Int) {
        while true {
            let item = linea_atomic_add(next, 1) - 1
            if item >= count { return }
            body(item, worker)
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
    /// Runs `items.run(i)` for every `i` in `0..<count` on the worker threads, in contiguous runs of items (up to 4
    /// per worker) that the threads claim one after another. It allocates nothing: its helper threads are started once
    /// and wait between calls, for per-token loops that must stay allocation-free. Meant for items of similar cost; while
    /// the threads run one loop, another (from another thread, or nested) runs on its caller's thread. O(count) calls.
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
/// 2 cores measured 80 -> 95-112 tokens/s, bf16 123 -> 205). The loop's runs of items are claimed one at a time from
/// an atomic counter by the calling thread and the helpers alike, so a helper that is late (still waking, or preempted
/// by another process on a busy machine) holds up at most the run it took, never the loop.
private final class StaticPool: @unchecked Sendable {
    static let shared = StaticPool(helpers: Parallel.threadCount - 1)
    /// Spins (x86 `pause`, about 23 ns on the Zen 5 host) a helper waits for the next loop before parking: about 50 µs
    /// by default, env `LINEA_SPINS` overrides. Longer spins measured faster on an idle machine (llama 130M 162 against
    /// 145 tokens/s at 10x) but slower beside other busy processes, whose cores they take (64 against 81).
    static let spins = Int(ProcessInfo.processInfo.environment["LINEA_SPINS"] ?? "") ?? 2_000

    private let starts: [CountingSemaphore]
    private let turn = NSLock()
    /// Counters shared with the helpers through atomics: the claim word (the loop's number in bits 32..62, its run
    /// count in bits 16..31, the next unclaimed run in bits 0..15), the runs finished, then per helper a flag that is 1
    /// while it is parked (or about to be) on its semaphore. The run count travels in the claim word because a helper
    /// that read the last loop's exhausted word could otherwise see this loop's larger `runs` before the word changes
    /// and claim a run of this loop twice (seen: items run twice in ParallelTests on 2 cores).
    private let counters: UnsafeMutablePointer<Int>
    private var next: UnsafeMutablePointer<Int> { counters }
    private var finished: UnsafeMutablePointer<Int> { counters + 1 }
    private func parked(_ helper: Int) -> UnsafeMutablePointer<Int> { counters + 2 + helper }
    /// The loop being run: the items' type and address and item count (read only by a thread that claimed a run).
    private var items: (type: any ParallelItems.Type, address: UnsafeRawPointer)?
    private var count = 0, loop = 0

    private init(helpers: Int) {
        starts = (0..<helpers).map { _ in CountingSemaphore() }
        counters = .allocate(capacity: 2 + helpers)
        counters.initialize(repeating: 0, count: 2 + helpers)
        for helper in 0..<helpers {
            let thread = Thread { [unowned self] in
                var seen = 0
                while true {
                    seen = waitForLoop(helper, after: seen)
                    work(loop: seen)
                }
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Returns the loop number once it differs from `seen`: spinning first, then parked on the helper's semaphore.
    private func waitForLoop(_ helper: Int, after seen: Int) -> Int {
        for _ in 0..<Self.spins {
            let now = linea_atomic_load(next) >> 32
            if now != seen { return now }
            linea_cpu_relax()
        }
        linea_atomic_store(parked(helper), 1)
        // Look again after raising the flag: a loop that started meanwhile either saw the flag (and signals, so take
        // that signal) or did not (then the flag is still ours to lower).
        if linea_atomic_load(next) >> 32 == seen || linea_atomic_cas(parked(helper), 1, 0) == 0 { starts[helper].wait() }
        return linea_atomic_load(next) >> 32
    }

    /// Claims and runs runs of loop `loop` until none is left. Returns how many this thread ran.
    @discardableResult
    private func work(loop: Int) -> Int {
        var ran = 0
        while true {
            let claim = linea_atomic_load(next)
            let r = claim & 0xFFFF, runs = (claim >> 16) & 0xFFFF
            guard claim >> 32 == loop, r < runs else { return ran }
            guard linea_atomic_cas(next, claim, claim + 1) != 0 else { continue }
            if let items {
                for i in (count * r / runs)..<(count * (r + 1) / runs) { items.type.run(at: items.address, i) }
            }
            linea_atomic_add(finished, 1)
            ran += 1
        }
    }

    /// Runs the loop with the helpers; when they are busy (another thread's loop, or this call nested inside one of
    /// their items) it runs on the calling thread instead of waiting, so nesting cannot deadlock.
    func run(_ count: Int, workers: Int, _ type: any ParallelItems.Type, _ address: UnsafeRawPointer) {
        guard turn.try() else {
            for i in 0..<count { type.run(at: address, i) }
            return
        }
        defer { turn.unlock() }
        // The loop is published before its runs open (a thread reads it only after claiming one).
        loop = (loop + 1) & 0x7FFF_FFFF
        let runs = min(count, 4 * workers)  // at most 4 * 1024 threads: fits the claim word's 16 bits
        (items, self.count) = ((type, address), count)
        linea_atomic_store(finished, 0)
        linea_atomic_store(next, loop << 32 | runs << 16)
        for helper in 0..<starts.count where linea_atomic_cas(parked(helper), 1, 0) != 0 { starts[helper].signal() }
        work(loop: loop)
        // Runs a helper claimed are running now; past a few thousand spins it was preempted, so give up the core.
        var spins = 0
        while linea_atomic_load(finished) < runs {
            spins += 1
            if spins < 4096 { linea_cpu_relax() } else { sched_yield() }
        }
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
