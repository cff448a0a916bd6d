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
