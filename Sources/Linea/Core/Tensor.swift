import Foundation

/// A dense row-major Float32 tensor: `shape`, derived contiguous `strides`, value semantics (copy on write).
public struct Tensor: Sendable, Equatable, CustomStringConvertible {
    /// Extent of each dimension, outermost first.
    public let shape: [Int]
    /// Elements in row-major order; `scalars.count == shape.reduce(1, *)`.
    public var scalars: [Float]

    /// Creates a tensor from its elements; throws if the count does not match the shape.
    public init(shape: [Int], scalars: [Float]) throws {
        try Tensor.checkShape(shape)
        let count = shape.reduce(1, *)
        guard scalars.count == count else {
            throw LineaError.shapeMismatch(
                argument: "scalars", expected: "\(count) elements for shape \(shape)",
                actual: "\(scalars.count) elements")
        }
        self.shape = shape
        self.scalars = scalars
    }

    /// A tensor of the given shape with every element equal to `value` (0 by default).
    public init(zeros shape: [Int], value: Float = 0) throws {
        try Tensor.checkShape(shape)
        try MemoryBudget.check([.init("tensor", shape)])
        self.shape = shape
        self.scalars = [Float](repeating: value, count: shape.reduce(1, *))
    }

    /// Internal unchecked initializer for shapes already validated.
    init(uncheckedShape shape: [Int], scalars: [Float]) {
        self.shape = shape
        self.scalars = scalars
    }

    /// A tensor of standard-normal samples from `SeededRandom(seed)`, times `scale`; same numbers on every machine.
    public static func randomNormal(_ shape: [Int], seed: UInt64, scale: Float = 1) throws -> Tensor {
        try checkShape(shape)
        try MemoryBudget.check([.init("tensor", shape)])
        var rng = SeededRandom(seed: seed)
        let count = shape.reduce(1, *)
        var values = [Float](repeating: 0, count: count)
        for i in 0..<count { values[i] = Float(rng.nextNormal()) * scale }
        return Tensor(uncheckedShape: shape, scalars: values)
    }

    /// A tensor of samples uniform in `[low, high)` from `SeededRandom(seed)`.
    public static func randomUniform(_ shape: [Int], seed: UInt64, in range: ClosedRange<Float> = 0...1) throws -> Tensor {
        try checkShape(shape)
        try MemoryBudget.check([.init("tensor", shape)])
        var rng = SeededRandom(seed: seed)
        let count = shape.reduce(1, *)
        let width = Double(range.upperBound - range.lowerBound)
        var values = [Float](repeating: 0, count: count)
        for i in 0..<count { values[i] = range.lowerBound + Float(rng.nextUnit() * width) }
        return Tensor(uncheckedShape: shape, scalars: values)
    }

