import Foundation
import Linea
import Testing

/// The selectors' device path on the CPU backend: scores through `BlockScoresCall` into f32 arrays, then the host's
/// selection code. It must choose what the host selectors choose, and its scores must match their definitions.
@Suite struct BlockSelectorDeviceTests {
    /// (B, T, S, Hq, Hkv, D, block size, causal): partial last blocks, T != S both ways, grouped heads.
    static let grid: [(Int, Int, Int, Int, Int, Int, Int, Bool)] = [
        (1, 200, 200, 4, 2, 16, 32, true), (2, 100, 130, 2, 1, 8, 16, true), (1, 130, 90, 2, 2, 8, 16, true),
        (1, 96, 96, 2, 1, 16, 16, false), (1, 70, 110, 3, 3, 8, 32, false),
    ]

    static func inputs(_ c: (Int, Int, Int, Int, Int, Int, Int, Bool), seed: UInt64) throws -> (Tensor, Tensor) {
        let (B, T, S, Hq, Hkv, D, _, _) = c
        return (try Tensor.randomNormal([B, T, Hq, D], seed: seed), try Tensor.randomNormal([B, S, Hkv, D], seed: seed &+ 1))
    }

    static func expectSame(_ got: BlockSelection, _ want: BlockSelection, _ label: String) {
        #expect(got.mask == want.mask, "\(label): \(zip(got.mask.values, want.mask.values).filter { $0 != $1 }.count) blocks differ")
        #expect(got.kept == want.kept && got.visible == want.visible && got.density == want.density, "\(label)")
        #expect(got.patterns == want.patterns, "\(label)")
        #expect(got.keys == want.keys, "\(label): exact keys")
    }

    @Test(arguments: grid.indices)
    func devicePathChoosesAsTheHost(_ index: Int) throws {
        let c = Self.grid[index]
        let (_, _, _, _, _, _, bs, causal) = c
        let (q, k) = try Self.inputs(c, seed: UInt64(100 + index))
        let (dq, dk) = (try DeviceTensor(q), try DeviceTensor(k))
        let options = AttentionOptions(causal: causal)
        for tau in [0.5, 0.9] {
            Self.expectSame(try BlockSelector.xAttention(q: dq, k: dk, blockSize: bs, stride: 4, tau: tau, options: options),
                            try BlockSelector.xAttention(q: q, k: k, blockSize: bs, stride: 4, tau: tau, options: options), "xattention \(index) tau \(tau)")
        }
        Self.expectSame(try BlockSelector.topK(q: dq, k: dk, blockSize: bs, topK: 2, options: options),
                        try BlockSelector.topK(q: q, k: k, blockSize: bs, topK: 2, options: options), "topk \(index)")
        guard causal else { return }
        // Vertical-slash takes T == S only.
        let candidates: [MInferencePattern] = [.aShape(sinks: 8, window: 24), .blockSparse(topK: 2)]
            + (c.1 == c.2 ? [.verticalSlash(vertical: 40, slash: 110)] : [])
        Self.expectSame(try BlockSelector.mInference(q: dq, k: dk, blockSize: bs, patterns: candidates, search: true, lastQueries: 48),
                        try BlockSelector.mInference(q: q, k: k, blockSize: bs, patterns: candidates, search: true, lastQueries: 48),
                        "minference search \(index)")
        guard c.1 == c.2 else { return }
        let perHead = Array(repeating: MInferencePattern.verticalSlash(vertical: 35, slash: 105), count: c.3)
        Self.expectSame(try BlockSelector.mInference(q: dq, k: dk, blockSize: bs, patterns: perHead),
                        try BlockSelector.mInference(q: q, k: k, blockSize: bs, patterns: perHead), "minference vertical-slash \(index)")
    }

