/// Vectorized math for the hot loops (AVX2 + FMA when built for `haswell`).
public enum VectorMath {
    /// `exp(x)` on 8 lanes: relative error below 2e-7 for x in [-87, 88]; 0 below -87.3, +inf above 88.7.
    @inlinable @inline(__always)
    public static func exp(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let log2e: Float = 1.442_695_04
        let ln2Hi: Float = 0.693_145_751_953_125
        let ln2Lo: Float = 1.428_606_765_330_187_045e-06
        // Clamp with masked selects (the generic `clamped`/`pointwiseMin` are not lowered to vector code).
        var clamped = x
        clamped.replace(with: -87.3, where: x .< -87.3)
        clamped.replace(with: 88.7, where: x .> 88.7)
        // Round x·log2(e) to the nearest integer by adding 1.5·2^23: the sum's low mantissa bits then hold n.
        let magic: Float = 12_582_912
        let shifted = SIMD8<Float>(repeating: magic).addingProduct(clamped, log2e)
        let n = shifted - magic
        var r = clamped.addingProduct(n, -ln2Hi)
        r = r.addingProduct(n, -ln2Lo)
        // exp(r) on |r| <= ln2/2: degree-6 Taylor polynomial, Horner with FMA (`addingProduct` is one vfmadd;
        // `a * b + c` is not contracted by Swift).
        var p = SIMD8<Float>(repeating: 1.0 / 120).addingProduct(r, 1.0 / 720)
        p = SIMD8<Float>(repeating: 1.0 / 24).addingProduct(p, r)
        p = SIMD8<Float>(repeating: 1.0 / 6).addingProduct(p, r)
        p = SIMD8<Float>(repeating: 0.5).addingProduct(p, r)
        p = SIMD8<Float>(repeating: 1).addingProduct(p, r)
        p = SIMD8<Float>(repeating: 1).addingProduct(p, r)
        // 2^n: n's bits (two's complement, from the magic sum) plus the bias, moved into the exponent field.
        let nBits = unsafeBitCast(shifted, to: SIMD8<UInt32>.self) &- magic.bitPattern
        let twoToN = unsafeBitCast((nBits &+ 127) &<< 23, to: SIMD8<Float>.self)
        var result = p * twoToN
        result.replace(with: 0, where: x .< -87.3)
        result.replace(with: .infinity, where: x .> 88.7)
        return result
    }

    /// Scalar `exp` through the same polynomial (for loop tails, so every element sees one formula).
    @inlinable @inline(__always)
    public static func exp(_ x: Float) -> Float {
        exp(SIMD8<Float>(repeating: x))[0]
    }

    /// Maximum of `x[0..<n]` (`-inf` for n = 0). O(n).
    @inlinable
    public static func max(_ x: UnsafePointer<Float>, count n: Int) -> Float {
        var m8 = SIMD8<Float>(repeating: -.infinity)
        var i = 0
        while i + 8 <= n {
            let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
            m8.replace(with: v, where: v .> m8)
            i += 8
        }
        var m = m8.max()
        while i < n {
            m = Swift.max(m, x[i])
            i += 1
        }
        return m
    }

    /// `y[i] *= a` for `i < n`. O(n).
    @inlinable
    public static func scale(_ y: UnsafeMutablePointer<Float>, count n: Int, by a: Float) {
        var i = 0
        while i + 8 <= n {
            let raw = UnsafeMutableRawPointer(y + i)
            raw.storeBytes(of: raw.loadUnaligned(as: SIMD8<Float>.self) * a, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n {
            y[i] *= a
            i += 1
        }
    }
}
