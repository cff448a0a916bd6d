import Foundation
import Linea
import Testing

@Suite struct ScanOrderTests {
    static let grids: [[Int]] = [[1, 1], [1, 9], [5, 7], [16, 16], [13, 4], [1, 1, 1], [3, 5, 7], [4, 4, 4], [8, 16, 16], [2, 9, 3]]

    /// Every scan of every order on 2-D and 3-D grids (squares, powers of two, odd and thin shapes) is a permutation,
    /// its inverse undoes it, and gathering then scattering a tensor gives it back bit for bit.
    @Test(arguments: ScanOrderKind.allCases)
    func everyScanIsAPermutationWithAnExactInverse(_ kind: ScanOrderKind) throws {
        for grid in Self.grids {
            let order = try ScanOrder(kind, grid: grid)
            let n = grid.reduce(1, *)
            #expect(order.tokens == n && order.permutations.count == ScanOrder.scanCount(kind, rank: grid.count), "\(kind) \(grid)")
            let x = try Tensor.randomNormal([2, n, 3], seed: 4)
            for (s, (perm, inverse)) in zip(order.permutations, order.inverses).enumerated() {
                #expect(perm.sorted() == Array(0..<n), "\(kind) \(grid) scan \(s) is not a permutation")
                #expect(perm.indices.allSatisfy { inverse[perm[$0]] == $0 && perm[inverse[$0]] == $0 }, "\(kind) \(grid) scan \(s)")
                let gathered = try order.gather(x, scan: s)
                #expect(n == 1 || gathered.scalars[3 * 1 ..< 3 * 2] == x.scalars[3 * perm[1] ..< 3 * perm[1] + 3])
                #expect(try order.scatter(gathered, scan: s) == x, "\(kind) \(grid) scan \(s)")
            }
        }
    }

    /// Small orders worked out by hand (raster numbering, last axis fastest).
    @Test func smallOrdersWorkedOutByHand() throws {
        #expect(try ScanOrder(.cross, grid: [2, 3]).permutations == [[0, 1, 2, 3, 4, 5], [0, 3, 1, 4, 2, 5], [5, 4, 3, 2, 1, 0], [5, 2, 4, 1, 3, 0]])
        #expect(try ScanOrder(.bidirectional, grid: [1, 3]).permutations == [[0, 1, 2], [2, 1, 0]])
        #expect(try ScanOrder(.zigzag, grid: [3, 3]).permutations == [[0, 1, 2, 5, 4, 3, 6, 7, 8]])
        // Frame 1 walks frame 0's snake backwards: 3 2 0 1 -> 4 5 7 6 reversed.
        #expect(try ScanOrder(.zigzag, grid: [2, 2, 2]).permutations == [[0, 1, 3, 2, 6, 7, 5, 4]])
        #expect(try ScanOrder(.hilbert, grid: [2, 2]).permutations[0].count == 4)
        let rotary = try ScanOrder(.rotaryMajor, grid: [2, 2, 2]).permutations
        #expect(rotary == [[0, 1, 2, 3, 4, 5, 6, 7], [0, 2, 1, 3, 4, 6, 5, 7], [0, 4, 1, 5, 2, 6, 3, 7], [0, 4, 2, 6, 1, 5, 3, 7]])
        #expect(try ScanOrder(.rotaryMajor, grid: [2, 3]).permutations == [[0, 1, 2, 3, 4, 5], [0, 3, 1, 4, 2, 5]])
        #expect(try ScanOrder(.cross, grid: [2, 1, 2]).permutations[1] == [0, 1, 2, 3])
    }

