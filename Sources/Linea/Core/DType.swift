/// Element types a tensor can hold (safetensors names as raw values); float compute is always Float32.
public enum DType: String, Sendable, CaseIterable {
    case float32 = "F32", float16 = "F16", bfloat16 = "BF16", float64 = "F64"
    case int32 = "I32", int64 = "I64", uint8 = "U8", bool = "BOOL"

    /// Bytes per element.
    public var byteCount: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16: return 2
        case .uint8, .bool: return 1
        }
    }

    /// True for the floating-point types (f32, f16, bf16, f64).
    public var isFloatingPoint: Bool {
        switch self {
        case .float32, .float16, .bfloat16, .float64: return true
        case .int32, .int64, .uint8, .bool: return false
        }
    }

    /// The short name used in messages and options: `f32`, `f16`, `bf16`, `f64`, `i32`, `i64`, `u8`, `bool`.
    public var shortName: String { rawValue.lowercased() }

    /// The type for a short or safetensors name (`bf16`, `BF16`, `float32`...), nil when unknown. O(1).
    public init?(name: String) {
        let lower = name.lowercased()
        let aliases: [String: DType] = ["float32": .float32, "float": .float32, "float16": .float16, "half": .float16,
                                        "bfloat16": .bfloat16, "float64": .float64, "int32": .int32, "int64": .int64,
                                        "uint8": .uint8]
        if let found = DType(rawValue: name.uppercased()) ?? aliases[lower] { self = found } else { return nil }
    }
}
