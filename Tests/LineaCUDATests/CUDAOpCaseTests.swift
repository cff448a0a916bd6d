import Foundation
import Linea
import LineaCUDA
import Testing

/// The op-case table on the GPU, through the dispatch: every GPU form of every family on every case that the GPU
/// kernels take, with f32, bf16 and f16 inputs, against the Float64 reference on the same rounded inputs (skipped
/// when no GPU is present).
@Suite(.enabled(if: CUDABackend.isAvailable, "needs an NVIDIA GPU, its driver and NVRTC"))
struct CUDAOpCaseTests {
    @Test(arguments: OpFamilies.all.map(\.name), [DType.float32, .bfloat16, .float16])
    func everyGPUFormMatchesTheReference(_ name: String, _ dtype: DType) throws {
        let device = try CUDADeviceBackend.register().device
        let family = try OpFamilies.named(name)
        var ran = 0
        for (index, c) in family.cases.enumerated() {
            for form in family.forms(of: c, on: device) {
                let check = try family.check(c, form: form, on: device, dtype: dtype, seed: UInt64(1 + 10 * index))
                #expect(check.passed, "\(name) \(form) \(c.label) \(dtype): \(check.errors.map { "\($0.name) \($0.stats)" })")
                ran += 1
            }
        }
        // A family with GPU forms must run some case there; one without (CPU-only so far) has nothing to check.
        #expect(ran > 0 || family.forms(on: device).isEmpty, "\(name): no case ran on the GPU")
    }
}
