import Foundation
import Linea
import LineaCUDA
import Testing

/// Neighborhood attention on the GPU (LineaCUDA's kernels, through the dispatch and called directly: tensor cores and
/// the portable one) against the CPU's Float64 reference on the same rounded inputs: 1-D, 2-D and 3-D grids, dilation,
/// strides, causal axes, GQA, D != Dv, head dims up to 256, f32, bf16 and f16 inputs, bf16 output (skipped when no GPU
/// is present).
@Suite(.enabled(if: CUDABackend.isAvailable, "needs an NVIDIA GPU, its driver and NVRTC"))
struct CUDANeighborhoodTests {
    typealias N = NeighborhoodOptions

    /// (B, spatial, Hq, Hkv, D, Dv, options): borders, uneven dilation groups, even and odd strides, Swin, causal axes,
    /// query tiles cut by short groups, the d128 and d256 entries.
    static let shapes: [(Int, [Int], Int, Int, Int, Int, N)] = [
        (2, [37], 2, 1, 40, 40, N(kernelSize: [7])),
        (1, [100], 2, 2, 64, 64, N(kernelSize: [9], dilation: [3], causal: [true])),
        (1, [300], 2, 2, 64, 32, N(kernelSize: [33], stride: [4])),
        (1, [64], 2, 2, 32, 32, N(kernelSize: [8], stride: [8])),
        (1, [31, 33], 2, 2, 64, 64, N(kernelSize: [13, 13])),
        (2, [20, 13], 4, 2, 32, 32, N(kernelSize: [7, 4], stride: [3, 2], dilation: [2, 3], causal: [false, true])),
        (1, [12, 12], 2, 2, 32, 32, N(kernelSize: [4, 4], stride: [4, 4])),
        (1, [9, 11], 2, 1, 32, 32, N(kernelSize: [5, 3], stride: [2, 3], dilation: [1, 2], causal: [true, false])),
        (1, [5, 6, 7], 2, 2, 32, 32, N(kernelSize: [3, 4, 3], stride: [1, 2, 1], dilation: [1, 1, 2], causal: [false, true, false])),
        (1, [8, 8, 8], 2, 1, 48, 48, N(kernelSize: [3, 3, 3], dilation: [2, 1, 1], causal: [true, true, true])),
        (1, [40], 2, 2, 128, 128, N(kernelSize: [5], dilation: [2])),
        (1, [6, 7], 1, 1, 256, 200, N(kernelSize: [3, 5], causal: [false, true])),
    ]

    static func inputs(_ s: (Int, [Int], Int, Int, Int, Int, N), seed: UInt64, dtype: DType) throws -> (q: Tensor, k: Tensor, v: Tensor) {
        let (B, spatial, Hq, Hkv, D, Dv, _) = s
        return (CUDAUpload.rounded(try Tensor.randomNormal([B] + spatial + [Hq, D], seed: seed), dtype),
                CUDAUpload.rounded(try Tensor.randomNormal([B] + spatial + [Hkv, D], seed: seed &+ 1), dtype),
                CUDAUpload.rounded(try Tensor.randomNormal([B] + spatial + [Hkv, Dv], seed: seed &+ 2), dtype))
    }

