import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Allocation of large result buffers.
///
/// A fresh buffer of many MiB comes straight from the kernel, and its first touch costs one page fault per 4 KiB:
/// measured on the 2-core development VM, zeroing a new 128 MiB buffer took 100–170 ms with 4 KiB pages against
/// 6–8 ms for a buffer already touched, and 20–30 ms with transparent huge pages. That cost grows with T and bent
/// the chunked recurrences' time exponent upwards, so large outputs ask for huge pages and are zeroed in parallel.
enum Allocation {
    /// Buffers of at least this many bytes are advised to use transparent huge pages (Linux, `madvise` mode).
    static let hugePageThreshold = 4 << 20

    /// `count` zeros, like `[Float](repeating: 0, count:)`, with huge pages advised for large buffers and the
    /// zeroing (hence the first-touch page faults) spread over the worker threads. O(count).
    static func zeros(_ count: Int) -> [Float] {
        let bytes = count * MemoryLayout<Float>.stride
        guard bytes >= hugePageThreshold else { return [Float](repeating: 0, count: count) }
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            zeroFill(UnsafeMutableRawPointer(buffer.baseAddress!), bytes: bytes)
            initialized = count
        }
    }

    /// Zeroes `bytes` fresh bytes at `base`: huge pages advised and the work (hence the first-touch page faults)
    /// spread over the worker threads when large. O(bytes).
    static func zeroFill(_ base: UnsafeMutableRawPointer, bytes: Int) {
        guard bytes >= hugePageThreshold else {
            base.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
            return
        }
        adviseHugePages(base, bytes: bytes)
        let block = 2 << 20  // bytes per work item: one huge page
        let target = SendablePointer(base.assumingMemoryBound(to: UInt8.self))
        Parallel.forEach((bytes + block - 1) / block) { i in
            let start = i * block
            (target.base + start).initialize(repeating: 0, count: min(block, bytes - start))
        }
    }

    /// Advises the kernel to back the whole pages inside `[start, start + bytes)` with transparent huge pages;
    /// a no-op where that is not available. O(1).
    static func adviseHugePages(_ start: UnsafeMutableRawPointer, bytes: Int) {
        #if os(Linux)
        let page = 4096
        let first = (Int(bitPattern: start) + page - 1) & ~(page - 1)
        let end = (Int(bitPattern: start) + bytes) & ~(page - 1)
        if end > first, let p = UnsafeMutableRawPointer(bitPattern: first) {
            _ = madvise(p, end - first, MADV_HUGEPAGE)
        }
        #endif
    }
}

/// Freed host tensor buffers of 64 KiB and more, kept by size for the next allocation of that size (an eighth of the
/// memory budget in all at most, between 64 MiB and 2 GiB): a decode step allocates the same few sizes every token
/// (recurrent states, logits) and a prefill the same activations every layer, and glibc hands such buffers back to
/// the kernel, so each reuse paid a page fault and a kernel zero-fill per page (mamba2 130M decode measured 82 -> 90
/// tokens/s with malloc's trimming off; its 4096-token prefill spent 23% of its time in the kernel's page clearing
/// with a 64 MiB cache).
final class HostBuffers: @unchecked Sendable {  // every field is touched under `lock`
    static let shared = HostBuffers()
    /// The smallest size kept, and the most bytes kept in all.
    static let minimum = 64 << 10, limit = min(max(64 << 20, MemoryBudget.limit / 8), 2 << 30)

    private let lock = NSLock()
    private var kept: [Int: [UInt]] = [:]
    private var bytes = 0

    /// A kept buffer of exactly `byteCount` bytes (64-byte aligned, contents undefined), or nil. O(1).
    func take(_ byteCount: Int) -> UnsafeMutableRawPointer? {
        guard byteCount >= Self.minimum else { return nil }
        lock.lock()
        defer { lock.unlock() }
        guard let address = kept[byteCount]?.popLast() else { return nil }
        bytes -= byteCount
        return UnsafeMutableRawPointer(bitPattern: address)
    }

    /// Keeps the `posix_memalign` buffer at `address` for reuse, or frees it when it is small or the cache is full. O(1).
    func give(_ address: UInt, byteCount: Int) {
        if byteCount >= Self.minimum {
            lock.lock()
            defer { lock.unlock() }
            if bytes + byteCount <= Self.limit {
                kept[byteCount, default: []].append(address)
                bytes += byteCount
                return
            }
        }
        free(UnsafeMutableRawPointer(bitPattern: address))
    }
}
