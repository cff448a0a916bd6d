import Foundation

// An NCCL implementation (not written yet: no machine with several GPUs to test it) would map allGather to
// ncclAllGather on device buffers (libnccl.so.2 through dlopen, NCCL_NVLS_ENABLE=0), abort to ncclCommAbort, and the
// timeout to polling ncclCommGetAsyncError while the stream is not done, aborting past the deadline.

/// A group of ranks exchanging Float32 buffers, NCCL's model: every rank calls the same collectives in the same order,
/// and a collective that cannot complete (a rank missing, ranks disagreeing on sizes) throws on every rank.
public protocol Communicator: Sendable {
    /// This rank, in `0..<size`.
    var rank: Int { get }
    /// The number of ranks.
    var size: Int { get }
    /// Every rank's `buffer` (the same count on every rank) concatenated in rank order: `size * buffer.count` floats.
    /// O(size * count).
    func allGather(_ buffer: [Float]) throws -> [Float]
    /// Returns once every rank has called it. O(size).
    func barrier() throws
    /// Fails the group (a rank that cannot go on): every rank's pending and later collectives throw `reason`. O(1).
    func abort(reason: String)
}

/// N ranks in one process exchanging host memory, one thread per rank: the communicator the CPU and the tests use.
/// A collective waits at most `timeout` seconds for the other ranks, then fails the whole group with a message naming
/// the ranks that never came; a rank that returns or throws without joining a collective fails it at once (so a slow
/// but valid run needs no short timeout); after any failure every collective on the group throws at once.
public final class InProcessGroup: @unchecked Sendable {  // mutable state only under `condition`
    /// The most ranks a group takes: each is a thread with an 8 MiB stack.
    public static let maxSize = 256
    /// The number of ranks.
    public let size: Int
    /// Seconds a rank waits in a collective for the others.
    public let timeout: Double
    private let condition = NSCondition()
    /// This round's arrivals by rank: the collective's name and the buffer sent.
    private var arrivals: [Int: (op: String, buffer: [Float])] = [:]
    /// Completed collectives; the result of the last one (kept until every rank came back for the next).
    private var round = 0
    private var result: [Float] = []
    private var failure: LineaError?
    /// Ranks whose body has returned: a collective they did not join can never complete.
    private var exited: Set<Int> = []

    /// A group of `size` ranks (>= 1) whose collectives time out after `timeout` seconds (> 0). O(1).
    public init(size: Int, timeout: Double = 3600) throws {
        guard (1...Self.maxSize).contains(size) else {
            throw LineaError.invalidArgument(argument: "ranks", expected: "1...\(Self.maxSize) (one thread each)", actual: "\(size)")
        }
        guard timeout > 0, timeout.isFinite else { throw LineaError.invalidArgument(argument: "timeout", expected: "a finite number of seconds > 0", actual: "\(timeout)") }
        (self.size, self.timeout) = (size, timeout)
    }

    /// The communicator of rank `rank` (in `0..<size`). O(1).
    public func communicator(rank: Int) throws -> InProcessCommunicator {
        guard (0..<size).contains(rank) else { throw LineaError.invalidArgument(argument: "rank", expected: "0..<\(size)", actual: "\(rank)") }
        return InProcessCommunicator(group: self, rank: rank)
    }

