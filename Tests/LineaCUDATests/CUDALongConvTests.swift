import Foundation
import Linea
import LineaCUDA
import Testing

/// Where cuFFT is looked for (no GPU needed): the toolkit folder of the GPU machines is tried by full path.
@Suite struct CUFFTLoadingTests {
    @Test func candidatesIncludeTheToolkitFolder() {
        let names = CUFFT.candidates
        for name in ["libcufft.so.12", "libcufft.so.13", "libcufft.so.11", "/usr/local/cuda/lib64/libcufft.so.12",
                     "/usr/local/cuda/lib64/libcufft.so.11"] {
            #expect(names.contains(name), "\(name) not tried: \(names)")
        }
    }
}

/// The long convolution's fft form by cuFFT against the Float64 direct sum on the CPU, on the inputs rounded as the
/// GPU reads them (skipped when no GPU is present).
@Suite(.enabled(if: CUDABackend.isAvailable, "needs an NVIDIA GPU, its driver and NVRTC"))
struct CUDALongConvTests {
    static let gpu = Device.cuda(0)

    init() throws { try CUDADeviceBackend.register() }

    /// (B, H, L, Lk, D): one token, filters shorter and longer than the sequence, a prime length (its transform size
    /// padded to 2·1010), sizes of 2, 3, 5, 7 factors, many rows.
    static let shapes: [(Int, Int, Int, Int, Bool)] = [
        (1, 1, 1, 1, false), (2, 3, 1, 4, true), (2, 3, 37, 37, true), (1, 4, 64, 20, false), (2, 2, 100, 150, true),
        (1, 2, 1009, 1009, true), (3, 5, 257, 257, true), (4, 64, 130, 64, true), (1, 2, 4096, 4096, false),
    ]

    @Test(arguments: [DType.float32, .bfloat16, .float16])
    func fftMatchesTheDirectSum(_ dtype: DType) throws {
        for (index, (B, H, L, Lk, skip)) in Self.shapes.enumerated() {
            var k = try Tensor.randomNormal([H, Lk], seed: UInt64(10 * index + 1))
            for h in 0..<H { for s in 0..<Lk { k.scalars[h * Lk + s] *= Foundation.exp(-3 * Float(s) / Float(Lk)) } }
            let u = try Tensor.randomNormal([B, H, L], seed: UInt64(10 * index))
            let D = skip ? try Tensor.randomNormal([H], seed: UInt64(10 * index + 2)) : nil
            // What the GPU reads: the inputs rounded to dtype.
            let (ud, kd, Dd) = (try DeviceTensor(u, dtype: dtype), try DeviceTensor(k, dtype: dtype), try D.map { try DeviceTensor($0, dtype: dtype) })
            let want = try LongConv.reference(u: ud.host(), k: kd.host(), D: Dd?.host())
            let o = try LongConv.forward(u: ud.to(Self.gpu), k: kd.to(Self.gpu), D: Dd?.to(Self.gpu), form: .fft)
            #expect(o.device == Self.gpu && o.shape == [B, H, L] && o.dtype == .float32)
            let stats = ErrorStats(try o.host(), want)
            #expect(stats.relativeRMS <= 1e-5, "B\(B) H\(H) L\(L) Lk\(Lk) D \(skip) \(dtype): \(stats)")
        }
    }

    /// A second call of the same size reuses the cached plans and gives the same numbers; nothing crosses PCIe.
    @Test func repeatedCallsAgreeWithoutTransfers() throws {
        let backend = try CUDADeviceBackend.register()
        let u = try DeviceTensor(Tensor.randomNormal([2, 8, 300], seed: 5)).to(Self.gpu)
        let k = try DeviceTensor(Tensor.randomNormal([8, 300], seed: 6)).to(Self.gpu)
        let before = backend.hostTransferCountOnThisThread
        let a = try LongConv.forward(u: u, k: k), b = try LongConv.forward(u: u, k: k)
        #expect(backend.hostTransferCountOnThisThread == before)
        #expect(try a.host().scalars == b.host().scalars)
    }

    /// The direct form is the CPU's Float64 reference: refused on the GPU with a reason.
    @Test func directFormIsRefused() throws {
        let u = try DeviceTensor(Tensor.randomNormal([1, 2, 8], seed: 7)).to(Self.gpu)
        let k = try DeviceTensor(Tensor.randomNormal([2, 8], seed: 8)).to(Self.gpu)
        #expect(throws: LineaError.self) { try LongConv.forward(u: u, k: k, form: .direct) }
    }
}
