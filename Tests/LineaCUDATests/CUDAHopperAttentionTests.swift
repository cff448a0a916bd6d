import Foundation
import Linea
import LineaCUDA
import Testing

/// The Hopper (sm_90a, wgmma) attention kernel: source checks everywhere, GPU checks on an sm_90 device only.
@Suite struct CUDAHopperAttentionSourceTests {
    @Test func hopperSourceIsPinnedToSm90a() {
        // check_kernels.py and CUDAAttention both rely on these: wgmma exists only on the sm_90a target.
        #expect(CUDAKernels.attentionHopper.split(separator: "\n").contains("// linea-nvrtc-arch: sm_90a"))
        #expect(CUDAKernels.attentionHopperOptions == ["--gpu-architecture=sm_90a"])
        let hopper = CUDAKernels.all.first { $0.name == "attention_hopper" }
        #expect(hopper?.entries == ["linea_attn_wgmma_bf16_d128", "linea_attn_wgmma_ws_bf16_d128", "linea_attn_wgmma_bsparse_bf16_d128",
                                    "linea_attn_wgmma_f16_d128", "linea_attn_wgmma_ws_f16_d128", "linea_attn_wgmma_bsparse_f16_d128"])
        #expect(CUDAKernels.attentionHopper.contains("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16"))
        #expect(CUDAKernels.attentionHopper.contains("wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16"))
    }
}

private let isHopper = CUDABackend.isAvailable && ((try? CUDABackend.shared.computeCapability.major) ?? 0) == 9

/// wgmma kernel against the CPU reference (fresh inputs per case) and its argument checks; skipped off sm_90.
@Suite(.enabled(if: isHopper, "needs an sm_90 (Hopper) GPU, its driver and NVRTC"))
struct CUDAHopperAttentionTests {
    struct Case: Sendable, CustomStringConvertible {
        let b: Int, t: Int, s: Int, hq: Int, hkv: Int, causal: Bool, window: Int?, dtype: DType
        var description: String { "B=\(b) T=\(t) S=\(s) Hq=\(hq) Hkv=\(hkv) causal=\(causal) window=\(window.map(String.init) ?? "-") \(dtype)" }
    }

    static let cases: [Case] = [
        Case(b: 1, t: 384, s: 384, hq: 2, hkv: 2, causal: true, window: nil, dtype: .bfloat16),   // 3 full tiles
        Case(b: 2, t: 129, s: 700, hq: 4, hkv: 1, causal: true, window: nil, dtype: .float16),    // T < S, GQA 4:1
        Case(b: 1, t: 300, s: 300, hq: 2, hkv: 1, causal: true, window: 100, dtype: .bfloat16),   // window across tiles
        Case(b: 1, t: 100, s: 333, hq: 2, hkv: 2, causal: false, window: nil, dtype: .float16),   // non-causal, ragged S
        Case(b: 1, t: 200, s: 50, hq: 2, hkv: 2, causal: true, window: nil, dtype: .bfloat16),    // T > S: empty rows
    ]

    @Test(arguments: cases)
    func wgmmaMatchesReference(c: Case) throws {
        let seed = UInt64.random(in: 1...1_000_000)
        let q = try Tensor.randomNormal([c.b, c.t, c.hq, 128], seed: seed)
        let k = try Tensor.randomNormal([c.b, c.s, c.hkv, 128], seed: seed + 1)
        let v = try Tensor.randomNormal([c.b, c.s, c.hkv, 128], seed: seed + 2)
        let round = { (x: Tensor) in
            c.dtype == .bfloat16 ? HalfPrecision.roundedToBFloat16(x) : HalfPrecision.roundedToFloat16(x)
        }
        let want = try Attention.forward(q: round(q), k: round(k), v: round(v), options: AttentionOptions(causal: c.causal, window: c.window),
                                         form: .reference)
        let got = try CUDAAttention.forward(
            q: q, k: k, v: v, causal: c.causal, window: c.window, dtype: c.dtype, kernel: .wgmma, context: CUDABackend.shared)
        let o = ErrorStats(got.o, want.o), lse = ErrorStats(got.lse, want.lse)
        #expect(o.relativeRMS <= 2e-3, "o \(o) (seed \(seed))")
        #expect(lse.relativeRMS <= 2e-3, "lse \(lse) (seed \(seed))")
        // .auto takes the same kernel on sm_90 for D = 128 half-precision inputs.
        let auto = try CUDAAttention.forward(
            q: q, k: k, v: v, causal: c.causal, window: c.window, dtype: c.dtype, context: CUDABackend.shared)
        #expect(auto.o.scalars == got.o.scalars)
    }

    @Test func wgmmaRefusesWhatItCannotTake() throws {
        let ctx = try CUDABackend.shared
        let q64 = try Tensor(zeros: [1, 8, 1, 64])
        #expect(throws: LineaError.self) { try CUDAAttention.forward(q: q64, k: q64, v: q64, dtype: .bfloat16, kernel: .wgmma, context: ctx) }
        let q128 = try Tensor(zeros: [1, 8, 1, 128])
        #expect(throws: LineaError.self) { try CUDAAttention.forward(q: q128, k: q128, v: q128, dtype: .float32, kernel: .wgmma, context: ctx) }
    }
}
