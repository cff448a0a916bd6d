/// The CUDA C sources of Linea's kernels (compiled by NVRTC on first use) and their entry points.
public enum CUDAKernels {
    /// Every kernel source with its name and `extern "C" __global__` entry points (for checks and tools).
    public static var all: [(name: String, source: String, entries: [String])] {
        [
            ("attention_simple", attentionSimple,
             ["f32", "bf16"].flatMap { t in [64, 128, 256].map { "linea_attn_simple_\(t)_d\($0)" } }),
            ("attention_mma", attentionMMA, ["linea_attn_mma_bf16_d64", "linea_attn_mma_bf16_d128"]),
            ("recurrent_step", recurrentStep,
             ["f32", "bf16"].flatMap { t in [128, 256].flatMap { k in [1, 4].map { "linea_gdr_step_\(t)_k\(k)_v\($0)" } } }),
            ("chunked", chunked,
             ["plain", "delta"].flatMap { m in [64, 128].flatMap { k in [32, 64].map { "linea_chunk_fwd_k\(k)_v\($0)_\(m)" } } }
                + [64, 128].map { "linea_chunk_fwd_k\($0)_v128_plain" }
                + [64, 128].flatMap { k in [64, 128].map { "linea_chunk_wy_k\(k)_v\($0)" } }),
        ]
    }
}
