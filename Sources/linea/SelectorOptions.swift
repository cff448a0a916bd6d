import ArgumentParser
import Foundation
import Linea

/// `linea op block_sparse --selector NAME`: the block mask chosen from q and k (XAttention, MInference, top-k) instead of
/// read from the inputs; the mask and its density are written beside o and lse, the error against dense attention printed.
struct SelectorOptions: ParsableArguments {
    @Option(help: "block_sparse without a mask input: choose the mask from q and k with xattention, minference or topk (writes mask and density too).")
    var selector: String?
    @Option(help: "block_sparse: square block size of the mask (default 64; --set block_rows/block_keys for other shapes).")
    var blockSize: Int?
    @Option(help: "xattention: keep the smallest set of blocks per query block reaching this share of its score, in (0, 1].")
    var tau: Double = 0.9
    @Option(help: "xattention: stride of the antidiagonal scoring (divides the block size).") var xattnStride: Int = 8
    @Option(help: "topk, minference block-sparse: key blocks kept per query block (plus the diagonal).") var topK: Int = 8
    @Option(help: "minference: a-shape, vertical-slash or block-sparse, one for every head or comma-separated one per head; or search (each head takes the one keeping most of its last 64 queries' attention).")
    var pattern: String = "search"
    @Option(help: "minference a-shape: sink keys.") var sinks: Int = 128
    @Option(help: "minference a-shape: local window of keys before each query.") var local: Int = 1024
    @Option(help: "minference vertical-slash: key columns kept (at least 30, as MInference).") var vertical: Int = 1000
    @Option(help: "minference vertical-slash: diagonals kept (at least 50, as MInference; T == S only).") var slash: Int = 6096
    @Option(help: "block_sparse --selector: run the selector N times and print the last run's time (2: a time without the kernels' first load).")
    var selectorRuns: Int = 1
    @Flag(inversion: .prefixedNo, help: "block_sparse --selector: print the error against dense attention (run on the CPU, O(T^2): skip it for long sequences).")
    var selectorError = true

    static let names = ["xattention", "minference", "topk"]

    func validate() throws {
        if let selector, !Self.names.contains(selector) { throw validationErrorList(argument: "--selector", got: selector, known: Self.names) }
        if let blockSize, blockSize < 1 { throw ValidationError("--block-size: expected >= 1, got \(blockSize)") }
        guard tau > 0, tau <= 1 else { throw ValidationError("--tau: expected a threshold in (0, 1], got \(tau)") }
        guard xattnStride >= 1 else { throw ValidationError("--xattn-stride: expected >= 1, got \(xattnStride)") }
        guard topK >= 1 else { throw ValidationError("--top-k: expected >= 1, got \(topK)") }
        guard selectorRuns >= 1 else { throw ValidationError("--selector-runs: expected >= 1, got \(selectorRuns)") }
        if selector == "minference" { _ = try patterns() }
    }

    /// The MInference patterns `--pattern` names (nil: search over all three). O(heads).
    func patterns() throws -> [MInferencePattern]? {
        guard pattern != "search" else { return nil }
        return try pattern.split(separator: ",").map { name in
            switch name.trimmingCharacters(in: .whitespaces) {
            case "a-shape": return .aShape(sinks: sinks, window: local)
            case "vertical-slash": return .verticalSlash(vertical: vertical, slash: slash)
            case "block-sparse": return .blockSparse(topK: topK)
            default: throw validationErrorList(argument: "--pattern", got: String(name), known: ["a-shape", "vertical-slash", "block-sparse", "search"])
            }
        }
    }

    /// Runs the selector (nil without `--selector`): on host q and k, or, given `device` copies on a GPU, its scoring
    /// kernels there and the host's selection of the downloaded scores. O(the selector).
    func select(q: Tensor, k: Tensor, device: (q: DeviceTensor, k: DeviceTensor)? = nil, options: OpOptions) throws -> BlockSelection? {
        guard let selector else { return nil }
        let attention = AttentionOptions(scale: options.scale, causal: options.causal, window: options.window)
        let gpu = device.flatMap { $0.q.device == .cpu ? nil : $0 }
        switch selector {
        case "xattention":
            if let gpu { return try BlockSelector.xAttention(q: gpu.q, k: gpu.k, blockSize: blockSize ?? 64, stride: xattnStride, tau: tau, options: attention) }
            return try BlockSelector.xAttention(q: q, k: k, blockSize: blockSize ?? 64, stride: xattnStride, tau: tau, options: attention)
        case "topk":
            if let gpu { return try BlockSelector.topK(q: gpu.q, k: gpu.k, blockSize: blockSize ?? 64, topK: topK, options: attention) }
            return try BlockSelector.topK(q: q, k: k, blockSize: blockSize ?? 64, topK: topK, options: attention)
        default:
            let given = try patterns()
            // Vertical-slash's key sets need T == S: the search leaves it out otherwise (naming it still errors).
            let candidates: [MInferencePattern] = [.aShape(sinks: sinks, window: local)]
                + (q.shape[1] == k.shape[1] ? [.verticalSlash(vertical: vertical, slash: slash)] : []) + [.blockSparse(topK: topK)]
            if let gpu {
                return try BlockSelector.mInference(q: gpu.q, k: gpu.k, blockSize: blockSize ?? 64, patterns: given ?? candidates,
                                                    search: given == nil, options: attention)
            }
            return try BlockSelector.mInference(q: q, k: k, blockSize: blockSize ?? 64, patterns: given ?? candidates, search: given == nil,
                                                options: attention)
        }
    }
}
