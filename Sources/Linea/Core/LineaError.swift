import Foundation

/// Every error Linea throws: each names the argument, what was expected and what came.
public enum LineaError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A tensor argument has the wrong shape or rank.
    case shapeMismatch(argument: String, expected: String, actual: String)
    /// A scalar or option argument is out of its valid range.
    case invalidArgument(argument: String, expected: String, actual: String)
    /// The work would need more memory than the stated limit (e.g. the materialized reference).
    case tooLarge(what: String, limitBytes: Int, neededBytes: Int)
    /// A file could not be read or written, or its contents are malformed.
    case file(path: String, problem: String)
    /// A requested feature or backend is not available here.
    case unavailable(what: String, reason: String)
    /// The buffers a call would allocate exceed `MemoryBudget.limit` (`neededBytes` nil: the size overflows Int).
    case overMemoryLimit(what: String, neededBytes: Int?, limitBytes: Int)
    /// An output holds NaN or an infinity at `index` (a multi-index into the tensor's shape).
    case nonFinite(tensor: String, value: Float, index: [Int], hint: String)

    public var description: String {
        switch self {
        case let .shapeMismatch(argument, expected, actual):
            return "\(argument): expected shape \(expected), got \(actual)"
        case let .invalidArgument(argument, expected, actual):
            return "\(argument): expected \(expected), got \(actual)"
        case let .tooLarge(what, limit, needed):
            return "\(what) would need \(formatBytes(needed)), above the limit of \(formatBytes(limit))"
        case let .file(path, problem):
            return "\(path): \(problem)"
        case let .unavailable(what, reason):
            return "\(what) is unavailable: \(reason)"
        case let .overMemoryLimit(what, needed, limit):
            let size = needed.map(formatBytes) ?? "more than 8 EiB (its size overflows a 64-bit count)"
            return "\(what) needs \(size), over the memory limit \(formatBytes(limit)) (raise it with --max-memory or LINEA_MAX_MEMORY)"
        case let .nonFinite(tensor, value, index, hint):
            return "\(tensor): expected finite values, got \(value) at index \(index)\(hint.isEmpty ? "" : "; " + hint)"
        }
    }
}

/// Formats a byte count with a binary unit, e.g. `1.5 GiB`.
public func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024, unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
}