    /// Consecutive tokens of the Hilbert curve are grid neighbours when every side is the same power of two, and of the
    /// zig-zag on every grid; the Hilbert curve on a padded grid keeps most steps short.
    @Test func hilbertAndZigzagStepsAreNeighbours() throws {
        func coordinates(_ i: Int, _ grid: [Int]) -> [Int] {
            var (rest, c) = (i, [Int](repeating: 0, count: grid.count))
            for a in stride(from: grid.count - 1, through: 0, by: -1) {
                c[a] = rest % grid[a]
                rest /= grid[a]
            }
            return c
        }
        func steps(_ kind: ScanOrderKind, _ grid: [Int]) throws -> [Int] {
            let perm = try ScanOrder(kind, grid: grid).permutations[0]
            return (1..<perm.count).map { i in zip(coordinates(perm[i - 1], grid), coordinates(perm[i], grid)).reduce(0) { $0 + abs($1.0 - $1.1) } }
        }
        for grid in [[2, 2], [8, 8], [16, 16], [4, 4, 4], [8, 8, 8]] {
            #expect(try steps(.hilbert, grid).allSatisfy { $0 == 1 }, "hilbert \(grid)")
        }
        for grid in Self.grids where grid.reduce(1, *) > 1 {
            #expect(try steps(.zigzag, grid).allSatisfy { $0 == 1 }, "zigzag \(grid)")
        }
        let padded = try steps(.hilbert, [13, 10])
        #expect(Double(padded.filter { $0 == 1 }.count) >= 0.8 * Double(padded.count), "\(padded)")
    }

    /// The Hilbert order (cells sorted by their index on the curve) equals walking the padded cube's curve from index
    /// to coordinates (Skilling's forward map, written out here) and skipping the cells outside the grid.
    @Test func hilbertEqualsThePaddedWalk() throws {
        func walk(_ grid: [Int]) -> [Int] {
            let n = grid.count
            var bits = 0
            while 1 << bits < grid.max()! { bits += 1 }
            var strides = [Int](repeating: 1, count: n)
            for a in stride(from: n - 2, through: 0, by: -1) { strides[a] = strides[a + 1] * grid[a + 1] }
            var result: [Int] = []
            for index in 0..<(1 << (bits * n)) {
                var x = [Int](repeating: 0, count: n)
                for level in 0..<bits {
                    for i in 0..<n where index >> (level * n + n - 1 - i) & 1 == 1 { x[i] |= 1 << level }
                }
                let top = x[n - 1] >> 1
                for i in stride(from: n - 1, to: 0, by: -1) { x[i] ^= x[i - 1] }
                x[0] ^= top
                var q = 2
                while q < 1 << bits {
                    for i in stride(from: n - 1, through: 0, by: -1) {
                        if x[i] & q != 0 { x[0] ^= q - 1 } else {
                            let swap = (x[0] ^ x[i]) & (q - 1)
                            x[0] ^= swap
                            x[i] ^= swap
                        }
                    }
                    q <<= 1
                }
                if zip(x, grid).allSatisfy({ $0 < $1 }) { result.append(zip(x, strides).reduce(0) { $0 + $1.0 * $1.1 }) }
            }
            return result
        }
        for grid in [[1, 1], [2, 2], [3, 5], [8, 8], [13, 10], [1, 37], [4, 4, 4], [3, 7, 5], [1, 9, 2]] {
            #expect(try ScanOrder(.hilbert, grid: grid).permutations[0] == walk(grid), "\(grid)")
        }
        let started = Date()
        #expect(try ScanOrder(.hilbert, grid: [1, 1 << 16]).permutations[0].count == 1 << 16)
        #expect(Date().timeIntervalSince(started) < 10)
    }

