import Foundation

extension NeighborhoodAttention {
    /// The fused form on host tensors: see `fused(_:_:o:lse:)`. O(B·Hq·N·box·(D + Dv)).
    static func fused(_ p: NeighborhoodProblem, q: Tensor, k: Tensor, v: Tensor) throws -> AttentionOutput {
        var o = [Float](repeating: 0, count: p.B * p.N * p.Hq * p.Dv)
        var lse = [Float](repeating: -.infinity, count: p.B * p.N * p.Hq)
        if !o.isEmpty {
            try q.withUnsafeBufferPointer { qb in try k.withUnsafeBufferPointer { kb in try v.withUnsafeBufferPointer { vb in
                try o.withUnsafeMutableBufferPointer { ob in try lse.withUnsafeMutableBufferPointer { lb in
                    try fused(p, AttentionPointers(qb, kb, vb), o: ob.baseAddress!, lse: lb.baseAddress!)
                } }
            } } }
        }
        let heads = [p.B] + p.spatial + [p.Hq]
        return AttentionOutput(o: Tensor(uncheckedShape: heads + [p.Dv], scalars: o), lse: Tensor(uncheckedShape: heads, scalars: lse))
    }

    /// The fused form on packed Float32 buffers (`q [B,N,Hq,D]`, `k [B,N,Hkv,D]`, `v [B,N,Hkv,Dv]`, N the flattened
    /// grid); writes every row of `o [B,N,Hq,Dv]` and `lse [B,N,Hq]`.
    ///
    /// Queries are cut into boxes inside one dilation group (per axis a run of group coordinates); since every axis's
    /// window bounds grow with the query, a box's neighborhoods together cover one box of keys, which is gathered into
    /// contiguous rows once for a few kv heads (a token's heads lie side by side) and attended to by each of their query
    /// heads in key tiles of the flash kernels (`Sᵀ = K·Qᵀ`, masked to each query's own window, online softmax, `P·V`).
    /// Work items are (batch, box, group of kv heads). Throws when the workers' buffers exceed `MemoryBudget`.
    /// O(B·Hq·N·box keys/box queries·(D + Dv)) time: linear in N for a fixed kernel.
    static func fused(_ p: NeighborhoodProblem, _ ptrs: AttentionPointers, o: UnsafeMutablePointer<Float>,
                      lse: UnsafeMutablePointer<Float>) throws {
        let kernels = CPUKernels.current
        let plan = NeighborhoodPlan(p, kernels)
        let boxes = p.B * plan.boxes.count
        // Kv heads packed and attended per item: as many as keep their packed boxes within half a 1 MiB L2 (each head's
        // products sweep its box several times), and one when the boxes alone are too few to keep every core busy.
        let boxBytes = (plan.boxKeys + kernels.rows) * (p.D + roundUp(p.Dv, kernels.columns)) * MemoryLayout<Float>.size
        let headsPerItem = boxes >= 4 * Parallel.threadCount ? min(p.Hkv, max(1, (512 << 10) / boxBytes)) : 1
        try MemoryBudget.check(NeighborhoodScratch.buffers(p, plan, kernels, heads: headsPerItem))
        let scratches = (0..<Parallel.threadCount).map { _ in NeighborhoodScratch(p, plan, kernels, heads: headsPerItem) }
        defer { scratches.forEach { $0.free() } }
        let out = SendablePointer(o), lseOut = SendablePointer(lse)
        let parts = (p.Hkv + headsPerItem - 1) / headsPerItem
        Parallel.forEach(boxes * parts) { item, worker in
            let hk0 = item % parts * headsPerItem
            let (b, box) = (item / parts).quotientAndRemainder(dividingBy: plan.boxes.count)
            let (i0, i1, i2) = plan.boxes[box]
            attendBox(p, plan, ptrs, b: b, kvHeads: hk0..<min(p.Hkv, hk0 + headsPerItem),
                      tiles: (plan.axes[0].tiles[Int(i0)], plan.axes[1].tiles[Int(i1)], plan.axes[2].tiles[Int(i2)]),
                      o: out.base, lse: lseOut.base, scratch: scratches[worker])
        }
    }

