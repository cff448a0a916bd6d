import Foundation

/// Compiled kernel images on disk: `$LINEA_CUDA_CACHE` or `$XDG_CACHE_HOME/linea/cuda` or `~/.cache/linea/cuda`,
/// one `<key>.cubin` per (source, headers, options, architecture, NVRTC version). Failures to read or write are ignored
/// (the kernel is simply compiled again).
package enum KernelCache {
    /// FNV-1a 64-bit hash of `bytes` (continuing from `seed`); O(n).
    public static func fnv1a64<S: Sequence>(_ bytes: S, seed: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 where S.Element == UInt8 {
        var hash = seed
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
    }

    /// Cache key of a source compiled with `parts` (options, versions): FNV-1a 64 over all, NUL-separated.
    public static func key(source: String, parts: [String]) -> UInt64 {
        key(sourceHash: fnv1a64(source.utf8), parts: parts)
    }

    /// The same key from the source's FNV-1a 64 hash (`fnv1a64(source.utf8)`), for callers that keep it. O(parts).
    public static func key(sourceHash: UInt64, parts: [String]) -> UInt64 {
        var hash = sourceHash
        for part in parts { hash = fnv1a64([0] + Array(part.utf8), seed: hash) }
        return hash
    }

    /// The cache folder (not created until something is stored).
    public static var directory: URL { directory(environment: ProcessInfo.processInfo.environment) }

    /// The cache folder that the environment `env` names. O(1).
    package static func directory(environment env: [String: String]) -> URL {
        if let dir = env["LINEA_CUDA_CACHE"], !dir.isEmpty { return URL(fileURLWithPath: dir) }
        let base = env["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0) }
            ?? URL(fileURLWithPath: NSHomeDirectory()).appendingPathComponent(".cache")
        return base.appendingPathComponent("linea").appendingPathComponent("cuda")
    }

    /// The file that holds the image for `key` in `folder` (the cache folder unless given).
    public static func path(key: UInt64, in folder: URL = directory) -> URL {
        folder.appendingPathComponent(String(format: "%016llx.cubin", key))
    }

    /// The stored image for `key`, or nil; O(size).
    public static func load(key: UInt64, in folder: URL = directory) -> [UInt8]? {
        guard let data = try? Data(contentsOf: path(key: key, in: folder)), !data.isEmpty else { return nil }
        return [UInt8](data)
    }

    /// Stores `image` under `key`, O(size) (write to a temporary file, then rename, so readers never see half a file).
    public static func store(key: UInt64, image: [UInt8], in folder: URL = directory) {
        let fm = FileManager.default
        let target = path(key: key, in: folder)
        do {
            try fm.createDirectory(at: folder, withIntermediateDirectories: true)
            let temp = folder.appendingPathComponent(".\(key)-\(ProcessInfo.processInfo.processIdentifier).tmp")
            try Data(image).write(to: temp)
            if fm.fileExists(atPath: target.path) { try? fm.removeItem(at: target) }
            try fm.moveItem(at: temp, to: target)
        } catch {
            // A read-only or missing home: keep going with the in-memory cache.
        }
    }
}
