/// Where a tensor's memory lives: the host, or one CUDA GPU by ordinal.
public enum Device: Hashable, Sendable, CustomStringConvertible {
    /// Host memory; the CPU backend is always there.
    case cpu
    /// CUDA device `n` (0-based); usable once LineaCUDA registered its backend.
    case cuda(Int)

    /// `cpu` or `cuda:n`.
    public var description: String {
        switch self {
        case .cpu: return "cpu"
        case let .cuda(n): return "cuda:\(n)"
        }
    }

    /// Parses `cpu`, `cuda` (device 0) or `cuda:n`; nil for anything else. O(1).
    public init?(name: String) {
        switch name.lowercased() {
        case "cpu": self = .cpu
        case "cuda", "gpu": self = .cuda(0)
        default:
            guard name.lowercased().hasPrefix("cuda:"), let n = Int(name.dropFirst(5)), n >= 0 else { return nil }
            self = .cuda(n)
        }
    }
}