    /// One box of sequence `b` for the query heads of `kvHeads`: gathers the key box of those kv heads and the box's mask
    /// (the same for every head), then per query head gathers its queries (scaled by scale·log2 e), runs the key tiles
    /// and writes the box's rows of o and lse. O(heads·queries·keys·(D + Dv)).
    static func attendBox(
        _ p: NeighborhoodProblem, _ plan: NeighborhoodPlan, _ ptrs: AttentionPointers, b: Int, kvHeads: Range<Int>,
        tiles t: (AxisTiles.Tile, AxisTiles.Tile, AxisTiles.Tile), o: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>,
        scratch s: NeighborhoodScratch
    ) {
        let kernels = s.kernels, lds = s.lds, dvPad = s.dvPad, N = p.N
        let (m0, m1, m2) = (t.0.queries.count, t.1.queries.count, t.2.queries.count)
        let (e0, e1, e2) = (t.0.keys.count, t.1.keys.count, t.2.keys.count)
        let m = m0 * m1 * m2, keys = e0 * e1 * e2
        // Score columns: the queries up to the GEMM's column block; the P·V product runs on rows up to its row block, so
        // it also reads columns [cols, mPad), which nothing writes after the scratch's zeroing (their P is 0).
        let mPad = roundUp(m, kernels.rows), cols = roundUp(m, kernels.columns)
        let (a0, a1, a2) = (p.axes[0], p.axes[1], p.axes[2])
        // The token of group coordinates (u0, u1, u2) in the box's dilation groups.
        func token(_ u0: Int, _ u1: Int, _ u2: Int) -> Int {
            ((t.0.group + u0 * a0.dilation) * a1.length + t.1.group + u1 * a1.dilation) * a2.length + t.2.group + u2 * a2.dilation
        }
        // Keys and values of the kv heads, one head's rows after another: [head][keys + rows][D], [head][keys][dvPad].
        let keyStride = (plan.boxKeys + kernels.rows) * p.D, valueStride = plan.boxKeys * dvPad
        var r = 0
        for u0 in t.0.keys { for u1 in t.1.keys { for u2 in t.2.keys {
            let row = (b * N + token(u0, u1, u2)) * p.Hkv
            for (i, hk) in kvHeads.enumerated() {
                copy(s.keys + i * keyStride + r * p.D, ptrs.k + (row + hk) * p.D, count: p.D)
                copy(s.values + i * valueStride + r * dvPad, ptrs.v + (row + hk) * p.Dv, count: p.Dv)
            }
            r += 1
        } } }
        var c = 0
        for u0 in t.0.queries { for u1 in t.1.queries { for u2 in t.2.queries {
            s.tokens[c] = token(u0, u1, u2)
            c += 1
        } } }
        // The mask as a bias (0 or -inf) on the key rows that some query of the box does not see: each key row keeps the
        // queries whose window holds it, per axis a run of the box's coordinates.
        let visible = (s.visible, s.visible + s.axisKeys.0, s.visible + s.axisKeys.0 + s.axisKeys.1)
        plan.axes[0].visibleQueries(t.0, into: visible.0)
        plan.axes[1].visibleQueries(t.1, into: visible.1)
        plan.axes[2].visibleQueries(t.2, into: visible.2)
        for key in 0..<keys {
            let v0 = visible.0[key / (e1 * e2)], v1 = visible.1[(key / e2) % e1], v2 = visible.2[key % e2]
            s.masked[key] = !(v0 == 0..<m0 && v1 == 0..<m1 && v2 == 0..<m2)
            if s.masked[key] {
                (s.bias + key * lds).initialize(repeating: 0, count: cols)
                maskRow(s.bias + key * lds, m: (m0, m1, m2), keep: (v0, v1, v2))
            }
        }
        let log2e: Float = 1.442_695_04, ln2: Float = 0.693_147_18
        let group = p.Hq / p.Hkv
        for (i, hk) in kvHeads.enumerated() {
            let (headKeys, headValues) = (s.keys + i * keyStride, s.values + i * valueStride)
            for h in (hk * group)..<((hk + 1) * group) {
                // Qᵀ [D, lds] times scale·log2(e); columns past the box's queries zero.
                for d in 0..<p.D { (s.queries + d * lds + m).initialize(repeating: 0, count: cols - m) }
                for c in 0..<m {
                    let src = ptrs.q + ((b * N + s.tokens[c]) * p.Hq + h) * p.D
                    for d in 0..<p.D { s.queries[d * lds + c] = src[d] * (p.scale * log2e) }
                }
                s.output.initialize(repeating: 0, count: mPad * dvPad)
                s.colMax.initialize(repeating: -.infinity, count: cols)
                s.colSum.initialize(repeating: 0, count: cols)
                var j0 = 0
                while j0 < keys {
                    let n = min(kernels.keyBlock, keys - j0)
                    // The last tile runs on to whole row blocks (rows after the box hold earlier data or zeros; their
                    // scores are never read).
                    kernels.gemm(m: roundUp(n, kernels.rows), n: cols, depth: p.D, a: headKeys + j0 * p.D, aRowStride: p.D, aDepthStride: 1,
                                 b: s.queries, ldb: lds, c: s.scores, ldc: lds, accumulate: false, columnBlocksOutside: true)
                    for rr in 0..<n where s.masked[j0 + rr] { add(s.scores + rr * lds, s.bias + (j0 + rr) * lds, count: cols) }
                    kernels.softmaxColumns(scores: s.scores, lds: lds, keys: n, columns: cols, colMax: s.colMax, colSum: s.colSum,
                                           acc: s.output, dvPad: dvPad, accRows: mPad)
                    kernels.gemm(m: mPad, n: dvPad, depth: n, a: s.scores, aRowStride: 1, aDepthStride: lds, b: headValues + j0 * dvPad,
                                 ldb: dvPad, c: s.output, ldc: dvPad, accumulate: true, columnBlocksOutside: false)
                    j0 += n
                }
                for c in 0..<m {
                    let row = (b * N + s.tokens[c]) * p.Hq + h
                    let dst = o + row * p.Dv
                    if s.colSum[c] > 0 {
                        let inverse = 1 / s.colSum[c]
                        for e in 0..<p.Dv { dst[e] = s.output[c * dvPad + e] * inverse }
                        lse[row] = (s.colMax[c] + log2(s.colSum[c])) * ln2
                    } else {  // unreachable (a query sees itself), kept so no row is left unwritten
                        dst.initialize(repeating: 0, count: p.Dv)
                        lse[row] = -.infinity
                    }
                }
            }
        }
    }