    @Test(arguments: [DType.float32, .bfloat16, .float16])
    func dispatchMatchesReference(_ dtype: DType) throws {
        let device = try CUDADeviceBackend.register().device
        for (index, s) in Self.shapes.enumerated() {
            let x = try Self.inputs(s, seed: UInt64(700 + 10 * index), dtype: dtype)
            let want = try NeighborhoodAttention.forward(q: x.q, k: x.k, v: x.v, options: s.6, form: .reference)
            let got = try NeighborhoodAttention.forward(q: DeviceTensor(x.q, dtype: dtype, on: device), k: DeviceTensor(x.k, dtype: dtype, on: device),
                                                        v: DeviceTensor(x.v, dtype: dtype, on: device), options: s.6)
            let (o, lse) = (ErrorStats(try got.o.host(), want.o), ErrorStats(try got.lse.host(), want.lse))
            let name = "\(dtype) B\(s.0) grid \(s.1) Hq\(s.2) Hkv\(s.3) D\(s.4) Dv\(s.5) \(s.6)"
            #expect(got.o.shape == want.o.shape && got.lse.shape == want.lse.shape, "\(name)")
            // Same rounded inputs on both sides: only fp32 against Float64 arithmetic differs, but for the tensor-core
            // kernel (bf16/f16 at D = Dv in {64, 128}), which rounds P to the input type.
            let tensorCores = dtype != .float32 && s.4 == s.5 && (s.4 == 64 || s.4 == 128)
            let bound = tensorCores ? (dtype == .bfloat16 ? 1e-2 : 2e-3) : 1e-5
            #expect(o.relativeRMS <= bound && lse.relativeRMS <= 1e-4, "\(name): o \(o), lse \(lse)")
        }
    }

    /// Both kernels called directly (tensor cores and the portable one) on every shape at D = Dv = 64 and 128, bf16
    /// and f16 inputs, f32 output. The tensor-core kernel rounds P to the input type before P·V: bf16-sized errors.
    @Test(arguments: [CUDANeighborhood.Kernel.tensorCore, .portable], [DType.bfloat16, .float16])
    func bothKernelsMatchReference(_ kernel: CUDANeighborhood.Kernel, _ dtype: DType) throws {
        let ctx = try CUDABackend.shared
        for (index, s) in Self.shapes.enumerated() {
            for D in [64, 128] {
                let shape = (s.0, s.1, s.2, s.3, D, D, s.6)
                let (B, spatial, Hq, Hkv, _, _, options) = shape
                let x = try Self.inputs(shape, seed: UInt64(900 + 10 * index + D), dtype: dtype)
                let want = try NeighborhoodAttention.forward(q: x.q, k: x.k, v: x.v, options: options, form: .reference)
                let rows = B * spatial.reduce(1, *) * Hq
                let o = try CUDABuffer(context: ctx, byteCount: rows * D * 4), lse = try CUDABuffer(context: ctx, byteCount: rows * 4)
                try CUDANeighborhood.forward(q: CUDAUpload.buffer(x.q, dtype: dtype, context: ctx), k: CUDAUpload.buffer(x.k, dtype: dtype, context: ctx),
                                             v: CUDAUpload.buffer(x.v, dtype: dtype, context: ctx), o: o, lse: lse, batch: B, spatial: spatial,
                                             queryHeads: Hq, kvHeads: Hkv, headDim: D, valueDim: D, options: options, dtype: dtype,
                                             outputDType: .float32, kernel: kernel)
                let got = try Tensor(shape: want.o.shape, scalars: o.download(Float.self, count: rows * D))
                let gotLSE = try Tensor(shape: want.lse.shape, scalars: lse.download(Float.self, count: rows))
                let (eo, el) = (ErrorStats(got, want.o), ErrorStats(gotLSE, want.lse))
                let bound = kernel == .tensorCore ? (dtype == .bfloat16 ? 1e-2 : 2e-3) : 1e-5
                let name = "\(kernel) \(dtype) grid \(spatial) Hq\(Hq) Hkv\(Hkv) D\(D) \(options)"
                #expect(eo.relativeRMS <= bound && el.relativeRMS <= 1e-4, "\(name): o \(eo), lse \(el)")
            }
        }
    }

