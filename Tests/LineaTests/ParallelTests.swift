import Foundation
import Linea
import Testing

/// Counts the items of a `forEachStatic` loop: item `i` adds 1 to its own slot (slots are disjoint).
private struct CountingItems: ParallelItems, @unchecked Sendable {
    let slots: UnsafeMutablePointer<Int>
    func run(_ item: Int) { slots[item] += 1 }
}

@Suite struct ParallelTests {
    /// Every item of every loop runs exactly once: many short loops back to back (the helpers spin, park and claim
    /// runs of items against the calling thread), loops nested in items (run on the item's thread), and loops from two
    /// threads at once (one of them on its own thread).
    @Test func everyItemRunsOnce() {
        let slots = UnsafeMutablePointer<Int>.allocate(capacity: 64)
        defer { slots.deallocate() }
        for round in 0..<20_000 {
            let count = round % 64 + 1
            slots.initialize(repeating: 0, count: 64)
            Parallel.forEachStatic(count, CountingItems(slots: slots))
            let wrong = (0..<64).filter { slots[$0] != ($0 < count ? 1 : 0) }.map { "slot \($0) = \(slots[$0])" }
            #expect(wrong.isEmpty, "static loop \(round) of \(count) items: \(wrong)")
        }
        let outer = UnsafeMutablePointer<Int>.allocate(capacity: 8 * 16)
        defer { outer.deallocate() }
        outer.initialize(repeating: 0, count: 8 * 16)
        let box = SendablePointer(outer)
        Parallel.forEach(8) { i, worker in
            #expect((0..<Parallel.threadCount).contains(worker))
            Parallel.forEachStatic(16, CountingItems(slots: box.base + 16 * i))
        }
        #expect((0..<(8 * 16)).allSatisfy { outer[$0] == 1 }, "nested loops")
        let pair = UnsafeMutablePointer<Int>.allocate(capacity: 2 * 1000)
        defer { pair.deallocate() }
        pair.initialize(repeating: 0, count: 2 * 1000)
        let pairBox = SendablePointer(pair)
        DispatchQueue.concurrentPerform(iterations: 2) { t in
            for _ in 0..<200 { Parallel.forEachStatic(1000, CountingItems(slots: pairBox.base + 1000 * t)) }
        }
        #expect((0..<2000).allSatisfy { pair[$0] == 200 }, "loops from two threads")
    }
}
