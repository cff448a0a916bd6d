/// Conversions between Float32 and the 16-bit storage formats (round to nearest even).
public enum HalfPrecision {
    /// Float32 -> bfloat16 bits, round to nearest even; NaN stays NaN.
    @inlinable
    public static func bfloat16Bits(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        let roundingBias: UInt32 = 0x7FFF + ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ roundingBias) >> 16)
    }

    /// bfloat16 bits -> Float32 (exact).
    @inlinable
    public static func float(bfloat16Bits bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    /// Float32 -> IEEE float16 bits, round to nearest even, overflow to infinity.
    @inlinable
    public static func float16Bits(_ value: Float) -> UInt16 {
        Float16(value).bitPattern
    }

    /// IEEE float16 bits -> Float32 (exact).
    @inlinable
    public static func float(float16Bits bits: UInt16) -> Float {
        Float(Float16(bitPattern: bits))
    }

    /// Rounds every element through bfloat16 and back (what a bf16 input would hold).
    public static func roundedToBFloat16(_ tensor: Tensor) -> Tensor {
        var out = tensor
        for i in 0..<out.scalars.count { out.scalars[i] = float(bfloat16Bits: bfloat16Bits(out.scalars[i])) }
        return out
    }

    /// Rounds every element through float16 and back.
    public static func roundedToFloat16(_ tensor: Tensor) -> Tensor {
        var out = tensor
        for i in 0..<out.scalars.count { out.scalars[i] = Float(Float16(out.scalars[i])) }
        return out
    }
}
