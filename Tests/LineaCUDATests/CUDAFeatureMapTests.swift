import Foundation
import Linea
import LineaCUDA
import Testing

/// Feature-map linear attention on the GPU (the map kernels, then linear_attn's chunked kernel) against the CPU's
/// chunked form and the Float64 reference on the same inputs (skipped when no GPU is present).
@Suite(.enabled(if: CUDABackend.isAvailable, "needs an NVIDIA GPU, its driver and NVRTC"))
struct CUDAFeatureMapTests {
    static let gpu = Device.cuda(0)
    static let maps = FeatureMapKind.allCases

    init() throws { try CUDADeviceBackend.register() }

    /// (B, T, H, HV, K, V): one token, GQA with V != K across a chunk boundary, 130 tokens (two boundaries), V = 128 (with
    /// the normalizer's column: two value blocks), K = 64 (taylor2: 4161 features, 33 feature blocks).
    static let shapes: [(Int, Int, Int, Int, Int, Int)] = [(1, 1, 2, 2, 16, 16), (2, 65, 2, 4, 16, 32), (1, 130, 1, 1, 32, 16),
                                                           (1, 70, 2, 2, 16, 128), (1, 40, 1, 1, 64, 8)]

    @Test(arguments: maps, [true, false])
    func matchesTheCPU(_ kind: FeatureMapKind, causal: Bool) throws {
        for (index, (B, T, H, HV, K, V)) in Self.shapes.enumerated() {
            for normalize in [false, true] {
                for features in kind == .performer ? [64, 300] : [64] {
                    let x = try FeatureMapFamily.inputs(kind, B: B, T: T, H: H, HV: HV, K: K, V: V, seed: UInt64(7 * index + 1))
                    let map = FeatureMap(kind, features: features, seed: 3, weights: kind.weightInput.flatMap { x[$0] })
                    let options = FeatureMapOptions(causal: causal, normalize: normalize, scale: index == 2 ? 0.5 : nil)
                    let want = try FeatureMapAttention.forward(q: x["q"]!, k: x["k"]!, v: x["v"]!, map: map, options: options, form: .reference)
                    let cpu = try FeatureMapAttention.forward(q: x["q"]!, k: x["k"]!, v: x["v"]!, map: map, options: options)
                    let o = try FeatureMapAttention.forward(q: DeviceTensor(x["q"]!, on: Self.gpu), k: DeviceTensor(x["k"]!, on: Self.gpu),
                                                            v: DeviceTensor(x["v"]!, on: Self.gpu), map: map, options: options)
                    #expect(o.device == Self.gpu && o.shape == [B, T, HV, V])
                    let got = try o.host()
                    let (stats, cpuStats) = (ErrorStats(got, want), ErrorStats(cpu, want))
                    let label = "\(kind.rawValue) B\(B) T\(T) H\(H) HV\(HV) K\(K) V\(V) causal \(causal) normalize \(normalize) m\(features)"
                    // As close to the reference as the CPU's Float32 form, within a factor (other summation orders).
                    #expect(stats.relativeRMS <= max(1e-5, 4 * cpuStats.relativeRMS), "\(label): GPU \(stats), CPU \(cpuStats)")
                }
            }
        }
    }

    /// bf16 inputs are cast to f32 on the device first: the result is the f32 one on the rounded inputs.
    @Test func bfloat16InputsAreCast() throws {
        let x = try FeatureMapFamily.inputs(.elu, B: 1, T: 70, H: 2, HV: 2, K: 32, V: 32, seed: 11)
        let up = { (t: Tensor) in try DeviceTensor(t, dtype: .bfloat16, on: Self.gpu) }
        let options = FeatureMapOptions(causal: true, normalize: true)
        let o = try FeatureMapAttention.forward(q: up(x["q"]!), k: up(x["k"]!), v: up(x["v"]!), map: FeatureMap(.elu), options: options)
        let seen = { (t: Tensor) in try DeviceTensor(t, dtype: .bfloat16).host() }
        let want = try FeatureMapAttention.forward(q: seen(x["q"]!), k: seen(x["k"]!), v: seen(x["v"]!), map: FeatureMap(.elu), options: options,
                                                   form: .reference)
        let stats = ErrorStats(try o.host(), want)
        #expect(stats.relativeRMS <= 1e-5, "\(stats)")
    }

    /// What the GPU does not take is refused with a reason, not run wrong: the recurrent form, chunks other than 64.
    @Test func unsupportedCallsAreRefused() throws {
        let x = try FeatureMapFamily.inputs(.hedgehog, B: 1, T: 8, H: 1, HV: 1, K: 16, V: 16, seed: 5)
        let (q, k, v) = (try DeviceTensor(x["q"]!, on: Self.gpu), try DeviceTensor(x["k"]!, on: Self.gpu), try DeviceTensor(x["v"]!, on: Self.gpu))
        #expect(throws: LineaError.self) { try FeatureMapAttention.forward(q: q, k: k, v: v, map: FeatureMap(.elu), form: .chunked(size: 32)) }
        #expect(throws: LineaError.self) { try FeatureMapAttention.forward(q: q, k: k, v: v, map: FeatureMap(.elu), form: .recurrent) }
    }
}