    /// `dst[i] = src[i]` for `i < count`, 16 lanes at a time (a call to memmove per 64-float row cost more than the copy). O(count).
    @inline(__always)
    static func copy(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, count: Int) {
        var i = 0
        while i + 16 <= count {
            UnsafeMutableRawPointer(dst + i).storeBytes(of: UnsafeRawPointer(src + i).loadUnaligned(as: SIMD16<Float>.self), as: SIMD16<Float>.self)
            i += 16
        }
        while i < count {
            dst[i] = src[i]
            i += 1
        }
    }

    /// `y[i] += x[i]` for `i < count`, a multiple of 16. O(count).
    @inline(__always)
    static func add(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
        for i in stride(from: 0, to: count, by: 16) {
            let sum = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD16<Float>.self) + UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
            UnsafeMutableRawPointer(y + i).storeBytes(of: sum, as: SIMD16<Float>.self)
        }
    }

    /// Sets the scores of a key row to -inf outside the query columns `keep` (per axis of the `m` query box, columns
    /// ordered row-major over it). O(m).
    @inline(__always)
    static func maskRow(_ row: UnsafeMutablePointer<Float>, m: (Int, Int, Int), keep: (Range<Int>, Range<Int>, Range<Int>)) {
        for c0 in 0..<m.0 {
            let plane = row + c0 * m.1 * m.2
            guard keep.0.contains(c0) else {
                plane.initialize(repeating: -.infinity, count: m.1 * m.2)
                continue
            }
            for c1 in 0..<m.1 {
                let line = plane + c1 * m.2
                guard keep.1.contains(c1), !keep.2.isEmpty else {
                    line.initialize(repeating: -.infinity, count: m.2)
                    continue
                }
                line.initialize(repeating: -.infinity, count: keep.2.lowerBound)
                (line + keep.2.upperBound).initialize(repeating: -.infinity, count: m.2 - keep.2.upperBound)
            }
        }
    }
}

/// One axis cut into query runs: per dilation group, runs of `size` group coordinates, each with the keys its windows
/// cover (window bounds never decrease as the query grows, so a run's keys are one range).
struct AxisTiles: Sendable {
    /// A run of queries of one dilation group and its keys (group coordinates).
    struct Tile: Sendable {
        let group: Int
        let queries: Range<Int>, keys: Range<Int>
    }

    let axis: NeighborhoodAxis
    private(set) var tiles: [Tile] = []

