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

    /// `2^x` on 8 lanes: relative error below 2e-7; exactly 0 for x <= -127 (and -inf); for x <= 127.
    /// Cheaper than `exp`: in base 2 the reduced argument `x - round(x)` is exact, so no Cody–Waite step.
    @inlinable @inline(__always)
    public static func exp2(_ x: SIMD8<Float>) -> SIMD8<Float> {
        var clamped = x
        clamped.replace(with: -127, where: x .< -127)  // 2^n's exponent field becomes 0, so the result is 0
        let magic: Float = 12_582_912  // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits
        let shifted = clamped + magic
        let f = clamped - (shifted - magic)  // in [-0.5, 0.5], exact
        // 2^f = e^(f·ln2): degree-6 Taylor polynomial in f with coefficients ln2^k / k!.
        var p = SIMD8<Float>(repeating: 1.333_355_8e-3).addingProduct(f, 1.540_353e-4)
        p = SIMD8<Float>(repeating: 9.618_129e-3).addingProduct(p, f)
        p = SIMD8<Float>(repeating: 5.550_411e-2).addingProduct(p, f)
        p = SIMD8<Float>(repeating: 0.240_226_5).addingProduct(p, f)
        p = SIMD8<Float>(repeating: 0.693_147_2).addingProduct(p, f)
        p = SIMD8<Float>(repeating: 1).addingProduct(p, f)
        let nBits = unsafeBitCast(shifted, to: SIMD8<UInt32>.self) &- magic.bitPattern
        return p * unsafeBitCast((nBits &+ 127) &<< 23, to: SIMD8<Float>.self)
    }

    /// `2^x` on 8 lanes for the softmax inner loop: relative error below 5e-7, exactly 0 for x <= -127 (and -inf),
    /// for x <= 127. Three vector operations cheaper than `exp2`: a degree-5 minimax polynomial, and the bias 127
    /// folded into the rounding constant so that one shift builds `2^round(x)`.
    @inlinable @inline(__always)
    public static func exp2Fast(_ x: SIMD8<Float>) -> SIMD8<Float> {
        var clamped = x
        clamped.replace(with: -127, where: x .< -127)
        // 1.5·2^23 + 127: the sum's low bits hold round(x) + 127, and the bits above them leave on the shift by 23.
        let magic: Float = 12_583_039
        let shifted = clamped + magic
        let f = clamped - (shifted - magic)  // in [-0.5, 0.5], exact
        var p = SIMD8<Float>(repeating: 9.668_535_6e-3).addingProduct(f, 1.291_565_1e-3)
        p = SIMD8<Float>(repeating: 5.551_688_7e-2).addingProduct(p, f)
        p = SIMD8<Float>(repeating: 0.240_222_65).addingProduct(p, f)
        p = SIMD8<Float>(repeating: 0.693_146_47).addingProduct(p, f)
        p = SIMD8<Float>(repeating: 1).addingProduct(p, f)
        return p * unsafeBitCast(unsafeBitCast(shifted, to: SIMD8<UInt32>.self) &<< 23, to: SIMD8<Float>.self)
    }

    /// Scalar `2^x` through the vector formula.
    @inlinable @inline(__always)
    public static func exp2(_ x: Float) -> Float {
        exp2(SIMD8<Float>(repeating: x))[0]
    }

    /// Replaces `x[i]` by `2^(x[i] - shift)` for `i < n` (arguments must be <= 127) and returns their sum. O(n).
    /// The softmax inner loop: scores pre-multiplied by log2(e) need only this base-2 exponential.
    @inlinable
    public static func exp2ShiftedInPlace(_ x: UnsafeMutablePointer<Float>, count n: Int, shift: Float) -> Float {
        var sum8 = SIMD8<Float>(repeating: 0), sumB = SIMD8<Float>(repeating: 0)
        var i = 0
        let shift8 = SIMD8<Float>(repeating: shift)
        // Two independent vectors per step so their polynomial chains overlap.
        while i + 16 <= n {
            let raw = UnsafeMutableRawPointer(x + i)
            let e0 = exp2(raw.loadUnaligned(as: SIMD8<Float>.self) - shift8)
            let e1 = exp2(raw.loadUnaligned(fromByteOffset: 32, as: SIMD8<Float>.self) - shift8)
            raw.storeBytes(of: e0, as: SIMD8<Float>.self)
            raw.storeBytes(of: e1, toByteOffset: 32, as: SIMD8<Float>.self)
            sum8 += e0
            sumB += e1
            i += 16
        }
        sum8 += sumB
        if i + 8 <= n {
            let raw = UnsafeMutableRawPointer(x + i)
            let e = exp2(raw.loadUnaligned(as: SIMD8<Float>.self) - shift8)
            raw.storeBytes(of: e, as: SIMD8<Float>.self)
            sum8 += e
            i += 8
        }
        var sum = sum8.sum()
        while i < n {
            let e = exp2(x[i] - shift)
            x[i] = e
            sum += e
            i += 1
        }
        return sum
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
