import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// How much memory one call may allocate. Every entry point sums the bytes of the outputs, state and scratch it is
/// about to allocate (in Float64, so no product of caller sizes can overflow) and throws
/// `LineaError.overMemoryLimit` above `limit`, before touching memory: a small file or option cannot ask for more
/// than the machine has, and an allocation Swift would trap on becomes an error.
public enum MemoryBudget {
    /// One buffer a call will allocate: its name and shape for the message, and the bytes per element.
    public struct Buffer: Sendable {
        /// The tensor or scratch name shown in errors (`o`, `state`, ...).
        public let name: String
        /// Extents; their product times `elementBytes` is the size.
        public let shape: [Int]
        /// Bytes per element: 4 for Float32, 8 for Float64.
        public let elementBytes: Int

        /// A buffer of `shape` elements of `elementBytes` bytes each (Float32 by default).
        public init(_ name: String, _ shape: [Int], elementBytes: Int = 4) {
            self.name = name
            self.shape = shape
            self.elementBytes = elementBytes
        }

        /// Size in bytes, in Float64 so that it cannot overflow. O(rank).
        var bytes: Double { shape.reduce(Double(elementBytes)) { $0 * Double(max($1, 0)) } }

        var label: String {
            let type = elementBytes == 4 ? "Float32" : elementBytes == 8 ? "Float64" : "\(elementBytes)-byte"
            return "\(name): \(shape) \(type)"
        }
    }

    /// The environment variable that sets the default limit, e.g. `LINEA_MAX_MEMORY=32G`.
    public static let environmentVariable = "LINEA_MAX_MEMORY"

    /// 80% of physical memory, or of the container's cgroup limit when lower (8 GiB when neither can be read):
    /// large enough for any run that fits the machine, small enough that the kernel's OOM killer does not come first.
    public static let physicalDefault: Int = {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), pageSize = sysconf(Int32(_SC_PAGESIZE))
        var bytes = pages > 0 && pageSize > 0 ? Double(pages) * Double(pageSize) : Double(10 << 30)
        for path in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
            // "max" (no limit) does not parse; a v1 "no limit" is a huge number, above physical memory.
            if let text = try? String(contentsOfFile: path, encoding: .utf8),
               let limit = Double(text.trimmingCharacters(in: .whitespacesAndNewlines)), limit > 0 {
                bytes = min(bytes, limit)
            }
        }
        return Int(bytes * 0.8)
    }()

    /// The limit until one is set: `LINEA_MAX_MEMORY` when it parses (see `parseBytes`), else `physicalDefault`.
    private static let storage = LockedValue<Int>(
        ProcessInfo.processInfo.environment[environmentVariable].flatMap(parseBytes) ?? physicalDefault)

    /// Bytes one call may allocate. Default: `LINEA_MAX_MEMORY` when it parses (see `parseBytes`), else
    /// `physicalDefault`. Settable at any time, e.g. from a command-line flag.
    public static var limit: Int {
        get { storage.value }
        set { storage.value = newValue }
    }

    /// Parses a byte count: a non-negative number with an optional binary unit, `512M`, `32G`, `1.5GiB`, `4096`,
    /// `64k`, `2T` (K, M, G, T are powers of 1024; a trailing `B` or `iB` is accepted). Nil when malformed, zero or
    /// not below 2^63. O(length).
    public static func parseBytes(_ text: String) -> Int? {
        var s = text.trimmingCharacters(in: .whitespaces).uppercased()
        if s.hasSuffix("IB") { s.removeLast(2) } else if s.hasSuffix("B") { s.removeLast() }
        var multiplier = 1.0
        if let unit = s.last, let power = ["K": 1, "M": 2, "G": 3, "T": 4][String(unit)] {
            multiplier = pow(1024, Double(power))
            s.removeLast()
        }
        guard !s.isEmpty, s.allSatisfy({ $0.isNumber || $0 == "." }), let number = Double(s) else { return nil }
        let bytes = (number * multiplier).rounded(.down)
        guard bytes.isFinite, bytes >= 1, bytes < 0x1p63 else { return nil }
        return Int(bytes)
    }

    /// Throws `LineaError.overMemoryLimit` naming the buffers when their total exceeds `limit`, and
    /// `LineaError.unavailable` when the system cannot provide that much memory now (checked with `malloc` for
    /// totals of 64 MiB and more, so a refused allocation is an error rather than a trap). O(buffers).
    public static func check(_ buffers: [Buffer]) throws {
        let total = buffers.reduce(0) { $0 + $1.bytes }
        let limit = self.limit
        let what = buffers.filter { $0.bytes > 0 }.map(\.label).joined(separator: " + ")
        guard total <= Double(limit) else {
            throw LineaError.overMemoryLimit(what: what, neededBytes: total < 0x1p63 ? Int(total) : nil, limitBytes: limit)
        }
        if total >= Double(64 << 20) {
            guard let probe = malloc(Int(total)) else {
                throw LineaError.unavailable(what: "memory for \(what) (\(formatBytes(Int(total))))",
                                             reason: "the system refused the allocation")
            }
            free(probe)
        }
    }
}

/// A value behind a lock, for settings read from worker threads.
final class LockedValue<Value: Sendable>: @unchecked Sendable {
    private var stored: Value
    private let lock = NSLock()

    /// Wraps `value`.
    init(_ value: Value) { stored = value }

    /// The current value.
    var value: Value {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); defer { lock.unlock() }; stored = newValue }
    }

    /// Changes the value under the lock.
    func update(_ body: (inout Value) -> Void) {
        lock.lock()
        defer { lock.unlock() }
        body(&stored)
    }
}