    /// Runs of `size` queries along `axis`. O(length / size).
    init(_ axis: NeighborhoodAxis, size: Int) {
        self.axis = axis
        Self.forEachTile(axis, size: size) { tiles.append($0) }
    }

    /// Calls `body` with every run of `size` queries along `axis`, group by group. O(length / size).
    static func forEachTile(_ axis: NeighborhoodAxis, size: Int, _ body: (Tile) -> Void) {
        for g in 0..<axis.dilation {
            let n = axis.groupLength(g)
            for q0 in stride(from: 0, to: n, by: size) {
                let q1 = min(n, q0 + size)
                body(Tile(group: g, queries: q0..<q1, keys: axis.window(q0, groupLength: n).lowerBound..<axis.window(q1 - 1, groupLength: n).upperBound))
            }
        }
    }

    /// Writes, for each key of `tile`, the run of its queries (relative to the first) whose window holds the key:
    /// start <= key < end, two pointers over non-decreasing bounds. O(keys + queries).
    func visibleQueries(_ tile: Tile, into out: UnsafeMutablePointer<Range<Int>>) {
        let n = axis.groupLength(tile.group), q0 = tile.queries.lowerBound, q1 = tile.queries.upperBound
        var (lo, hi) = (q0, q0)
        for (i, t) in tile.keys.enumerated() {
            while lo < q1 && axis.window(lo, groupLength: n).upperBound <= t { lo += 1 }
            while hi < q1 && axis.window(hi, groupLength: n).lowerBound <= t { hi += 1 }
            out[i] = (lo - q0)..<(max(lo, hi) - q0)
        }
    }

    /// The most keys of a tile. O(tiles).
    var maxKeys: Int { tiles.map(\.keys.count).max() ?? 0 }
}

/// The query box shape of a call and its axes' tiles.
struct NeighborhoodPlan: Sendable {
    let axes: [AxisTiles]
    /// Queries of the largest box.
    let boxQueries: Int
    /// Keys of the largest key box.
    let boxKeys: Int
    /// Every box as its tile index on each axis, in Z order (bits of the three indices interleaved): neighbouring boxes,
    /// which gather overlapping keys, run close in time in every direction, so their keys are still in cache (a
    /// row-by-row sweep of a 256 x 256 grid re-read each row band's keys from memory).
    let boxes: [(Int32, Int32, Int32)]

    /// Picks the box (at most `queryBlock` queries) that minimizes the estimated work: every key box's keys times its
    /// queries padded to the GEMM's column block (a few columns more for gathering and masking), plus a fixed cost per
    /// box. Over the axes the key boxes' sizes multiply, so the total is a product of per-axis sums. O(candidates³ + N/size)
    /// time, O(boxes) memory.
    init(_ p: NeighborhoodProblem, _ kernels: CPUKernels) {
        let sizes = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192]
        let options: [[(size: Int, tiles: Int, keys: Int)]] = p.axes.map { axis in
            let longest = axis.groupLength(0)
            return (sizes.filter { $0 < longest } + [longest]).filter { $0 <= kernels.queryBlock }.map { size in
                var (tiles, keys) = (0, 0)
                AxisTiles.forEachTile(axis, size: size) { tile in (tiles, keys) = (tiles + 1, keys + tile.keys.count) }
                return (size, tiles, keys)
            }
        }
        var best = (cost: Double.infinity, shape: [1, 1, 1])
        for x in options[0] { for y in options[1] { for z in options[2] {
            let queries = x.size * y.size * z.size
            guard queries <= kernels.queryBlock else { continue }
            let boxes = Double(x.tiles) * Double(y.tiles) * Double(z.tiles)
            let cost = Double(x.keys) * Double(y.keys) * Double(z.keys) * Double(roundUp(queries, kernels.columns) + 4) + boxes * 256
            if cost < best.cost { best = (cost, [x.size, y.size, z.size]) }
        } } }
        axes = (0..<3).map { AxisTiles(p.axes[$0], size: best.shape[$0]) }
        boxQueries = axes.reduce(1) { $0 * ($1.tiles.map(\.queries.count).max() ?? 0) }
        boxKeys = axes.reduce(1) { $0 * $1.maxKeys }
        let counts = axes.map(\.tiles.count)
        var all: [(key: UInt64, box: (Int32, Int32, Int32))] = []
        all.reserveCapacity(counts.reduce(1, *))
        for i0 in 0..<counts[0] { for i1 in 0..<counts[1] { for i2 in 0..<counts[2] {
            var key: UInt64 = 0
            for bit in 0..<21 {
                for (axis, index) in [i0, i1, i2].enumerated() { key |= UInt64((index >> bit) & 1) << (3 * bit + 2 - axis) }
            }
            all.append((key, (Int32(i0), Int32(i1), Int32(i2))))
        } } }
        boxes = all.sorted { $0.key < $1.key }.map(\.box)
    }
}

