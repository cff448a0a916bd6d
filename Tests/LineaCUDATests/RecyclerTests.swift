import LineaCUDA
import Testing

/// The host-side reuse of freed pool blocks (no GPU needed): exact sizes only, last kept first, a byte limit past which
/// the caller frees, and a drain that hands every kept block back once.
struct RecyclerTests {
    @Test func keepsExactSizesUpToItsLimitAndDrainsOnce() {
        let recycler = CUDADeviceBackend.Recycler(limit: 2048)
        #expect(recycler.take(512) == nil)
        #expect(recycler.keep(0x1000, 512) && recycler.keep(0x2000, 512) && recycler.keep(0x3000, 1024))
        #expect(!recycler.keep(0x4000, 512))  // 2048 kept: the caller frees this one
        #expect(recycler.take(1536) == nil)
        #expect(recycler.take(512) == 0x2000 && recycler.take(512) == 0x1000 && recycler.take(512) == nil)
        #expect(recycler.keep(0x5000, 512))  // room again after the takes
        var freed: [UInt64] = []
        recycler.drain { freed.append($0) }
        #expect(freed.sorted() == [0x3000, 0x5000])
        recycler.drain { freed.append($0) }
        #expect(freed.count == 2 && recycler.take(1024) == nil)
    }
}
