import Foundation
import Linea
import Testing

@Suite struct BlockSparseTests {
    /// (B, T, S, Hq, Hkv, D, Dv, bm, bn, causal, window): block sizes that do and do not divide T and S.
    static let grid: [(Int, Int, Int, Int, Int, Int, Int, Int, Int, Bool, Int?)] = [
        (1, 1, 1, 2, 2, 16, 16, 64, 64, true, nil),
        (2, 65, 65, 4, 2, 32, 24, 64, 64, true, nil),
        (1, 100, 300, 2, 1, 16, 16, 16, 48, false, nil),
        (1, 130, 130, 2, 2, 16, 16, 32, 32, true, 40),
        (1, 100, 40, 2, 2, 16, 16, 64, 64, true, nil),  // more queries than keys: the first 60 see nothing
    ]

    @Test(arguments: grid.indices)
    func allOnesMaskEqualsDenseAttention(_ index: Int) throws {
        let (B, T, S, Hq, Hkv, D, Dv, bm, bn, causal, window) = Self.grid[index]
        let q = try Tensor.randomNormal([B, T, Hq, D], seed: 3), k = try Tensor.randomNormal([B, S, Hkv, D], seed: 4)
        let v = try Tensor.randomNormal([B, S, Hkv, Dv], seed: 5)
        let options = AttentionOptions(causal: causal, window: window)
        let want = try Attention.forward(q: q, k: k, v: v, options: options, form: .reference)
        let got = try BlockSparseAttention.reference(q: q, k: k, v: v, mask: .dense(T: T, S: S, blockRows: bm, blockKeys: bn), options: options)
        let eo = ErrorStats(got.o, want.o), el = ErrorStats(got.lse, want.lse)
        #expect(eo.relativeRMS <= 1e-6 && el.relativeRMS <= 1e-6, "o \(eo); lse \(el)")
    }

    /// No query row (B = 0) against a key axis of 2^33: empty outputs at once, no scratch sized by the key axis (64 GiB
    /// of Float64 scores, which the memory limit would refuse).
    @Test func emptyBatchWithAHugeKeyAxisReturnsAtOnce() throws {
        let (T, S) = (1 << 20, 1 << 33)
        let q = try Tensor(zeros: [0, T, 3, 4]), k = try Tensor(zeros: [0, S, 1, 4]), v = try Tensor(zeros: [0, S, 1, 7])
        let got = try BlockSparseAttention.reference(q: q, k: k, v: v, mask: .dense(T: T, S: S, blockRows: 1 << 20, blockKeys: 1 << 20))
        #expect(got.o.shape == [0, T, 3, 7] && got.lse.shape == [0, T, 3])
    }

    @Test func droppedBlocksAreInvisibleAndEmptyRowsGiveZeroAndMinusInfinity() throws {
        // T = S = 4, blocks of 2: query block 0 sees key block 1 only, query block 1 sees nothing.
        let q = try Tensor.randomNormal([1, 4, 1, 8], seed: 1), k = try Tensor.randomNormal([1, 4, 1, 8], seed: 2)
        let v = try Tensor.randomNormal([1, 4, 1, 8], seed: 3)
        let mask = try BlockMask(shape: [1, 1, 2, 2], blockRows: 2, blockKeys: 2, bools: [false, true, false, false])
        let got = try BlockSparseAttention.reference(q: q, k: k, v: v, mask: mask, options: AttentionOptions(causal: false))
        // Rows 0-1 equal dense attention over keys 2-3 alone.
        let sub = { (t: Tensor) in try Tensor(shape: [1, 2, 1, 8], scalars: Array(t.scalars[16..<32])) }
        let want = try Attention.forward(q: try Tensor(shape: [1, 2, 1, 8], scalars: Array(q.scalars[0..<16])), k: sub(k), v: sub(v),
                                         options: AttentionOptions(causal: false), form: .reference)
        #expect(ErrorStats(Array(got.o.scalars[0..<16]), want.o.scalars).relativeRMS <= 1e-6)
        #expect(ErrorStats(Array(got.lse.scalars[0..<2]), want.lse.scalars).relativeRMS <= 1e-6)
        #expect(got.o.scalars[16..<32].allSatisfy { $0 == 0 })
        #expect(got.lse.scalars[2...3].allSatisfy { $0 == -.infinity })
    }

    @Test func perHeadMaskSelectsEachHeadsBlocks() throws {
        // Head 0 keeps everything, head 1 nothing: head 0 equals dense attention, head 1 is empty.
        let q = try Tensor.randomNormal([1, 6, 2, 8], seed: 7), k = try Tensor.randomNormal([1, 6, 2, 8], seed: 8)
        let mask = try BlockMask(shape: [1, 2, 2, 2], blockRows: 3, blockKeys: 3, bools: [true, true, true, true, false, false, false, false])
        let got = try BlockSparseAttention.reference(q: q, k: k, v: k, mask: mask, options: AttentionOptions(causal: true))
        let dense = try Attention.forward(q: q, k: k, v: k, options: AttentionOptions(causal: true), form: .reference)
        for t in 0..<6 {
            #expect(got.lse.scalars[t * 2] == dense.lse.scalars[t * 2] || abs(got.lse.scalars[t * 2] - dense.lse.scalars[t * 2]) < 1e-6)
            #expect(got.lse.scalars[t * 2 + 1] == -.infinity)
        }
    }

    @Test func badMasksGetClearErrors() throws {
        let q = try Tensor.randomNormal([2, 65, 2, 8], seed: 1), k = try Tensor.randomNormal([2, 65, 2, 8], seed: 2)
        // 65 queries in blocks of 64 need 2 mask rows, not 1.
        let short = try BlockMask(shape: [1, 1, 1, 2], blockRows: 64, blockKeys: 64, values: [1, 1])
        #expect(throws: LineaError.self) { try BlockSparseAttention.reference(q: q, k: k, v: k, mask: short) }
        let threeHeads = try BlockMask(shape: [1, 3, 2, 2], blockRows: 64, blockKeys: 64, values: [UInt8](repeating: 1, count: 12))
        #expect(throws: LineaError.self) { try BlockSparseAttention.reference(q: q, k: k, v: k, mask: threeHeads) }
        #expect(throws: LineaError.self) { try BlockMask(shape: [1, 1, 2, 2], blockRows: 64, blockKeys: 64, values: [1, 1, 1]) }
        #expect(throws: LineaError.self) { try BlockMask(shape: [1, 1, 2, 2], blockRows: 0, blockKeys: 64, values: [1, 1, 1, 1]) }
    }
}