    /// Number of dimensions.
    public var rank: Int { shape.count }
    /// Number of elements.
    public var count: Int { scalars.count }
    /// Row-major strides in elements: `strides[i] = shape[(i+1)...].product`.
    public var strides: [Int] {
        var result = [Int](repeating: 1, count: shape.count)
        var running = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            result[i] = running
            running *= shape[i]
        }
        return result
    }

    /// Element at a multi-index (bounds are checked by a precondition: for tests and small tools).
    public subscript(_ index: Int...) -> Float {
        get { scalars[offset(index)] }
        set { scalars[offset(index)] = newValue }
    }

    private func offset(_ index: [Int]) -> Int {
        precondition(index.count == shape.count, "index rank \(index.count) != tensor rank \(shape.count)")
        var flat = 0
        for (i, n) in zip(index, shape) {
            precondition(i >= 0 && i < n, "index \(index) out of range for shape \(shape)")
            flat = flat * n + i
        }
        return flat
    }

    /// The same elements under a new shape with equal element count.
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        try Tensor.checkShape(newShape)
        guard newShape.reduce(1, *) == count else {
            throw LineaError.shapeMismatch(
                argument: "reshape", expected: "\(count) elements", actual: "\(newShape) (\(newShape.reduce(1, *)) elements)")
        }
        return Tensor(uncheckedShape: newShape, scalars: scalars)
    }

    /// Throws unless the tensor has exactly `rank` dimensions; `argument` names it in the error.
    public func expectRank(_ rank: Int, _ argument: String, layout: String) throws {
        guard shape.count == rank else {
            throw LineaError.shapeMismatch(argument: argument, expected: layout, actual: "\(shape) (rank \(shape.count))")
        }
    }

    /// Throws unless the shape equals `expected`; `argument` names it in the error.
    public func expectShape(_ expected: [Int], _ argument: String) throws {
        guard shape == expected else {
            throw LineaError.shapeMismatch(argument: argument, expected: "\(expected)", actual: "\(shape)")
        }
    }

    /// Throws if any element is NaN or infinite; `argument` names the tensor in the error.
    public func expectFinite(_ argument: String) throws {
        if let bad = scalars.firstIndex(where: { !$0.isFinite }) {
            throw LineaError.invalidArgument(
                argument: argument, expected: "finite values",
                actual: "\(scalars[bad]) at flat index \(bad)")
        }
    }

    /// The largest `|x|` over the elements (0 when empty; NaN is skipped). O(count), vectorized.
    public var maxMagnitude: Float { withUnsafeBufferPointer(Tensor.maxMagnitude) }

    /// The largest `|x|` in `p` (0 when empty; NaN is skipped). O(count), vectorized.
    static func maxMagnitude(_ p: UnsafeBufferPointer<Float>) -> Float {
        guard let base = p.baseAddress else { return 0 }
        var m8 = SIMD8<Float>(repeating: 0)
        var i = 0
        while i + 8 <= p.count {
            let x = UnsafeRawPointer(base + i).loadUnaligned(as: SIMD8<Float>.self)
            let a = x.replacing(with: -x, where: x .< 0)
            m8.replace(with: a, where: a .> m8)
            i += 8
        }
        var m = m8.max()
        while i < p.count {
            m = max(m, abs(base[i]).isNaN ? 0 : abs(base[i]))
            i += 1
        }
        return m
    }

    /// The largest `|x|` in `p` (0 when empty), or nil when an element is NaN or infinite: the finiteness check and the
    /// range of `maxMagnitude` in one pass (a decode step's attention reads its whole KV cache for both). O(count).
    package static func finiteMaxMagnitude(_ p: UnsafeBufferPointer<Float>) -> Float? {
        guard let base = p.baseAddress else { return 0 }
        var (m8, poison) = (SIMD8<Float>(repeating: 0), SIMD8<Float>(repeating: 0))
        var i = 0
        while i + 8 <= p.count {
            let x = UnsafeRawPointer(base + i).loadUnaligned(as: SIMD8<Float>.self)
            let a = x.replacing(with: -x, where: x .< 0)
            m8.replace(with: a, where: a .> m8)
            poison += x - x  // 0 for a finite x, NaN for NaN or an infinity
            i += 8
        }
        var m = m8.max()
        var tail: Float = poison.sum()
        while i < p.count {
            tail += base[i] - base[i]
            m = max(m, abs(base[i]))
            i += 1
        }
        return tail.isNaN ? nil : m
    }

    /// Throws `LineaError.nonFinite` naming `name` and the first NaN or infinity, for outputs; with
    /// `allowNegativeInfinity`, -inf passes (the lse of a query that sees no key). O(count).
    public func checkFiniteOutput(_ name: String, allowNegativeInfinity: Bool = false, hint: String = "") throws {
        guard !withUnsafeBufferPointer({ RecurrenceSIMD.allFinite($0) }) else { return }
        guard let bad = scalars.firstIndex(where: { $0.isNaN || $0 == .infinity || (!allowNegativeInfinity && $0 == -.infinity) })
        else { return }
        var index = [Int](repeating: 0, count: shape.count), rest = bad
        for axis in stride(from: shape.count - 1, through: 0, by: -1) where shape[axis] > 0 {
            (rest, index[axis]) = rest.quotientAndRemainder(dividingBy: shape[axis])
        }
        throw LineaError.nonFinite(tensor: name, value: scalars[bad], index: index, hint: hint)
    }

    /// Reads the elements through a pointer, without copying.
    @inlinable
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try scalars.withUnsafeBufferPointer(body)
    }

    /// Writes the elements through a pointer, without copying (copy-on-write applies first).
    @inlinable
    public mutating func withUnsafeMutableBufferPointer<R>(_ body: (inout UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        try scalars.withUnsafeMutableBufferPointer(body)
    }

    public var description: String {
        let head = scalars.prefix(6).map { String(format: "%.4g", $0) }.joined(separator: ", ")
        return "Tensor(shape: \(shape), [\(head)\(count > 6 ? ", ..." : "")])"
    }

    /// Throws unless every extent is >= 0 and the product of the non-zero extents stays below 2^37 elements
    /// (a zero extent must not hide an overflowing product: strides multiply the others).
    static func checkShape(_ shape: [Int]) throws {
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw LineaError.shapeMismatch(argument: "shape", expected: "non-negative extents", actual: "\(shape)")
        }
        var total = 1
        for n in shape where n > 0 {
            let (product, overflow) = total.multipliedReportingOverflow(by: n)
            guard !overflow, product <= Int(Int32.max) * 64 else {
                throw LineaError.shapeMismatch(argument: "shape", expected: "fewer than 2^37 elements (zero extents aside)", actual: "\(shape)")
            }
            total = product
        }
    }
}

/// Relative RMS error `rms(a - b) / rms(b)` and max absolute error between two equal-size arrays.
public struct ErrorStats: Sendable, CustomStringConvertible {
    /// `rms(a - b) / rms(b)`; when `rms(b) == 0`, the absolute `rms(a - b)`.
    public let relativeRMS: Double
    /// `max |a - b|`.
    public let maxAbs: Double

    /// Compares `actual` with `expected` element by element (NaN anywhere gives NaN statistics; sizes that differ
    /// give infinite ones, so every tolerance check fails instead of trapping).
    public init(_ actual: [Float], _ expected: [Float]) {
        guard actual.count == expected.count else {
            (relativeRMS, maxAbs) = (.infinity, .infinity)
            return
        }
        var diff2 = 0.0, ref2 = 0.0, maxAbs = 0.0
        for i in 0..<actual.count {
            let a = Double(actual[i]), b = Double(expected[i])
            if a == b {  // exact, and also -inf == -inf (e.g. lse of a fully masked row)
                if b.isFinite { ref2 += b * b }
                continue
            }
            let d = a - b
            diff2 += d * d
            ref2 += b * b
            maxAbs = d.isNaN ? .nan : max(maxAbs, abs(d))
        }
        let n = Double(max(actual.count, 1))
        let rmsDiff = (diff2 / n).squareRoot(), rmsRef = (ref2 / n).squareRoot()
        self.relativeRMS = rmsRef > 0 ? rmsDiff / rmsRef : rmsDiff
        self.maxAbs = maxAbs
    }

    /// Compares two tensors; shapes that differ give infinite statistics.
    public init(_ actual: Tensor, _ expected: Tensor) {
        self.init(actual.shape == expected.shape ? actual.scalars : [], expected.scalars)
    }

    public var description: String {
        String(format: "rel RMS %.3e, max abs %.3e", relativeRMS, maxAbs)
    }
}
