import Foundation
import Linea

/// Host-to-device uploads of Float32 tensors in the input element types the kernels read.
package enum CUDAUpload {
    /// Input element types the kernels of this file set accept: fp32, bf16 and fp16 (rounded to nearest even).
    public static let inputTypes: [DType] = [.float32, .bfloat16, .float16]

    /// Copies `tensor` to the device as `dtype` elements (`.float32`, `.bfloat16` or `.float16`); throws for
    /// other types, naming `argument`. O(n).
    public static func buffer(_ tensor: Tensor, dtype: DType, context: CUDAContext, argument: String = "dtype") throws -> CUDABuffer {
        switch dtype {
        case .float32: return try CUDABuffer(context: context, copying: tensor.scalars)
        case .bfloat16: return try CUDABuffer(context: context, copying: tensor.scalars.map(HalfPrecision.bfloat16Bits))
        case .float16: return try CUDABuffer(context: context, copying: tensor.scalars.map(HalfPrecision.float16Bits))
        default:
            throw LineaError.invalidArgument(argument: argument, expected: "float32, bfloat16 or float16", actual: "\(dtype)")
        }
    }

    /// Reads `count` elements of `dtype` (`.float32`, `.bfloat16` or `.float16`) back as Float32. O(n).
    public static func download(_ buffer: CUDABuffer, dtype: DType, count: Int) throws -> [Float] {
        switch dtype {
        case .float32: return try buffer.download(Float.self, count: count)
        case .bfloat16: return try buffer.download(UInt16.self, count: count).map { HalfPrecision.float(bfloat16Bits: $0) }
        case .float16: return try buffer.download(UInt16.self, count: count).map { HalfPrecision.float(float16Bits: $0) }
        default:
            throw LineaError.invalidArgument(argument: "dtype", expected: "float32, bfloat16 or float16", actual: "\(dtype)")
        }
    }

    /// The code the kernels take for an element type as a launch argument: 0 f32, 1 bf16, 2 f16; throws for others,
    /// naming `argument`.
    static func typeCode(_ dtype: DType, argument: String = "dtype") throws -> Int32 {
        switch try suffix(dtype, argument: argument) {
        case "f32": return 0
        case "bf16": return 1
        default: return 2
        }
    }

    /// The kernel-name suffix of an input type: `f32`, `bf16` or `f16`; throws for others, naming `argument`.
    static func suffix(_ dtype: DType, argument: String = "dtype") throws -> String {
        switch dtype {
        case .float32: return "f32"
        case .bfloat16: return "bf16"
        case .float16: return "f16"
        default:
            throw LineaError.invalidArgument(argument: argument, expected: "float32, bfloat16 or float16", actual: "\(dtype)")
        }
    }

    /// `tensor` rounded through `dtype` and back (what the device reads); unchanged for fp32. O(n).
    public static func rounded(_ tensor: Tensor, _ dtype: DType) -> Tensor {
        switch dtype {
        case .bfloat16: return HalfPrecision.roundedToBFloat16(tensor)
        case .float16: return HalfPrecision.roundedToFloat16(tensor)
        default: return tensor
        }
    }
}

extension CUDAContext {
    /// The kernel `name` compiled alone from a source whose entries are guarded by `LINEA_SELECT` /
    /// `LINEA_ONLY_<entry>` (split-KV, decode step, block-sparse, neighborhood, portable attention, SIMT chunked, kda):
    /// a first use compiles that one kernel, not every variant; each selection is cached on its own. `options` follow
    /// the selecting defines.
    func entry(_ name: String, of source: String, options: [String] = []) throws -> CUDAFunction {
        try function(source: source, name: name, options: ["-DLINEA_SELECT", "-DLINEA_ONLY_\(name)"] + options)
    }
}
