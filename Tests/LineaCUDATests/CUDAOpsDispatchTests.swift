import Foundation
import Linea
import LineaCUDA
import Testing

/// `Ops` on GPU tensors against the same calls on the CPU backend (itself checked against the Float64 reference by
/// OpsDispatchTests), per input dtype (skipped when no GPU is present).
@Suite(.enabled(if: CUDABackend.isAvailable, "needs an NVIDIA GPU, its driver and NVRTC"))
struct CUDAOpsDispatchTests {
    static let gpu = Device.cuda(0)

    init() throws { try CUDADeviceBackend.register() }

    /// Runs `op` on CPU tensors and on their GPU copies; the results must agree within the dtype's tolerance.
    func agree(_ dtype: DType, _ what: String, _ inputs: [DeviceTensor], _ op: ([DeviceTensor]) throws -> DeviceTensor) throws {
        let onGPU = try inputs.map { try $0.to(Self.gpu) }  // before the CPU call: conv1d's state is updated in place
        let cpu = try op(inputs), gpu = try op(onGPU)
        #expect(gpu.device == Self.gpu && gpu.shape == cpu.shape && gpu.dtype == cpu.dtype, "\(what)")
        if cpu.dtype.isFloatingPoint {
            let stats = ErrorStats(try gpu.host(), try cpu.host())
            #expect(stats.relativeRMS <= (dtype == .float32 ? 1e-5 : 2e-3), "\(what) \(dtype): \(stats)")
        } else {
            #expect(try gpu.hostIntegers() == cpu.hostIntegers(), "\(what) \(dtype)")
        }
    }

