import Foundation
import Linea
import Testing

/// The fused block-sparse form and the prefill selectors (XAttention, MInference, top-k), each checked against its
/// definition by brute force on small cases.
@Suite struct BlockSelectorTests {
    // MARK: brute-force geometry, written from the definitions (bottom-right causal alignment)

    /// Whether query i sees key j (causal: j <= i + S - T).
    static func sees(_ i: Int, _ j: Int, T: Int, S: Int, causal: Bool) -> Bool { !causal || j <= i + S - T }

    /// Whether block (I, J) of `bs` holds a pair the causal mask lets through.
    static func visible(_ I: Int, _ J: Int, bs: Int, T: Int, S: Int, causal: Bool) -> Bool {
        for i in I * bs..<min(T, (I + 1) * bs) { for j in J * bs..<min(S, (J + 1) * bs) where sees(i, j, T: T, S: S, causal: causal) { return true } }
        return false
    }

    /// Causal: key blocks holding the query block's own positions (i + S - T).
    static func diagonal(_ I: Int, bs: Int, T: Int, S: Int) -> Set<Int> {
        Set((I * bs..<min(T, (I + 1) * bs)).compactMap { i in i + S - T >= 0 ? (i + S - T) / bs : nil })
    }

    static func kept(_ m: BlockMask, b: Int, h: Int, _ I: Int) -> Set<Int> {
        Set((0..<m.shape[3]).filter { m.values[((b * m.shape[1] + h) * m.shape[2] + I) * m.shape[3] + $0] != 0 })
    }

    static func dot(_ x: Tensor, _ xi: Int, _ y: Tensor, _ yi: Int, D: Int) -> Double {
        (0..<D).reduce(0.0) { $0 + Double(x.scalars[xi + $1]) * Double(y.scalars[yi + $1]) }
    }

    // MARK: the fused form

    /// (B, T, S, Hq, Hkv, D, Dv, block rows, block keys, causal, density): partial blocks, T != S, GQA, mask rows taller
    /// than flash's tile (300 rows), a per-head mask.
    static let fusedGrid: [(Int, Int, Int, Int, Int, Int, Int, Int, Int, Bool, Float)] = [
        (1, 200, 200, 4, 2, 64, 64, 64, 64, true, 0.5), (2, 130, 300, 2, 2, 32, 24, 64, 64, false, 0.4),
        (1, 100, 100, 2, 1, 16, 16, 16, 48, true, 0.3), (1, 700, 700, 2, 2, 32, 32, 300, 16, true, 0.2),
        (1, 100, 40, 2, 2, 16, 16, 32, 8, true, 0.6), (1, 65, 65, 1, 1, 8, 8, 1, 1, true, 0.1),
    ]

    @Test(arguments: fusedGrid.indices)
    func fusedEqualsMaskedReference(_ index: Int) throws {
        let (B, T, S, Hq, Hkv, D, Dv, bm, bn, causal, density) = Self.fusedGrid[index]
        let q = try Tensor.randomNormal([B, T, Hq, D], seed: 11), k = try Tensor.randomNormal([B, S, Hkv, D], seed: 12)
        let v = try Tensor.randomNormal([B, S, Hkv, Dv], seed: 13)
        let mask = try BlockMask.random(B: B, H: Hq, T: T, S: S, blockRows: bm, blockKeys: bn, density: density, seed: 14)
        let options = AttentionOptions(causal: causal)
        let want = try BlockSparseAttention.reference(q: q, k: k, v: v, mask: mask, options: options)
        let got = try BlockSparseAttention.fused(q: q, k: k, v: v, mask: mask, options: options)
        let eo = ErrorStats(got.o, want.o)
        #expect(eo.relativeRMS <= 1e-5, "o \(eo)")
        // lse: -inf exactly where the reference has it, close elsewhere.
        let far = zip(got.lse.scalars, want.lse.scalars).filter { a, b in !(a == b || abs(a - b) <= 1e-4 * max(1, abs(b))) }
        #expect(far.isEmpty, "lse: \(far.count) differ, first \(far.first.map { "\($0)" } ?? "")")
        // Through the device API (the CPU backend's path).
        let bytes = try DeviceTensor(integers: mask.values.map(Int.init), shape: mask.shape, dtype: .uint8)
        let device = try BlockSparseAttention.forward(q: DeviceTensor(q), k: DeviceTensor(k), v: DeviceTensor(v), mask: bytes,
                                                      blockRows: bm, blockKeys: bn, options: options)
        #expect(ErrorStats(try device.o.host(), want.o).relativeRMS <= 1e-5)
    }

