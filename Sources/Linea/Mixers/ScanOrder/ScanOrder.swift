import Foundation

// Scan orders: the ways a causal (1-D) mixer reads the tokens of an image or a video. A grid's tokens are numbered in
// raster order (row-major: the last axis varies fastest; for video the first axis is time), and an order is one or
// more permutations of those numbers: scan s visits token perm[s][i] at step i. A mixer runs on the gathered sequence
// and its outputs are put back with the inverse, inverse[s][perm[s][i]] = i.

/// The scan orders of images (2-D grids `[H, W]`) and videos (3-D grids `[T, H, W]`).
public enum ScanOrderKind: String, CaseIterable, Sendable {
    /// Row-major, one scan.
    case raster
    /// Raster and its reverse (two scans, as bidirectional Mamba).
    case bidirectional
    /// VMamba's cross scan: row-major, column-major, and the reverses of both (four scans). On a 3-D grid the
    /// column-major scan transposes each frame and keeps time outermost.
    case cross
    /// The Hilbert curve of the smallest power-of-two square (cube) holding the grid, with the cells outside the grid
    /// skipped: still a permutation, neighbours stay close; consecutive tokens are adjacent when every side is the
    /// same power of two. One scan.
    case hilbert
    /// Boustrophedon: rows alternate direction; on a 3-D grid every other frame is walked backwards, so consecutive
    /// tokens are always grid neighbours. One scan.
    case zigzag
    /// LinGen's Rotary Major Scan: the schemes its blocks rotate through, one per block (block l uses scan l mod n):
    /// 3-D `[T, H, W]`: spatial row-major (t, h, w), spatial column-major (t, w, h), temporal row-major (h, w, t),
    /// temporal column-major (w, h, t), the first axis the outermost loop; 2-D: row-major and column-major.
    case rotaryMajor = "rotary-major"
}

/// A scan order on one grid: its permutations and their inverses.
public struct ScanOrder: Sendable, Equatable {
    /// The order.
    public let kind: ScanOrderKind
    /// The grid's sizes, outermost first (`[H, W]` or `[T, H, W]`).
    public let grid: [Int]
    /// One permutation per scan: `perm[s][i]` is the raster index of the token scan s visits at step i.
    public let permutations: [[Int]]

    /// The order `kind` on `grid` (2 or 3 positive sizes); throws naming `grid` for a bad grid and for a Hilbert curve
    /// whose padded cube would exceed 2^28 cells. O(scans · tokens) (Hilbert: O(padded cells · log side)).
    public init(_ kind: ScanOrderKind, grid: [Int]) throws {
        let n = try Self.tokenCount(grid)
        try MemoryBudget.check([.init("permutations and inverses", [2 * Self.scanCount(kind, rank: grid.count), n], elementBytes: 8)])
        self.kind = kind
        self.grid = grid
        let raster = Array(0..<n)
        switch kind {
        case .raster: permutations = [raster]
        case .bidirectional: permutations = [raster, raster.reversed()]
        case .cross:
            let column = Self.axisOrder(grid, grid.count == 2 ? [1, 0] : [0, 2, 1])
            permutations = [raster, column, raster.reversed(), column.reversed()]
        case .hilbert: permutations = [try Self.hilbert(grid)]
        case .zigzag: permutations = [Self.zigzag(grid)]
        case .rotaryMajor:
            let schemes = grid.count == 2 ? [[0, 1], [1, 0]] : [[0, 1, 2], [0, 2, 1], [1, 2, 0], [2, 1, 0]]
            permutations = schemes.map { Self.axisOrder(grid, $0) }
        }
    }

    /// The order named `name` (`ScanOrderKind`'s raw values) on `grid`; throws naming `order` for an unknown name. O(init).
    public init(named name: String, grid: [Int]) throws {
        guard let kind = ScanOrderKind(rawValue: name) else {
            throw LineaError.invalidArgument(argument: "order", expected: "one of " + ScanOrderKind.allCases.map(\.rawValue).joined(separator: ", "),
                                             actual: "'\(name)'")
        }
        try self.init(kind, grid: grid)
    }

    /// The number of tokens, the product of the sizes. O(1).
    public var tokens: Int { permutations[0].count }

    /// The inverse of every scan: `inverses[s][permutations[s][i]] == i`. O(scans · tokens).
    public var inverses: [[Int]] {
        permutations.map { perm in
            var inverse = [Int](repeating: 0, count: perm.count)
            for (i, p) in perm.enumerated() { inverse[p] = i }
            return inverse
        }
    }

    /// How many scans `kind` has on a grid of `rank` axes. O(1).
    public static func scanCount(_ kind: ScanOrderKind, rank: Int) -> Int {
        switch kind {
        case .raster, .hilbert, .zigzag: 1
        case .bidirectional: 2
        case .cross: 4
        case .rotaryMajor: rank == 2 ? 2 : 4
        }
    }

    /// The product of `grid`'s sizes; throws naming `grid` unless it has 2 or 3 sizes, each >= 1, with a product
    /// below 2^31. O(rank).
    public static func tokenCount(_ grid: [Int]) throws -> Int {
        guard grid.count == 2 || grid.count == 3 else {
            throw LineaError.invalidArgument(argument: "grid", expected: "2 or 3 sizes ([H, W] or [T, H, W])", actual: "\(grid)")
        }
        var n = 1
        for size in grid {
            guard size >= 1 else { throw LineaError.invalidArgument(argument: "grid", expected: "sizes >= 1", actual: "\(grid)") }
            let (product, overflow) = n.multipliedReportingOverflow(by: size)
            guard !overflow, product < 1 << 31 else {
                throw LineaError.invalidArgument(argument: "grid", expected: "fewer than 2^31 tokens", actual: "\(grid)")
            }
            n = product
        }
        return n
    }

