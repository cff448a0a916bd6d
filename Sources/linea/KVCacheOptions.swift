import ArgumentParser
import Foundation
import Linea

/// The KV-cache sizes shared by `linea generate --kv-cache` and `linea stream --cache`; each defaults per cache.
struct KVCacheOptions: ParsableArguments {
    @Option(help: "Attention sinks: the first tokens always kept (sink-window, streaming-vlm, topk; default 4).") var sinks: Int?
    @Option(help: "Recent tokens kept (sink-window: default 4096; streaming-vlm: text tokens, 2048; think: keys kept whole, 32; topk: 64).")
    var window: Int?
    @Option(help: "streaming-vlm: vision tokens kept (default 1024).") var visionWindow: Int?
    @Option(help: "think: fraction of key channels pruned, in [0, 1) (default 0.5).") var pruneRatio: Double?
    @Option(help: "topk: pages read per decode step (default 32).") var pages: Int?
    @Option(help: "topk: tokens per page (default 16).") var pageSize: Int?

    /// The cache `name` (given as `flag`) with these sizes; a usage error names the flag of an unknown name, a size out
    /// of range (a window smaller than the sinks, ...), or a size the cache does not use. O(1).
    func config(name: String, flag: String) throws -> KVCacheConfig {
        let uses: [(String, Bool, Set<String>)] = [
            ("--sinks", sinks != nil, ["sink-window", "streaming-vlm", "topk"]), ("--window", window != nil, ["sink-window", "streaming-vlm", "think", "topk"]),
            ("--vision-window", visionWindow != nil, ["streaming-vlm"]), ("--prune-ratio", pruneRatio != nil, ["think"]),
            ("--pages", pages != nil, ["topk"]), ("--page-size", pageSize != nil, ["topk"]),
        ]
        guard KVCacheConfig.names.contains(name) else { throw validationErrorList(argument: flag, got: name, known: KVCacheConfig.names) }
        for (option, given, caches) in uses where given && !caches.contains(name) {
            throw ValidationError("\(option): only with \(flag) \(caches.sorted().joined(separator: " or ")), got \(flag) \(name)")
        }
        do {
            return try KVCacheConfig(name: name, sinks: sinks, window: window, visionWindow: visionWindow, pruneRatio: pruneRatio, pages: pages,
                                     pageSize: pageSize)
        } catch let LineaError.invalidArgument(argument, expected, actual) {
            let flags = ["sinks": "--sinks", "window": "--window", "vision window": "--vision-window", "prune ratio": "--prune-ratio",
                         "pages": "--pages", "page size": "--page-size"]
            throw ValidationError("\(flags[argument] ?? argument): expected \(expected.replacingOccurrences(of: "sinks", with: "--sinks")), got \(actual)")
        }
    }
}