    // MARK: XAttention

    /// XAttention's block scores by brute force: antidiagonal group scores, softmax per query group over the visible
    /// key groups, summed per block.
    static func xAttentionScores(q: Tensor, k: Tensor, b: Int, h: Int, bs: Int, s: Int, causal: Bool) -> [[Double]] {
        let (T, Hq, D, S, Hkv) = (q.shape[1], q.shape[2], q.shape[3], k.shape[1], k.shape[2])
        let hk = h / (Hq / Hkv), scale = 1 / Double(D).squareRoot()
        var blocks = [[Double]](repeating: [Double](repeating: 0, count: (S + bs - 1) / bs), count: (T + bs - 1) / bs)
        for r in 0..<(T + s - 1) / s {
            let lastQuery = min(T - 1, r * s + s - 1) + (causal ? S - T : 0)
            guard lastQuery >= 0 else { continue }
            let groups = (0..<(S + s - 1) / s).filter { !causal || $0 * s <= lastQuery }
            let scores = groups.map { c in
                (0..<s).reduce(0.0) { acc, t in
                    let (i, j) = (r * s + s - 1 - t, c * s + t)
                    return i < T && j < S ? acc + dot(q, ((b * T + i) * Hq + h) * D, k, ((b * S + j) * Hkv + hk) * D, D: D) : acc
                } * scale / Double(s)
            }
            let m = scores.max()!, z = scores.reduce(0.0) { $0 + exp($1 - m) }
            for (c, x) in zip(groups, scores) { blocks[r * s / bs][c * s / bs] += exp(x - m) / z }
        }
        return blocks
    }