    /// The kernel's bf16 output (the dispatch writes f32): within bf16's rounding of the f32 result.
    @Test(arguments: [CUDANeighborhood.Kernel.tensorCore, .portable])
    func bfloat16OutputMatchesReference(_ kernel: CUDANeighborhood.Kernel) throws {
        let ctx = try CUDABackend.shared
        let s = (2, [20, 13], 4, 2, 64, 64, Self.shapes[5].6)
        let (B, spatial, Hq, Hkv, D, Dv, options) = s
        let x = try Self.inputs(s, seed: 11, dtype: .bfloat16)
        let want = try NeighborhoodAttention.forward(q: x.q, k: x.k, v: x.v, options: options, form: .reference)
        let rows = B * spatial.reduce(1, *) * Hq
        let o = try CUDABuffer(context: ctx, byteCount: rows * Dv * 2), lse = try CUDABuffer(context: ctx, byteCount: rows * 4)
        try CUDANeighborhood.forward(q: CUDAUpload.buffer(x.q, dtype: .bfloat16, context: ctx), k: CUDAUpload.buffer(x.k, dtype: .bfloat16, context: ctx),
                                     v: CUDAUpload.buffer(x.v, dtype: .bfloat16, context: ctx), o: o, lse: lse, batch: B, spatial: spatial,
                                     queryHeads: Hq, kvHeads: Hkv, headDim: D, valueDim: Dv, options: options, dtype: .bfloat16, outputDType: .bfloat16,
                                     kernel: kernel)
        let got = try Tensor(shape: want.o.shape, scalars: CUDAUpload.download(o, dtype: .bfloat16, count: rows * Dv))
        let gotLSE = try Tensor(shape: want.lse.shape, scalars: lse.download(Float.self, count: rows))
        #expect(ErrorStats(got, want.o).relativeRMS <= 1e-2, "\(kernel) o \(ErrorStats(got, want.o))")
        #expect(ErrorStats(gotLSE, want.lse).relativeRMS <= 1e-4, "\(kernel) lse \(ErrorStats(gotLSE, want.lse))")
    }

    /// The dispatch refuses the reference form on the GPU, and the launcher throws naming a bad argument.
    @Test func refusalsAndBadArguments() throws {
        let backend = try CUDADeviceBackend.register()
        let q = try DeviceTensor(Tensor.randomNormal([1, 8, 1, 16], seed: 1), on: backend.device)
        #expect(throws: LineaError.self) {
            try NeighborhoodAttention.forward(q: q, k: q, v: q, options: N(kernelSize: [3]), form: .reference)
        }
        let ctx = backend.context
        let b = try CUDABuffer(context: ctx, byteCount: 8 * 300 * 4)
        #expect(throws: LineaError.self) {  // D above 256
            try CUDANeighborhood.forward(q: b, k: b, v: b, o: b, lse: nil, batch: 1, spatial: [8], queryHeads: 1, kvHeads: 1,
                                         headDim: 300, valueDim: 16, options: N(kernelSize: [3]), dtype: .float32)
        }
        #expect(throws: LineaError.self) {  // kernel longer than the grid
            try CUDANeighborhood.forward(q: b, k: b, v: b, o: b, lse: nil, batch: 1, spatial: [8], queryHeads: 1, kvHeads: 1,
                                         headDim: 16, valueDim: 16, options: N(kernelSize: [9]), dtype: .float32)
        }
    }
}

/// The query tile shapes (no GPU needed): up to 64 queries, square-ish, capped by the dilation groups' lengths.
@Suite struct CUDANeighborhoodTileTests {
    @Test func tilesAreBoxesOfAtMost64Queries() {
        #expect(CUDANeighborhood.tileShape(groupLengths: [1, 1, 4096]) == [1, 1, 64])
        #expect(CUDANeighborhood.tileShape(groupLengths: [1, 64, 64]) == [1, 8, 8])
        #expect(CUDANeighborhood.tileShape(groupLengths: [16, 16, 16]) == [4, 4, 4])
        #expect(CUDANeighborhood.tileShape(groupLengths: [1, 3, 100]) == [1, 3, 16])
        #expect(CUDANeighborhood.tileShape(groupLengths: [1, 1, 5]) == [1, 1, 5])
        #expect(CUDANeighborhood.tileShape(groupLengths: [1, 1, 1]) == [1, 1, 1])
    }
}