    /// A bidirectional causal mixer (simple_gla, chunked) over a raster order equals the mixer forward plus the mixer on
    /// the reversed sequence put back in order; concatenation stacks the two along the last axis.
    @Test func bidirectionalMixerIsForwardPlusReversed() throws {
        let (B, N, H, K, V) = (2, 4 * 6, 2, 16, 8)
        let x = try RecurrenceInputs.random(.simpleGLA, B: B, T: N, H: H, K: K, V: V, seed: 9, initialState: false)
        let inputs = [x.q, x.k, x.v, x.g!]
        func mixer(_ t: [Tensor]) throws -> Tensor {
            try Recurrence.forward(.simpleGLA, RecurrenceInputs(q: t[0], k: t[1], v: t[2], g: t[3]), form: .chunked(size: 8)).o
        }
        func reversed(_ t: Tensor) -> Tensor {
            let inner = t.count / (B * N)
            var out = t
            for b in 0..<B { for i in 0..<N { for j in 0..<inner { out.scalars[(b * N + i) * inner + j] = t.scalars[(b * N + N - 1 - i) * inner + j] } } }
            return out
        }
        let order = try ScanOrder(.bidirectional, grid: [4, 6])
        let forward = try mixer(inputs), backward = reversed(try mixer(inputs.map(reversed)))
        let got = try order.mix(inputs, merge: .sum, mixer: mixer)
        var want = forward
        for i in 0..<want.count { want.scalars[i] += backward.scalars[i] }
        #expect(ErrorStats(got, want).maxAbs == 0, "\(ErrorStats(got, want))")
        #expect(ErrorStats(forward, want).relativeRMS > 0.1)  // the reversed scan contributes
        // The same through device tensors and the dispatch's simple_gla (here on the CPU).
        let onDevice = try order.mix(try inputs.map { try DeviceTensor($0) }) { t in
            try Recurrence.forward(.simpleGLA, q: t[0], k: t[1], v: t[2], g: t[3], form: .chunked(size: 8)).o
        }
        let deviceError = ErrorStats(try onDevice.host(), want)
        #expect(deviceError.relativeRMS <= 1e-6, "\(deviceError)")
        let both = try order.mix(inputs, merge: .concatenate, mixer: mixer)
        #expect(both.shape == [B, N, H, 2 * V])
        #expect(both.scalars[3 * V ..< 4 * V] == backward.scalars[V ..< 2 * V])  // row (b 0, token 0, head 1): its second half
    }

    /// Bad input names it: non-positive or too few sizes, an unknown order, a grid that does not match the tokens.
    @Test func badInputNamesIt() throws {
        func message(_ body: () throws -> Any) -> String {
            do { _ = try body(); return "no error" } catch { return "\(error)" }
        }
        #expect(message { try ScanOrder(.raster, grid: [0, 4]) } == "grid: expected sizes >= 1, got [0, 4]")
        #expect(message { try ScanOrder(.hilbert, grid: [4, -2, 3]) } == "grid: expected sizes >= 1, got [4, -2, 3]")
        #expect(message { try ScanOrder(.cross, grid: [16]) }.hasPrefix("grid: expected 2 or 3 sizes"))
        #expect(message { try ScanOrder(.cross, grid: [2, 2, 2, 2]) }.hasPrefix("grid: expected 2 or 3 sizes"))
        #expect(message { try ScanOrder(.raster, grid: [1 << 20, 1 << 20]) }.hasPrefix("grid: expected fewer than 2^31 tokens"))
        #expect(message { try ScanOrder(named: "spiral", grid: [4, 4]) }.hasPrefix("order: expected one of raster, bidirectional, cross, hilbert, zigzag, rotary-major, got 'spiral'"))
        #expect(message { try ScanOrder.parseGrid("16,x") }.hasPrefix("--grid: expected 2 or 3 comma-separated integers"))
        #expect(message { try ScanOrder.parseGrid("16,0") } == "--grid: expected sizes >= 1, got '16,0'")
        let order = try ScanOrder(.cross, grid: [4, 4])
        let good = try Tensor.randomNormal([1, 16, 2], seed: 1), bad = try Tensor.randomNormal([1, 15, 2], seed: 1)
        #expect(message { try order.mix([good, bad]) { $0[0] } }.hasPrefix("inputs[1]: expected shape [B, 16, ...]: the 4x4 grid's 16 tokens on axis 1, got [1, 15, 2]"))
        #expect(message { try order.mix([good]) { _ in bad } }.hasPrefix("the mixer's output of scan 0: expected shape [B, 16, ...]"))
    }
}