    /// Parses `16,16` or `8,16,16` (the `--grid` option); throws naming `--grid`. O(length).
    public static func parseGrid(_ text: String) throws -> [Int] {
        let sizes = text.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard sizes.allSatisfy({ $0 != nil }) else {
            throw LineaError.invalidArgument(argument: "--grid", expected: "2 or 3 comma-separated integers (e.g. 16,16 or 8,16,16)", actual: "'\(text)'")
        }
        let grid = sizes.map { $0! }
        do { _ = try tokenCount(grid) } catch LineaError.invalidArgument(_, let expected, _) {
            throw LineaError.invalidArgument(argument: "--grid", expected: expected, actual: "'\(text)'")
        }
        return grid
    }

    /// The raster index of each cell as loops over `axes` visit them (`axes[0]` the outermost loop). O(tokens).
    static func axisOrder(_ grid: [Int], _ axes: [Int]) -> [Int] {
        let n = grid.reduce(1, *)
        var strides = [Int](repeating: 1, count: grid.count)
        for a in stride(from: grid.count - 2, through: 0, by: -1) { strides[a] = strides[a + 1] * grid[a + 1] }
        var result: [Int] = []
        result.reserveCapacity(n)
        var counter = [Int](repeating: 0, count: grid.count)  // indexed like `axes`
        for _ in 0..<n {
            result.append(zip(axes, counter).reduce(0) { $0 + strides[$1.0] * $1.1 })
            var level = axes.count - 1
            while level >= 0 {
                counter[level] += 1
                if counter[level] < grid[axes[level]] { break }
                counter[level] = 0
                level -= 1
            }
        }
        return result
    }

    /// Boustrophedon over `[H, W]` (odd rows right to left), or over `[T, H, W]` with odd frames walked backwards.
    /// O(tokens).
    static func zigzag(_ grid: [Int]) -> [Int] {
        let (h, w) = (grid[grid.count - 2], grid[grid.count - 1])
        var frame: [Int] = []
        for r in 0..<h { frame += r % 2 == 0 ? Array(r * w..<(r + 1) * w) : Array((r * w..<(r + 1) * w).reversed()) }
        guard grid.count == 3 else { return frame }
        var result: [Int] = []
        for t in 0..<grid[0] { result += (t % 2 == 0 ? frame : Array(frame.reversed())).map { t * h * w + $0 } }
        return result
    }

    /// The Hilbert curve on the padded cube of side 2^b (b bits per axis), cells outside `grid` skipped: every cell's
    /// index on the curve (`hilbertIndex`), then the cells in index order. O(N·b·rank + N log N) for N cells, so a thin
    /// grid (1 x 16384) does not walk its padded square.
    static func hilbert(_ grid: [Int]) throws -> [Int] {
        let n = grid.count
        var bits = 0
        while 1 << bits < grid.max()! { bits += 1 }
        guard bits * n <= 62 else {
            throw LineaError.invalidArgument(argument: "grid", expected: "a Hilbert curve's padded cube of at most 2^62 cells (side \(1 << bits)^\(n))",
                                             actual: "\(grid)")
        }
        let count = grid.reduce(1, *)
        var keyed = [(index: Int, cell: Int)]()
        keyed.reserveCapacity(count)
        var x = [Int](repeating: 0, count: n)
        for cell in 0..<count {
            var rest = cell
            for a in stride(from: n - 1, through: 0, by: -1) {
                x[a] = rest % grid[a]
                rest /= grid[a]
            }
            keyed.append((hilbertIndex(x, bits: bits), cell))
        }
        keyed.sort { $0.index < $1.index }
        return keyed.map(\.cell)
    }

    /// The position of the cell at coordinates `x` (each below 2^bits) on the Hilbert curve of the cube of side
    /// 2^bits, by Skilling's method (2004): the per-level rotations and reflections applied from the coarsest bit,
    /// Gray encoding, then the "transposed" coordinates' bits read round the axes, most significant first. O(bits·rank).
    static func hilbertIndex(_ coordinates: [Int], bits: Int) -> Int {
        var x = coordinates
        let n = x.count
        guard bits > 0 else { return 0 }
        var q = 1 << (bits - 1)
        while q > 1 {
            let low = q - 1
            for i in 0..<n {
                if x[i] & q != 0 {
                    x[0] ^= low
                } else {
                    let swap = (x[0] ^ x[i]) & low
                    x[0] ^= swap
                    x[i] ^= swap
                }
            }
            q >>= 1
        }
        for i in 1..<max(n, 1) { x[i] ^= x[i - 1] }
        var t = 0
        q = 1 << (bits - 1)
        while q > 1 {
            if x[n - 1] & q != 0 { t ^= q - 1 }
            q >>= 1
        }
        for i in 0..<n { x[i] ^= t }
        var index = 0
        for level in stride(from: bits - 1, through: 0, by: -1) {
            for i in 0..<n { index = index << 1 | (x[i] >> level & 1) }
        }
        return index
    }
}
