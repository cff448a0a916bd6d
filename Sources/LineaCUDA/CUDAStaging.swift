import Foundation
import Linea

/// Host-to-device uploads through page-locked (pinned) staging buffers: a large copy goes in slices through two
/// pinned slots, each slice copied on the host while the previous one crosses PCIe, and the call returns once the
/// last slice is queued (the source may change then; nothing waits for the device). A pageable `cuMemcpyHtoDAsync`
/// would instead stage through the driver's own bounce buffer, synchronously and at a fraction of the bandwidth.
/// Copies below `directBytes` skip the staging (the driver's path is as fast for them). Thread-safe.
final class CUDAStaging: @unchecked Sendable {
    /// Bytes per slot.
    static let slotBytes = 8 << 20
    /// Copies smaller than this go straight from pageable memory.
    static let directBytes = 256 << 10

    private let context: CUDAContext
    private let lock = NSLock()
    private var slots: [(memory: UnsafeMutableRawPointer, done: CUDAEvent)] = []
    private var next = 0

    init(context: CUDAContext) { self.context = context }

    deinit {
        _ = context.driver.cuCtxSetCurrent(context.context)
        for slot in slots {
            _ = try? slot.done.synchronize()
            _ = context.driver.cuMemFreeHost(slot.memory)
        }
    }

    /// Queues a copy of `byteCount` bytes at `source` (host) to `destination` (device) on the context's stream. O(bytes).
    func upload(from source: UnsafeRawPointer, to destination: UInt64, byteCount: Int) throws {
        let d = context.driver
        guard byteCount >= Self.directBytes else {
            return try d.check(d.cuMemcpyHtoDAsync(destination, source, byteCount, context.stream), "cuMemcpyHtoDAsync_v2")
        }
        lock.lock()
        defer { lock.unlock() }
        try allocateSlots()
        var offset = 0
        while offset < byteCount {
            let n = min(Self.slotBytes, byteCount - offset)
            let slot = slots[next]
            next = (next + 1) % slots.count
            try slot.done.synchronize()  // its previous slice has crossed
            slot.memory.copyMemory(from: source + offset, byteCount: n)
            try d.check(d.cuMemcpyHtoDAsync(destination + UInt64(offset), slot.memory, n, context.stream), "cuMemcpyHtoDAsync_v2")
            try slot.done.record()
            offset += n
        }
    }

    private func allocateSlots() throws {
        guard slots.isEmpty else { return }
        try context.makeCurrent()
        for _ in 0..<2 {
            var memory: UnsafeMutableRawPointer?
            try context.driver.check(context.driver.cuMemAllocHost(&memory, Self.slotBytes), "cuMemAllocHost_v2(\(formatBytes(Self.slotBytes)))")
            slots.append((memory!, try CUDAEvent(context: context)))
        }
    }
}