/// One worker's buffers for `attendBox` (each worker owns one, so the raw buffers are never shared).
struct NeighborhoodScratch: @unchecked Sendable {
    let keys: UnsafeMutablePointer<Float>     // [heads, boxKeys + rows, D]: the key box of each kv head, packed
    let values: UnsafeMutablePointer<Float>   // [heads, boxKeys, dvPad]: the value boxes, padded columns zero
    let queries: UnsafeMutablePointer<Float>  // Qᵀ [D, lds]
    let scores: UnsafeMutablePointer<Float>   // Sᵀ [keyBlock + rows, lds]
    let output: UnsafeMutablePointer<Float>   // [lds, dvPad]
    let colMax: UnsafeMutablePointer<Float>, colSum: UnsafeMutablePointer<Float>  // [lds]
    let tokens: UnsafeMutablePointer<Int>     // [lds]: the box's query tokens, in column order
    let bias: UnsafeMutablePointer<Float>     // [boxKeys, lds]: the box's mask (0 or -inf) on its masked key rows
    let masked: UnsafeMutablePointer<Bool>    // [boxKeys]: whether a key row is masked for some query of the box
    let visible: UnsafeMutablePointer<Range<Int>>  // per axis, per key of the box's tile: its queries (AxisTiles.visibleQueries)
    let axisKeys: (Int, Int, Int)             // the most keys of a tile on each axis
    let lds: Int, dvPad: Int
    let kernels: CPUKernels

    init(_ p: NeighborhoodProblem, _ plan: NeighborhoodPlan, _ kernels: CPUKernels, heads: Int) {
        self.kernels = kernels
        lds = roundUp(roundUp(plan.boxQueries, kernels.rows), kernels.columns)  // holds the P·V product's padded rows too
        dvPad = roundUp(p.Dv, kernels.columns)
        // Zeroed once: padding rows and columns must hold finite numbers for the products that run over them.
        func zeros(_ count: Int) -> UnsafeMutablePointer<Float> {
            let x = UnsafeMutablePointer<Float>.allocate(capacity: count)
            x.initialize(repeating: 0, count: count)
            return x
        }
        keys = zeros(heads * (plan.boxKeys + kernels.rows) * p.D)
        values = zeros(heads * plan.boxKeys * dvPad)
        queries = zeros(p.D * lds)
        scores = zeros((kernels.keyBlock + kernels.rows) * lds)
        output = zeros(lds * dvPad)
        colMax = zeros(lds)
        colSum = zeros(lds)
        tokens = .allocate(capacity: lds)
        bias = zeros(plan.boxKeys * lds)
        masked = .allocate(capacity: plan.boxKeys)
        axisKeys = (plan.axes[0].maxKeys, plan.axes[1].maxKeys, plan.axes[2].maxKeys)
        visible = .allocate(capacity: axisKeys.0 + axisKeys.1 + axisKeys.2)
    }

    /// The workers' bytes for a plan and `heads` kv heads per item, for `MemoryBudget`. O(1).
    static func buffers(_ p: NeighborhoodProblem, _ plan: NeighborhoodPlan, _ kernels: CPUKernels, heads: Int) -> [MemoryBudget.Buffer] {
        let lds = roundUp(roundUp(plan.boxQueries, kernels.rows), kernels.columns), dvPad = roundUp(p.Dv, kernels.columns)
        return [.init("neighborhood key and value boxes", [Parallel.threadCount, heads, plan.boxKeys + kernels.rows, p.D + dvPad]),
                .init("neighborhood tiles", [Parallel.threadCount, lds, p.D + dvPad + kernels.keyBlock + kernels.rows + 4]),
                .init("neighborhood masks", [Parallel.threadCount, plan.boxKeys, lds + 1])]
    }

    func free() {
        for x in [keys, values, queries, scores, output, colMax, colSum, bias] { x.deallocate() }
        tokens.deallocate()
        masked.deallocate()
        visible.deallocate()
    }
}