    @Test(arguments: [DType.float32, .bfloat16, .float16])
    func everyOpAgreesWithTheCPU(_ dtype: DType) throws {
        func t(_ shape: [Int], _ seed: UInt64, scale: Float = 1) throws -> DeviceTensor {
            try DeviceTensor(Tensor.randomNormal(shape, seed: seed, scale: scale), dtype: dtype)
        }
        let x = try t([3, 5, 64], 1, scale: 2), z = try t([3, 5, 64], 2), w = try t([64], 3)
        try agree(dtype, "matmul", [t([7, 96], 4), t([48, 96], 5), t([48], 6)]) { try Ops.matmul($0[0], weight: $0[1], bias: $0[2]) }
        try agree(dtype, "embedding", [DeviceTensor(integers: [5, 0, 47], shape: [3], dtype: .int64), t([48, 32], 7)]) {
            try Ops.embedding(ids: $0[0], table: $0[1])
        }
        try agree(dtype, "rmsNorm", [x, w]) { try Ops.rmsNorm($0[0], weight: $0[1], eps: 1e-6) }
        try agree(dtype, "rmsNorm (1 + w)", [x, w]) { try Ops.rmsNorm($0[0], weight: $0[1], eps: 1e-6, zeroCentered: true) }
        try agree(dtype, "rmsNormGated", [x, z, w]) { try Ops.rmsNormGated($0[0], gate: $0[1], weight: $0[2]) }
        try agree(dtype, "l2Norm", [x]) { try Ops.l2Norm($0[0]) }
        // Rows longer than 1024 take a block each, shorter ones a warp: 9 rows (one block of 8 and a partial one).
        let wide = try t([9, 1536], 16, scale: 2), wideWeight = try t([1536], 17)
        try agree(dtype, "rmsNorm 1536", [wide, wideWeight]) { try Ops.rmsNorm($0[0], weight: $0[1], eps: 1e-6) }
        try agree(dtype, "rmsNormGated 1536", [wide, t([9, 1536], 18), wideWeight]) { try Ops.rmsNormGated($0[0], gate: $0[1], weight: $0[2]) }
        if dtype == .float32 {
            // f32 rows rounded once into a bf16 or f16 matmul input (a rounding step apart at most: 16-bit tolerance); a
            // 16-bit x's product written in f32.
            for narrow in [DType.bfloat16, .float16] {
                try agree(narrow, "rmsNorm to \(narrow)", [x, w]) { try Ops.rmsNorm($0[0], weight: $0[1], outputDType: narrow) }
                try agree(narrow, "rmsNorm 1536 to \(narrow)", [wide, wideWeight]) { try Ops.rmsNorm($0[0], weight: $0[1], outputDType: narrow) }
                try agree(narrow, "rmsNormGated to \(narrow)", [x, z, w]) { try Ops.rmsNormGated($0[0], gate: $0[1], weight: $0[2], outputDType: narrow) }
                try agree(narrow, "swiglu halves to \(narrow)", [t([4, 64], 19)]) { try Ops.swiglu(halves: $0[0], outputDType: narrow) }
                try agree(narrow, "matmul \(narrow) to f32", [t([7, 96], 4), t([48, 96], 5), t([48], 6)]) {
                    try Ops.matmul(Ops.cast($0[0], to: narrow), weight: Ops.cast($0[1], to: narrow), bias: $0[2], outputDType: .float32)
                }
            }
        }
        try agree(dtype, "silu", [x]) { try Ops.silu($0[0]) }
        try agree(dtype, "sigmoid", [x]) { try Ops.sigmoid($0[0]) }
        try agree(dtype, "softplus", [x]) { try Ops.softplus($0[0]) }
        try agree(dtype, "gelu", [x]) { try Ops.gelu($0[0]) }
        try agree(dtype, "gelu tanh", [x]) { try Ops.gelu($0[0], approximate: .tanh) }
        try agree(dtype, "softmax", [x]) { try Ops.softmax($0[0]) }
        try agree(dtype, "swiglu", [x, z]) { try Ops.swiglu(gate: $0[0], up: $0[1]) }
        try agree(dtype, "swiglu halves", [x]) { try Ops.swiglu(halves: $0[0]) }
        try agree(dtype, "add", [x, z]) { try Ops.add($0[0], $0[1]) }
        try agree(dtype, "mul", [x, z]) { try Ops.mul($0[0], $0[1]) }
        try agree(dtype, "add broadcast [64]", [x, w]) { try Ops.add($0[0], $0[1]) }
        try agree(dtype, "mul broadcast [5, 1]", [x, t([5, 1], 13)]) { try Ops.mul($0[0], $0[1]) }
        try agree(dtype, "clamp", [x]) { try Ops.clamp($0[0], min: -1, max: 0.5) }
        try agree(dtype, "exp", [x]) { try Ops.exp($0[0]) }
        try agree(dtype, "div broadcast [5, 1]", [x, t([5, 1], 17)]) { try Ops.div($0[0], Ops.add(Ops.mul($0[1], $0[1]), Ops.exp($0[1]))) }
        if dtype == .float32 {
            let rows = try DeviceTensor(integers: [2, 0, 2, 1], shape: [4], dtype: .int32)
            try agree(dtype, "indexAdd", [t([3, 64], 14), rows, t([4, 64], 15), t([4], 16)]) {
                try Ops.indexAdd($0[0], rows: $0[1], values: $0[2], weights: $0[3])
                return $0[0]
            }
            #expect(throws: LineaError.invalidArgument(argument: "rows", expected: "row ids in 0..<3", actual: "-1 at index 1")) {
                try Ops.indexAdd(t([3, 64], 14).to(Self.gpu), rows: DeviceTensor(integers: [0, -1, 1, 1], shape: [4], dtype: .int32).to(Self.gpu),
                                 values: t([4, 64], 15).to(Self.gpu))
            }
        }
        let positions = try DeviceTensor(integers: (0..<15).map { $0 * 7 }, shape: [3, 5], dtype: .int32)
        for layout in RotaryLayout.allCases {
            try agree(dtype, "rotary \(layout)", [t([3, 5, 2, 64], 8), positions]) {
                try Ops.rotary($0[0], positions: $0[1], theta: 1e6, rotaryDim: 16, layout: layout)
            }
            let scaling = try RotaryScaling(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalContext: 64)
            try agree(dtype, "rotary llama3 \(layout)", [t([3, 5, 2, 64], 8), positions]) {
                try Ops.rotary($0[0], positions: $0[1], theta: 1e4, layout: layout, scaling: scaling)
            }
        }
        try agree(dtype, "causalConv1d", [t([2, 9, 40], 9), t([40, 4], 10), t([40], 11), t([2, 40, 3], 12)]) {
            try Ops.causalConv1d($0[0], weight: $0[1], bias: $0[2], state: $0[3], silu: true)
        }
        for part in 0..<3 {
            try agree(dtype, "causalConv1d part \(part)", [t([2, 9, 40], 9), t([40, 4], 10), t([40], 11), t([2, 40, 3], 12)]) {
                try Ops.causalConv1d($0[0], weight: $0[1], bias: $0[2], state: $0[3], silu: true, parts: [16, 8, 16])[part]
            }
        }
        try agree(dtype, "argmax", [t([4, 1000], 13)]) { try Ops.argmax($0[0]) }
        try agree(dtype, "routing indices", [t([4, 16], 14)]) { try Ops.topKRouting($0[0], k: 4, normalize: true).indices }
        try agree(.float32, "routing weights", [t([4, 16], 14)]) { try Ops.topKRouting($0[0], k: 4, normalize: true).weights }
        try agree(dtype, "sample", [t([4, 1000], 15, scale: 3)]) { inputs in
            var random = SeededRandom(seed: 5)
            return try Ops.sample(inputs[0], temperature: 0.7, topK: 40, topP: 0.9, random: &random)
        }
    }

    @Test func refusalsNameTheReason() throws {
        let x = try DeviceTensor(Tensor.randomNormal([2, 8], seed: 1), dtype: .bfloat16, on: Self.gpu)
        let w = try DeviceTensor(Tensor.randomNormal([8], seed: 2), on: Self.gpu)
        do {
            _ = try Ops.rmsNorm(x, weight: w)
            Issue.record("expected a dtype refusal")
        } catch let LineaError.unavailable(what, reason) {
            #expect(what == "rmsNorm on cuda:0" && reason.contains("weight has dtype f32"))
        }
        #expect(throws: LineaError.self) { try Ops.embedding(ids: DeviceTensor(integers: [9], shape: [1], on: Self.gpu), table: x) }
    }
}