    /// Runs `body` on `size` threads, one per rank, and returns each rank's result in rank order (a rank that throws
    /// fails the group, so the others' collectives throw too instead of waiting). O(size) threads.
    public func run<R: Sendable>(_ body: @escaping @Sendable (InProcessCommunicator) throws -> R) -> [Result<R, any Error>] {
        let results = ResultSlots<R>(count: size)
        let done = DispatchGroup()
        for rank in 0..<size {
            done.enter()
            // A thread per rank, not GCD's pool: the ranks wait on each other, and a pool narrower than the group would
            // leave a rank unstarted until the others time out.
            let thread = Thread { [self] in
                let communicator = InProcessCommunicator(group: self, rank: rank)
                let result = Result { try body(communicator) }
                if case .failure(let error) = result { abort(reason: "rank \(rank) failed: \(error)") } else { exit(rank) }
                results.set(rank, result)
                done.leave()
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
        done.wait()
        return results.all()
    }

    /// Fails the group with `reason` (the first failure stays) and wakes every waiting rank. O(1).
    func abort(reason: String) {
        condition.lock()
        defer { condition.unlock() }
        if failure == nil { failure = .unavailable(what: "the \(size)-rank in-process group", reason: reason) }
        condition.broadcast()
    }

    /// Records that `rank`'s body returned; fails a collective the others are waiting in, which it can no longer join.
    /// O(1).
    private func exit(_ rank: Int) {
        condition.lock()
        defer { condition.unlock() }
        exited.insert(rank)
        if !arrivals.isEmpty { fail(returnedEarly(rank, op: arrivals.values.first!.op)) }
    }

    /// The error of a collective that rank `rank` left without joining. O(1).
    private func returnedEarly(_ rank: Int, op: String) -> LineaError {
        .unavailable(what: "\(op) (collective \(round)) of the \(size)-rank in-process group",
                     reason: "rank \(rank) returned without joining it")
    }

    /// One collective from `rank`: waits for every rank, checks that all called `op` with buffers of one size, and
    /// returns the buffers concatenated in rank order. O(size * count).
    func collective(rank: Int, op: String, _ buffer: [Float]) throws -> [Float] {
        condition.lock()
        defer { condition.unlock() }
        if let failure { throw failure }
        if let gone = exited.first {
            fail(returnedEarly(gone, op: op))
            throw failure!
        }
        let mine = round
        arrivals[rank] = (op, buffer)
        if arrivals.count == size {
            let sent = (0..<size).map { arrivals[$0]! }
            arrivals = [:]
            if Set(sent.map(\.op)).count > 1 {
                fail(.invalidArgument(argument: "collective \(mine)", expected: "the same collective on every rank",
                                      actual: sent.enumerated().map { "rank \($0.offset): \($0.element.op)" }.joined(separator: ", ")))
            } else if Set(sent.map(\.buffer.count)).count > 1 {
                fail(.invalidArgument(argument: "\(op) buffer (collective \(mine))", expected: "the same float count on every rank",
                                      actual: sent.enumerated().map { "rank \($0.offset): \($0.element.buffer.count)" }.joined(separator: ", ")))
            } else {
                result = sent.flatMap(\.buffer)
                round += 1
                condition.broadcast()
                return result
            }
        }
        let deadline = Date(timeIntervalSinceNow: timeout)
        while round == mine && failure == nil {
            if !condition.wait(until: deadline) && round == mine && failure == nil {
                let missing = (0..<size).filter { arrivals[$0] == nil }.map(String.init).joined(separator: ", ")
                fail(.unavailable(what: "\(op) (collective \(mine)) of the \(size)-rank in-process group",
                                  reason: "timed out after \(timeout) s waiting for rank(s) \(missing)"))
            }
        }
        if round != mine { return result }
        throw failure!
    }

    /// Records `error` as the group's failure and wakes every rank (called under the lock). O(1).
    private func fail(_ error: LineaError) {
        if failure == nil { failure = error }
        condition.broadcast()
    }
}

/// One rank of an `InProcessGroup`.
public struct InProcessCommunicator: Communicator {
    /// The group it belongs to.
    public let group: InProcessGroup
    /// This rank.
    public let rank: Int
    /// The group's size.
    public var size: Int { group.size }

    /// Every rank's buffer concatenated in rank order; throws on every rank when counts differ or a rank times out.
    /// O(size * count).
    public func allGather(_ buffer: [Float]) throws -> [Float] {
        try group.collective(rank: rank, op: "allGather", buffer)
    }

    /// Waits for every rank (or throws as `allGather`). O(size).
    public func barrier() throws {
        _ = try group.collective(rank: rank, op: "barrier", [])
    }

    /// Fails the group: every rank's pending and later collectives throw `reason`. O(1).
    public func abort(reason: String) { group.abort(reason: reason) }
}

/// Per-rank results written by the rank threads. O(1) per access.
private final class ResultSlots<R: Sendable>: @unchecked Sendable {  // guarded by `lock`
    private let lock = NSLock()
    private var slots: [Result<R, any Error>?]

    init(count: Int) { slots = Array(repeating: nil, count: count) }

    func set(_ i: Int, _ value: Result<R, any Error>) { lock.withLock { slots[i] = value } }

    func all() -> [Result<R, any Error>] { lock.withLock { slots.map { $0! } } }
}
