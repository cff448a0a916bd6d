// How the chunked CPU forms walk their heads. Inputs are [B, T, H, K]: one head's rows of a chunk lie H·K floats
// apart, and a worker that walks one head through the whole sequence reads them as a strided stream, which the
// hardware prefetchers serve poorly once the inputs no longer fit the last-level cache (measured 35-50% slower per
// token than one contiguous head). So each worker takes a group of neighbouring heads and steps them together,
// chunk by chunk: a chunk's rows of those heads are adjacent in memory and read as one stream. The heads walked are
// the value (state) heads, B·HV of them; with grouped value heads neighbours share their q and k rows.

/// One head's chunked walk: its workspace and state, advanced one chunk at a time.
protocol HeadWalk {
    /// Processes tokens `t0 ..< t0 + L` of this head (the chunks come in order).
    mutating func step(_ t0: Int, _ L: Int)
    /// Writes the final state back and frees the workspace.
    mutating func finish()
}

/// The input, output and state buffers of a chunked forward, shared by the workers (each writes disjoint rows).
struct ChunkBuffers: @unchecked Sendable {
    let q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>
    let g: UnsafePointer<Float>?, beta: UnsafePointer<Float>?
    let o: UnsafeMutablePointer<Float>, state: UnsafeMutablePointer<Float>
}

extension ChunkBuffers {
    /// Copies the q and k rows of tokens `t0 ..< t0 + L` of q/k head (b, `kh`) to `q` and `k` (L x K each): the vector
    /// gates read them several times, and in place their rows lie H·K floats apart (4 KiB at 8 heads of 128) and share
    /// a few cache sets. O(L·K).
    func packKeys(_ p: FastProblem, b: Int, t0: Int, L: Int, kh: Int, q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>) {
        let (K, ld, start) = (p.dims.K, p.dims.H * p.dims.K, p.keyOffset(b, t0, kh))
        for i in 0..<L {
            (q + i * K).update(from: self.q + start + i * ld, count: K)
            (k + i * K).update(from: self.k + start + i * ld, count: K)
        }
    }

    /// The chunk's cumulative per-channel log gates `G_i = g_{t0} + ... + g_{t0+i}` of value head (b, h) in Float64
    /// (differences of long sums keep their digits), L x K. O(L·K).
    func cumulativeVectorGates(_ p: FastProblem, b: Int, t0: Int, L: Int, h: Int, into G: UnsafeMutablePointer<Double>) {
        let K = p.dims.K, gp = g! + p.offset(b, t0, h, width: K)
        for c in 0..<K { G[c] = Double(gp[c]) }
        for i in 1..<L { RecurrenceSIMD.accumulate(G + i * K, G + (i - 1) * K, gp + i * p.dims.HV * K, K) }
    }
}

/// A head walk's scratch: `floats` Float32 values, of which `[stateOffset, stateOffset + K·V)` hold the head's state
/// while the chunks run, and `gates` Float64 values; loads the state from the shared buffer, `release` stores it back.
struct HeadWorkspace {
    let work: UnsafeMutablePointer<Float>
    let G: UnsafeMutablePointer<Double>
    let state: UnsafeMutablePointer<Float>
    private let shared: UnsafeMutablePointer<Float>
    private let stateCount: Int

    init(_ buffers: ChunkBuffers, bh: Int, K: Int, V: Int, floats: Int, stateOffset: Int, gates: Int) {
        work = .allocate(capacity: floats)
        G = .allocate(capacity: gates)
        (state, shared, stateCount) = (work + stateOffset, buffers.state + bh * K * V, K * V)
        state.update(from: shared, count: stateCount)
    }

    /// Writes the state back and frees the scratch.
    func release() {
        shared.update(from: state, count: stateCount)
        work.deallocate()
        G.deallocate()
    }
}

extension Recurrence {
    /// Most heads a worker steps together: enough for a whole row at H = 8, few enough that their workspaces
    /// (about 130 KiB each at K = V = 64, chunk 64) stay in L2.
    static let headsPerGroup = 8

    /// Walks `count` value heads (b·HV + hv) through `T` tokens in chunks of `C`: workers take groups of neighbouring heads
    /// (at least one group per thread) and step each group's heads chunk by chunk. O(count · T / C) steps.
    static func walkHeads<W: HeadWalk>(count: Int, T: Int, chunk C: Int, _ make: @Sendable @escaping (Int) -> W) {
        let groups = headGroups(count)
        Parallel.forEach(groups) { group in
            var walks = (group * count / groups ..< (group + 1) * count / groups).map(make)
            var t0 = 0
            while t0 < T {
                let L = min(C, T - t0)
                for i in walks.indices { walks[i].step(t0, L) }
                t0 += L
            }
            for i in walks.indices { walks[i].finish() }
        }
    }

    /// How many groups `walkHeads` cuts `count` heads into.
    static func headGroups(_ count: Int) -> Int {
        max((count + headsPerGroup - 1) / headsPerGroup, min(Parallel.threadCount, count))
    }

    /// Most head walks (each with its workspace) alive at once while `walkHeads` runs `count` heads. O(1).
    static func liveHeadWalks(_ count: Int) -> Int {
        let groups = headGroups(count)
        return min(count, min(groups, Parallel.threadCount) * ((count + groups - 1) / groups))
    }
}