    @Test(arguments: [(64, 64, 16, 4, true, 0.9), (64, 64, 16, 4, true, 0.5), (50, 70, 16, 8, true, 0.8), (48, 48, 8, 2, false, 0.7)])
    func xAttentionKeepsTheSmallestSetReachingTau(_ T: Int, _ S: Int, _ bs: Int, _ stride: Int, _ causal: Bool, _ tau: Double) throws {
        let (B, Hq, Hkv, D) = (1, 2, 1, 16)
        let q = try Tensor.randomNormal([B, T, Hq, D], seed: 21), k = try Tensor.randomNormal([B, S, Hkv, D], seed: 22)
        let sel = try BlockSelector.xAttention(q: q, k: k, blockSize: bs, stride: stride, tau: tau, options: AttentionOptions(causal: causal))
        #expect(sel.mask.shape == [B, Hq, (T + bs - 1) / bs, (S + bs - 1) / bs])
        for h in 0..<Hq {
            let scores = Self.xAttentionScores(q: q, k: k, b: 0, h: h, bs: bs, s: stride, causal: causal)
            for (I, row) in scores.enumerated() {
                let kept = Self.kept(sel.mask, b: 0, h: h, I)
                let visibleRow = (0..<row.count).filter { Self.visible(I, $0, bs: bs, T: T, S: S, causal: causal) }
                var forced = Set<Int>()
                if causal && !visibleRow.isEmpty { forced = Self.diagonal(I, bs: bs, T: T, S: S).union([0]) }
                #expect(forced.isSubset(of: kept), "row \(I): forced \(forced) kept \(kept)")
                #expect(kept.isSubset(of: Set(visibleRow)), "row \(I): kept \(kept) beyond the visible \(visibleRow)")
                let total = row.reduce(0, +), chosen = kept.subtracting(forced)
                let sum = kept.reduce(0.0) { $0 + row[$1] }
                // The others kept are the highest-scoring ones, and no fewer of them reach tau.
                let rest = Set(visibleRow).subtracting(kept)
                if let low = chosen.map({ row[$0] }).min(), let high = rest.map({ row[$0] }).max() { #expect(low >= high) }
                if !rest.isEmpty { #expect(sum >= tau * total * (1 - 1e-9), "row \(I): kept \(sum / total) < tau \(tau)") }
                if let low = chosen.map({ row[$0] }).min() { #expect(sum - low < tau * total, "row \(I): not the smallest set") }
            }
        }
        #expect(sel.kept == sel.mask.values.filter { $0 != 0 }.count)
    }

    @Test func errorFallsAsTauRises() throws {
        let (T, H, D) = (512, 2, 32)
        // Keys with a few strong directions, so the attention is uneven as in real heads.
        let q = try Tensor.randomNormal([1, T, H, D], seed: 31)
        let k = try Tensor(shape: [1, T, H, D], scalars: try Tensor.randomNormal([1, T, H, D], seed: 32).scalars.enumerated().map { i, x in
            (i / (H * D)) % 37 == 0 ? 3 * x : x
        })
        let v = try Tensor.randomNormal([1, T, H, D], seed: 33)
        var last = (error: Double.infinity, density: 0.0)
        var errors: [Double] = []
        for tau in [0.3, 0.6, 0.9, 0.99] {
            let sel = try BlockSelector.xAttention(q: q, k: k, blockSize: 32, stride: 4, tau: tau)
            let error = try sel.outputError(q: q, k: k, v: v)
            #expect(sel.density >= last.density, "tau \(tau): density \(sel.density) below \(last.density)")
            #expect(error <= last.error * 1.05 + 1e-6, "tau \(tau): error \(error) above \(last.error)")
            last = (error, sel.density)
            errors.append(error)
        }
        #expect(errors.last! < 0.5 * errors.first!, "errors \(errors)")
        let all = try BlockSelector.xAttention(q: q, k: k, blockSize: 32, stride: 4, tau: 1)
        let allError = try all.outputError(q: q, k: k, v: v)
        #expect(all.density == 1 && allError < 1e-5)
    }

    // MARK: top-k

    @Test(arguments: [(64, 64, 16, 2, true), (70, 90, 16, 3, true), (40, 40, 8, 1, false), (64, 64, 16, 10, true)])
    func topKKeepsKBlocksPlusTheDiagonal(_ T: Int, _ S: Int, _ bs: Int, _ topK: Int, _ causal: Bool) throws {
        let (Hq, Hkv, D) = (2, 2, 8)
        let q = try Tensor.randomNormal([1, T, Hq, D], seed: 41), k = try Tensor.randomNormal([1, S, Hkv, D], seed: 42)
        let sel = try BlockSelector.topK(q: q, k: k, blockSize: bs, topK: topK, options: AttentionOptions(causal: causal))
        func mean(_ x: Tensor, _ block: Int, _ h: Int) -> [Double] {
            let (L, H) = (x.shape[1], x.shape[2])
            let rows = block * bs..<min(L, (block + 1) * bs)
            return (0..<D).map { d in rows.reduce(0.0) { $0 + Double(x.scalars[($1 * H + h) * D + d]) } / Double(rows.count) }
        }
        for h in 0..<Hq {
            for I in 0..<(T + bs - 1) / bs {
                let visibleRow = (0..<(S + bs - 1) / bs).filter { Self.visible(I, $0, bs: bs, T: T, S: S, causal: causal) }
                let qm = mean(q, I, h)
                let score = Dictionary(uniqueKeysWithValues: visibleRow.map { J in (J, zip(qm, mean(k, J, h)).reduce(0.0) { $0 + $1.0 * $1.1 }) })
                let top = Set(visibleRow.sorted { score[$0]! > score[$1]! || (score[$0]! == score[$1]! && $0 < $1) }.prefix(topK))
                let want = causal ? top.union(Self.diagonal(I, bs: bs, T: T, S: S)) : top
                #expect(Self.kept(sel.mask, b: 0, h: h, I) == want, "head \(h) row \(I)")
                #expect(top.count == min(topK, visibleRow.count))
            }
        }
    }

    @Test func densityCountsKeptOverVisibleBlocks() throws {
        let (T, S, bs) = (100, 130, 16)
        let q = try Tensor.randomNormal([2, T, 2, 8], seed: 51), k = try Tensor.randomNormal([2, S, 1, 8], seed: 52)
        let sel = try BlockSelector.topK(q: q, k: k, blockSize: bs, topK: 2)
        let (QB, KB) = ((T + bs - 1) / bs, (S + bs - 1) / bs)
        var visible = 0
        for I in 0..<QB { for J in 0..<KB where Self.visible(I, J, bs: bs, T: T, S: S, causal: true) { visible += 1 } }
        let kept = sel.mask.values.filter { $0 != 0 }.count
        #expect(sel.visible == visible * 4 && sel.kept == kept)
        #expect(abs(sel.density - Double(kept) / Double(visible * 4)) < 1e-12)
    }

    // MARK: MInference

    @Test func mInferenceAShapeKeepsTheBlocksOfSinksAndLocalWindows() throws {
        let (T, S, bs, sinks, window) = (100, 120, 16, 5, 21)  // windows start on block edges
        let q = try Tensor.randomNormal([1, T, 1, 8], seed: 61), k = try Tensor.randomNormal([1, S, 1, 8], seed: 62)
        let sel = try BlockSelector.mInference(q: q, k: k, blockSize: bs, patterns: [.aShape(sinks: sinks, window: window)])
        #expect(sel.patterns == [.aShape(sinks: sinks, window: window)])
        for I in 0..<(T + bs - 1) / bs {
            var want = Set<Int>()
            for i in I * bs..<min(T, (I + 1) * bs) {
                let pos = i + S - T
                for j in 0..<S where j <= pos && (j < sinks || pos - j < window) { want.insert(j / bs) }
            }
            #expect(Self.kept(sel.mask, b: 0, h: 0, I) == want, "row \(I)")
        }
    }

    /// MInference's `convert_vertical_slash_indexes` loop for one query block, written out as it reads (vertical
    /// indexes ascending, slash offsets descending, blocks of `bs` for both M and N), then its tiles and columns as a
    /// key set, cut to the keys the kernel lets the block's last query see (key < T and key <= that query).
    static func minferenceKeys(T: Int, bs: Int, columns: [Int], slashes: [Int]) -> [Set<Int>] {
        let v = columns.sorted(), s = slashes.sorted(by: >)
        return (0..<(T + bs - 1) / bs).map { I in
            let endM = I * bs + bs
            var blockOffsets: [Int] = [], columnIndex: [Int] = []
            var vp = 0, sp = 0
            var vIdx = endM + bs, sIdx = -1
            if vp < v.count { vIdx = v[vp]; vp += 1 }
            if sp < s.count { sIdx = s[sp]; sp += 1 }
            while sIdx >= endM && sp < s.count { sIdx = s[sp]; sp += 1 }
            sIdx = sIdx >= endM ? endM + bs : max(endM - sIdx, bs)
            var rangeStart = sIdx - bs, rangeEnd = sIdx
            func save() { var idx = rangeStart; while idx < rangeEnd { blockOffsets.append(idx); idx += bs } }
            while true {
                if vIdx < rangeEnd {
                    if vIdx < rangeStart { columnIndex.append(vIdx) }
                    if vp < v.count { vIdx = v[vp]; vp += 1 } else { vIdx = endM + bs }
                } else {
                    if sp < s.count { sIdx = max(endM - s[sp], bs); sp += 1 } else { save(); break }
                    if sIdx > rangeEnd + bs {
                        save()
                        (rangeStart, rangeEnd) = (sIdx - bs, sIdx)
                    } else if sIdx > rangeEnd {
                        rangeEnd += bs
                    }
                }
            }
            let lastQuery = min(T, endM) - 1
            return Set((blockOffsets.flatMap { $0..<$0 + bs } + columnIndex).filter { $0 >= 0 && $0 < T && $0 <= lastQuery })
        }
    }

    static func keySet(_ runs: [Range<Int>]) -> Set<Int> { Set(runs.flatMap { Array($0) }) }

    @Test func verticalSlashKeysAreMInferencesIndexSets() throws {
        // (T, bs, columns, slash offsets): T not a multiple of 64 or below it; adjacent (64 apart), overlapping (< 64
        // apart) and distant slash ranges; columns inside ranges, between them, past the last range's end; offsets past
        // a block's end (skipped there) and beyond T's start (clamped to the first tile).
        let cases: [(Int, Int, [Int], [Int])] = [
            (200, 64, [0, 1, 5, 70, 100, 130, 150, 199], [0, 10, 64, 128, 190]),
            (256, 64, [3, 64, 65, 127, 128, 200, 255], [0, 1, 2, 63, 64, 150]),
            (300, 64, Array(stride(from: 0, to: 300, by: 7)), [5, 70, 200, 260, 299]),
            (50, 64, [0, 10, 49], [0, 20, 40]),
            (130, 16, [0, 17, 33, 90, 129], [0, 3, 16, 40, 41, 100]),
            (128, 64, [1, 100], [120]),  // no offset below block 0's end: its columns alone (causally cut)
        ]
        for (T, bs, columns, slashes) in cases {
            let got = BlockSelector.verticalSlashKeys(T: T, blockSize: bs, columns: columns, diagonals: slashes)
            let want = Self.minferenceKeys(T: T, bs: bs, columns: columns, slashes: slashes)
            #expect(got.count == want.count)
            for (I, runs) in got.enumerated() {
                #expect(Self.keySet(runs) == want[I], "T \(T) bs \(bs) row \(I)")
                #expect(zip(runs, runs.dropFirst()).allSatisfy { $0.upperBound < $1.lowerBound } && runs.allSatisfy { !$0.isEmpty },
                        "runs ascending, disjoint, merged: \(runs)")
            }
        }
        // Seeded random lists, as the selector makes them (distinct indices below T).
        var rng = SeededRandom(seed: 7)
        for trial in 0..<40 {
            let T = 1 + Int(rng.next() % 400), bs = [16, 32, 64][trial % 3]
            let columns = Array(Set((0..<Int(rng.next() % 40)).map { _ in Int(rng.next() % UInt64(T)) }))
            let slashes = Array(Set((0..<1 + Int(rng.next() % 40)).map { _ in Int(rng.next() % UInt64(T)) }))
            let got = BlockSelector.verticalSlashKeys(T: T, blockSize: bs, columns: columns, diagonals: slashes)
            #expect(got.map(Self.keySet) == Self.minferenceKeys(T: T, bs: bs, columns: columns, slashes: slashes), "trial \(trial)")
        }
    }

    @Test(arguments: [(384, 16), (200, 64), (100, 32)])
    func mInferenceVerticalSlashAttendsMInferencesKeysOfItsTopColumnsAndDiagonals(_ c: (Int, Int)) throws {
        let (T, bs) = c
        let (D, vertical, slash) = (8, 34, 20)  // slash below MInference's floor of 50 diagonals
        let q = try Tensor.randomNormal([1, T, 1, D], seed: 71), k = try Tensor.randomNormal([1, T, 1, D], seed: 72)
        let sel = try BlockSelector.mInference(q: q, k: k, blockSize: bs, patterns: [.verticalSlash(vertical: vertical, slash: slash)])
        // The last 64 queries' attention, summed per column and per diagonal.
        var columns = [Double](repeating: 0, count: T), diagonals = [Double](repeating: 0, count: T)
        for i in max(0, T - 64)..<T {
            let s = (0...i).map { Self.dot(q, i * D, k, $0 * D, D: D) / Double(D).squareRoot() }
            let m = s.max()!, z = s.reduce(0.0) { $0 + exp($1 - m) }
            for j in 0...i { columns[j] += exp(s[j] - m) / z; diagonals[i - j] += exp(s[j] - m) / z }
        }
        // The n largest, the indices below `forced` first (MInference makes them infinite; among them, by value here).
        func top(_ x: [Double], forced: Int, _ n: Int) -> [Int] {
            let byValue = { (a: Int, b: Int) in x[a] > x[b] || (x[a] == x[b] && a < b) }
            return Array(((0..<min(forced, T)).sorted(by: byValue) + (min(forced, T)..<T).sorted(by: byValue)).prefix(n))
        }
        let want = Self.minferenceKeys(T: T, bs: bs, columns: top(columns, forced: 30, max(vertical, 30)),
                                       slashes: top(diagonals, forced: 100, max(slash, 50)))
        let keys = try #require(sel.keys)
        #expect(keys.map(Self.keySet) == want)
        // The mask holds exactly the blocks of those keys; the density counts the attended causal pairs.
        for I in 0..<want.count { #expect(Self.kept(sel.mask, b: 0, h: 0, I) == Set(want[I].map { $0 / bs }), "row \(I)") }
        let attended = (0..<T).reduce(0) { n, i in n + want[i / bs].filter { $0 <= i }.count }
        #expect(sel.pairs?.attended == attended && sel.pairs?.visible == T * (T + 1) / 2)
        #expect(abs(sel.density - Double(attended) / Double(T * (T + 1) / 2)) < 1e-12)
    }

    @Test func attentionOverExactKeysEqualsItsReferenceAndOutputErrorUsesThem() throws {
        let (T, Hq, Hkv, D) = (200, 4, 2, 32)
        let q = try Tensor.randomNormal([1, T, Hq, D], seed: 95), k = try Tensor.randomNormal([1, T, Hkv, D], seed: 96)
        let v = try Tensor.randomNormal([1, T, Hkv, D], seed: 97)
        // Per head: vertical-slash twice, a block pattern twice (their rows attend their blocks' keys).
        let patterns: [MInferencePattern] = [.verticalSlash(vertical: 30, slash: 50), .aShape(sinks: 8, window: 40),
                                             .verticalSlash(vertical: 40, slash: 60), .blockSparse(topK: 1)]
        let sel = try BlockSelector.mInference(q: q, k: k, patterns: patterns)
        let keys = try #require(sel.keys)
        // The oracle over the keys equals the mask oracle over the same keys as 1-key blocks, and the fused form both.
        let want = try BlockSparseAttention.reference(q: q, k: k, v: v, selection: sel)
        let exact = try sel.exactMask()
        #expect(exact.blockKeys == 1 && exact.shape == [1, Hq, 4, T])
        for (row, runs) in keys.enumerated() {
            let ones = Set((0..<T).filter { exact.values[row * T + $0] != 0 })
            #expect(ones == Self.keySet(runs))
        }
        #expect(ErrorStats(want.o, try BlockSparseAttention.reference(q: q, k: k, v: v, mask: exact).o).relativeRMS == 0)
        let fused = try BlockSparseAttention.fused(q: q, k: k, v: v, selection: sel)
        #expect(ErrorStats(fused.o, want.o).relativeRMS <= 1e-5)
        #expect(ErrorStats(fused.lse, want.lse).maxAbs <= 1e-4)
        #expect(ErrorStats(try BlockSparseAttention.fused(q: q, k: k, v: v, mask: exact).o, want.o).relativeRMS <= 1e-5)
        // The block pattern heads attend their blocks: as through the mask.
        let superset = try BlockSparseAttention.reference(q: q, k: k, v: v, mask: sel.mask)
        let dense = try Attention.forward(q: q, k: k, v: v, options: AttentionOptions(), form: .flash)
        func head(_ x: Tensor, _ h: Int) -> [Float] {
            var out: [Float] = []
            for i in 0..<T { out += x.scalars[(i * Hq + h) * D..<(i * Hq + h + 1) * D] }
            return out
        }
        for h in [1, 3] { #expect(head(want.o, h) == head(superset.o, h)) }
        #expect(ErrorStats(head(want.o, 0), head(superset.o, 0)).relativeRMS > 1e-3, "the exact keys are fewer than the blocks'")
        // outputError: against dense, through the exact keys (not the blocks holding them).
        let error = try sel.outputError(q: q, k: k, v: v)
        #expect(abs(error - ErrorStats(fused.o.scalars, dense.o.scalars).relativeRMS) < 1e-12)
        #expect(abs(error - ErrorStats(superset.o.scalars, dense.o.scalars).relativeRMS) > 1e-4)
    }
    @Test func mInferenceTakesPatternsPerHeadAndTheSearchPicksTheBestRecall() throws {
        let (T, D, bs) = (128, 8, 16)
        let q = try Tensor.randomNormal([1, T, 3, D], seed: 81), k = try Tensor.randomNormal([1, T, 3, D], seed: 82)
        let given: [MInferencePattern] = [.aShape(sinks: 16, window: 32), .blockSparse(topK: 2), .verticalSlash(vertical: 40, slash: 100)]
        let perHead = try BlockSelector.mInference(q: q, k: k, blockSize: bs, patterns: given)
        #expect(perHead.patterns == given)
        // Head 1 through MInference's block-sparse pattern is the top-k selector's head 1.
        let topK = try BlockSelector.topK(q: q, k: k, blockSize: bs, topK: 2)
        let QB = T / bs
        for I in 0..<QB { #expect(Self.kept(perHead.mask, b: 0, h: 1, I) == Self.kept(topK.mask, b: 0, h: 1, I)) }
        // The search: every candidate's recall on the last 64 queries is at most the chosen one's.
        let candidates: [MInferencePattern] = [.aShape(sinks: 16, window: 16), .blockSparse(topK: 3)]
        let searched = try BlockSelector.mInference(q: q, k: k, blockSize: bs, patterns: candidates, search: true)
        for h in 0..<3 {
            func recall(_ m: BlockMask, _ head: Int) -> Double {
                var total = 0.0
                for i in T - 64..<T {
                    let s = (0...i).map { Self.dot(q, (i * 3 + h) * D, k, ($0 * 3 + h) * D, D: D) / Double(D).squareRoot() }
                    let mx = s.max()!, z = s.reduce(0.0) { $0 + exp($1 - mx) }
                    for j in 0...i where Self.kept(m, b: 0, h: head, i / bs).contains(j / bs) { total += exp(s[j] - mx) / z }
                }
                return total / 64
            }
            let chosen = recall(searched.mask, h)
            for c in candidates {
                let alone = try BlockSelector.mInference(q: q, k: k, blockSize: bs, patterns: [c])
                #expect(recall(alone.mask, h) <= chosen + 1e-9, "head \(h): \(c) beats the chosen \(searched.patterns[h])")
            }
            #expect(candidates.contains(searched.patterns[h]))
        }
    }

    // MARK: through the selected masks

    @Test func attentionThroughEachSelectorsMaskEqualsMaskedReference() throws {
        let (T, Hq, Hkv, D) = (200, 4, 2, 32)
        let q = try Tensor.randomNormal([1, T, Hq, D], seed: 91), k = try Tensor.randomNormal([1, T, Hkv, D], seed: 92)
        let v = try Tensor.randomNormal([1, T, Hkv, D], seed: 93)
        let selections = [
            try BlockSelector.xAttention(q: q, k: k, blockSize: 32, stride: 8, tau: 0.8),
            try BlockSelector.topK(q: q, k: k, blockSize: 32, topK: 2),
            try BlockSelector.mInference(q: q, k: k, blockSize: 32, patterns: [.aShape(sinks: 8, window: 40), .verticalSlash(vertical: 40, slash: 100)],
                                         search: true),
        ]
        for sel in selections {
            let want = try BlockSparseAttention.reference(q: q, k: k, v: v, mask: sel.mask)
            let got = try BlockSparseAttention.fused(q: q, k: k, v: v, mask: sel.mask)
            #expect(ErrorStats(got.o, want.o).relativeRMS <= 1e-5)
            #expect(sel.density > 0 && sel.density <= 1)
            let error = try sel.outputError(q: q, k: k, v: v)
            #expect(error.isFinite && error >= 0 && (sel.density < 1 || error < 1e-5))
        }
    }

    // MARK: bad input

    @Test func badInputGetsAnErrorNamingIt() throws {
        let q = try Tensor.randomNormal([1, 32, 2, 8], seed: 1), k = try Tensor.randomNormal([1, 32, 1, 8], seed: 2)
        func expectError(_ argument: String, _ body: () throws -> BlockSelection) {
            do {
                _ = try body()
                Issue.record("no error for \(argument)")
            } catch {
                #expect("\(error)".contains(argument), "\(error)")
            }
        }
        for tau in [0, -0.1, 1.01, .nan] { expectError("tau") { try BlockSelector.xAttention(q: q, k: k, blockSize: 8, stride: 2, tau: tau) } }
        expectError("stride") { try BlockSelector.xAttention(q: q, k: k, blockSize: 8, stride: 0) }
        expectError("stride") { try BlockSelector.xAttention(q: q, k: k, blockSize: 8, stride: 3) }
        expectError("block size") { try BlockSelector.xAttention(q: q, k: k, blockSize: 0, stride: 1) }
        expectError("block size") { try BlockSelector.topK(q: q, k: k, blockSize: 0, topK: 1) }
        expectError("top-k") { try BlockSelector.topK(q: q, k: k, blockSize: 8, topK: 0) }
        expectError("top-k") { try BlockSelector.mInference(q: q, k: k, blockSize: 8, patterns: [.blockSparse(topK: 0)]) }
        expectError("a-shape") { try BlockSelector.mInference(q: q, k: k, blockSize: 8, patterns: [.aShape(sinks: 1, window: 0)]) }
        expectError("vertical-slash") { try BlockSelector.mInference(q: q, k: k, blockSize: 8, patterns: [.verticalSlash(vertical: 0, slash: 5)]) }
        expectError("patterns") { try BlockSelector.mInference(q: q, k: k, blockSize: 8, patterns: [.blockSparse(topK: 1), .blockSparse(topK: 1), .blockSparse(topK: 1)]) }
        expectError("causal") { try BlockSelector.mInference(q: q, k: k, patterns: [.blockSparse(topK: 1)], options: AttentionOptions(causal: false)) }
        expectError("causal") { try BlockSelector.mInference(q: q, k: k, patterns: [.verticalSlash(vertical: 1, slash: 1)], options: AttentionOptions(causal: false)) }
        let longer = try Tensor.randomNormal([1, 40, 1, 8], seed: 4)
        expectError("T == S") { try BlockSelector.mInference(q: q, k: longer, blockSize: 8, patterns: [.verticalSlash(vertical: 1, slash: 1)]) }
        expectError("T == S") { try BlockSelector.mInference(q: q, k: longer, blockSize: 8, patterns: [.aShape(sinks: 1, window: 4), .verticalSlash(vertical: 1, slash: 1)], search: true) }
        expectError("window") { try BlockSelector.topK(q: q, k: k, topK: 1, options: AttentionOptions(window: 4)) }
        expectError("q") { try BlockSelector.topK(q: try q.reshaped([32, 2, 8]), k: k, topK: 1) }
        expectError("k") { try BlockSelector.topK(q: q, k: try Tensor.randomNormal([1, 32, 1, 4], seed: 3), topK: 1) }
        expectError("k heads") { try BlockSelector.topK(q: q, k: try Tensor.randomNormal([1, 32, 3, 8], seed: 3), topK: 1) }
        expectError("q, k") { try BlockSelector.topK(q: try Tensor(zeros: [1, 0, 2, 8]), k: k, topK: 1) }
    }
}