    /// XAttention's scores array against the brute force of BlockSelectorTests, and the last queries' sums against
    /// their definition: each visible query's probabilities sum to 1 in every one of the three sums.
    @Test(arguments: grid.indices)
    func scoresMatchTheirDefinitions(_ index: Int) throws {
        let c = Self.grid[index]
        let (B, T, S, Hq, _, _, bs, causal) = c
        let (q, k) = try Self.inputs(c, seed: UInt64(200 + index))
        let options = AttentionOptions(causal: causal)
        let x = try BlockSelector.scores(.antidiagonal(stride: 4), q: DeviceTensor(q), k: DeviceTensor(k), blockSize: bs, options: options)
        let (QB, KB) = ((T + bs - 1) / bs, (S + bs - 1) / bs)
        #expect(x.blocks.shape == [B, Hq, QB, KB] && x.columns == nil)
        let got = try x.blocks.host().scalars
        for b in 0..<B {
            for h in 0..<Hq {
                let want = BlockSelectorTests.xAttentionScores(q: q, k: k, b: b, h: h, bs: bs, s: 4, causal: causal)
                for I in 0..<QB { for J in 0..<KB {
                    let g = Double(got[((b * Hq + h) * QB + I) * KB + J])
                    #expect(abs(g - want[I][J]) <= 1e-5 * max(1, abs(want[I][J])), "b\(b) h\(h) (\(I), \(J)): \(g) vs \(want[I][J])")
                } }
            }
        }
        guard causal else {
            #expect(throws: LineaError.self) { _ = try BlockSelector.scores(.lastQueries(count: 64), q: DeviceTensor(q), k: DeviceTensor(k), blockSize: bs, options: options) }
            return
        }
        let n = 40
        let e = try BlockSelector.scores(.lastQueries(count: n), q: DeviceTensor(q), k: DeviceTensor(k), blockSize: bs, options: options)
        let rows = (T - 1) / bs - (T - n) / bs + 1
        #expect(e.blocks.shape == [B, Hq, rows, KB] && e.columns?.shape == [B, Hq, S] && e.diagonals?.shape == [B, Hq, S])
        let seeing = Double((T - n..<T).filter { $0 + S - T >= 0 }.count)
        for (name, t, perHead) in [("mass", e.blocks, rows * KB), ("columns", e.columns!, S), ("diagonals", e.diagonals!, S)] {
            let v = try t.host().scalars
            for head in 0..<B * Hq {
                let sum = v[head * perHead..<(head + 1) * perHead].reduce(0.0) { $0 + Double($1) }
                #expect(abs(sum - seeing) <= 1e-4 * max(1, seeing), "\(name) head \(head): \(sum) vs \(seeing)")
            }
        }
    }

    @Test func attentionThroughASelectionEqualsTheMaskForm() throws {
        let (q, k) = try Self.inputs(Self.grid[0], seed: 7)
        let v = try Tensor.randomNormal(k.shape, seed: 9)
        let sel = try BlockSelector.topK(q: DeviceTensor(q), k: DeviceTensor(k), blockSize: 32, topK: 2)
        let got = try BlockSparseAttention.forward(q: DeviceTensor(q), k: DeviceTensor(k), v: DeviceTensor(v), selection: sel)
        let want = try BlockSparseAttention.reference(q: q, k: k, v: v, mask: sel.mask)
        #expect(ErrorStats(try got.o.host(), want.o).relativeRMS <= 1e-5)
        #expect(try sel.deviceMask(on: .cpu).shape == sel.mask.shape)
        // Exact keys (vertical-slash) run as 1-key blocks: the device call attends exactly them.
        let vs = try BlockSelector.mInference(q: q, k: k, blockSize: 32, patterns: [.verticalSlash(vertical: 30, slash: 50)])
        let exact = try BlockSparseAttention.forward(q: DeviceTensor(q), k: DeviceTensor(k), v: DeviceTensor(v), selection: vs)
        #expect(ErrorStats(try exact.o.host(), try BlockSparseAttention.reference(q: q, k: k, v: v, selection: vs).o).relativeRMS <= 1e-5)
        #expect(try vs.deviceMask(on: .cpu).shape == [vs.mask.shape[0], vs.mask.shape[1], vs.mask.shape[2], k.shape[1]])
    }

    @Test func deviceSelectorsCheckTheirArguments() throws {
        let (q, k) = (try DeviceTensor(Tensor.randomNormal([1, 32, 2, 8], seed: 1)), try DeviceTensor(Tensor.randomNormal([1, 32, 1, 8], seed: 2)))
        #expect(throws: LineaError.self) { _ = try BlockSelector.xAttention(q: q, k: k, blockSize: 8, stride: 3) }
        #expect(throws: LineaError.self) { _ = try BlockSelector.xAttention(q: q, k: k, blockSize: 8, stride: 2, tau: 0) }
        #expect(throws: LineaError.self) { _ = try BlockSelector.topK(q: q, k: k, blockSize: 8, topK: 0) }
        #expect(throws: LineaError.self) { _ = try BlockSelector.mInference(q: q, k: k, blockSize: 8, patterns: [.blockSparse(topK: 1)], options: AttentionOptions(causal: false)) }
        #expect(throws: LineaError.self) { _ = try BlockSelector.topK(q: q, k: k, topK: 1, options: AttentionOptions(window: 4)) }
        // The CPU backend checks values as the host selectors do.
        let bad = try DeviceTensor(Tensor(shape: [1, 32, 2, 8], scalars: [Float](repeating: .nan, count: 512)))
        #expect(throws: LineaError.self) { _ = try BlockSelector.topK(q: bad, k: k, blockSize: 8, topK: 1) }
    }
}
