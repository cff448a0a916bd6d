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

    @Test func mInferenceVerticalSlashKeepsEveryBlockHoldingASelectedColumnOrDiagonal() throws {
        let (T, S, D, bs, vertical, slash) = (384, 384, 8, 16, 34, 104)  // rows far past the forced diagonals
        let q = try Tensor.randomNormal([1, T, 1, D], seed: 71), k = try Tensor.randomNormal([1, S, 1, D], seed: 72)
        let sel = try BlockSelector.mInference(q: q, k: k, blockSize: bs, patterns: [.verticalSlash(vertical: vertical, slash: slash)])
        // The last 64 queries' attention, summed per column and per diagonal.
        var columns = [Double](repeating: 0, count: S), diagonals = [Double](repeating: 0, count: S)
        for i in T - 64..<T {
            let s = (0...i).map { Self.dot(q, i * D, k, $0 * D, D: D) / Double(D).squareRoot() }
            let m = s.max()!, z = s.reduce(0.0) { $0 + exp($1 - m) }
            for j in 0...i { columns[j] += exp(s[j] - m) / z; diagonals[i - j] += exp(s[j] - m) / z }
        }
        func top(_ x: [Double], forced: Int, _ n: Int) -> Set<Int> {
            Set(Array(0..<forced) + (forced..<S).sorted { x[$0] > x[$1] || (x[$0] == x[$1] && $0 < $1) }.prefix(n - forced))
        }
        let (cols, diags) = (top(columns, forced: 30, vertical), top(diagonals, forced: 100, slash))
        for I in 0..<T / bs {
            var want = Set<Int>()
            for i in I * bs..<(I + 1) * bs { for j in 0...i where cols.contains(j) || diags.contains(i - j) { want.insert(j / bs) } }
            #expect(Self.kept(sel.mask, b: 0, h: 0, I) == want, "row \(I)")
        }
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
        expectError("window") { try BlockSelector.topK(q: q, k: k, topK: 1, options: AttentionOptions(window: 4)) }
        expectError("q") { try BlockSelector.topK(q: try q.reshaped([32, 2, 8]), k: k, topK: 1) }
        expectError("k") { try BlockSelector.topK(q: q, k: try Tensor.randomNormal([1, 32, 1, 4], seed: 3), topK: 1) }
        expectError("k heads") { try BlockSelector.topK(q: q, k: try Tensor.randomNormal([1, 32, 3, 8], seed: 3), topK: 1) }
        expectError("q, k") { try BlockSelector.topK(q: try Tensor(zeros: [1, 0, 2, 8]), k: k, topK: 1) }
    }
}
