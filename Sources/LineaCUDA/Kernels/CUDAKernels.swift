/// The CUDA C sources of Linea's kernels (compiled by NVRTC on first use) and their entry points.
public enum CUDAKernels {
    /// Every kernel source with its name and `extern "C" __global__` entry points (for checks and tools).
    /// `attention_hopper` needs `attentionHopperOptions` (sm_90a) and an sm_90 device.
    public static var all: [(name: String, source: String, entries: [String])] {
        [
            ("attention_simple", attentionSimple,
             ["f32", "bf16", "f16"].flatMap { t in [64, 128, 256].map { "linea_attn_simple_\(t)_d\($0)" } }),
            ("attention_mma", attentionMMA, ["bf16", "f16"].flatMap { t in [64, 128].map { "linea_attn_mma_\(t)_d\($0)" } }),
            ("attention_hopper", attentionHopper,
             ["bf16", "f16"].flatMap { ["linea_attn_wgmma_\($0)_d128", "linea_attn_wgmma_ws_\($0)_d128"] }),
            ("recurrent_step", recurrentStep,
             ["f32", "bf16", "f16"].flatMap { t in [128, 256].flatMap { k in [1, 4].map { "linea_rec_step_\(t)_k\(k)_v\($0)" } } }),
            ("attention_split_kv", attentionSplitKV,
             ["f32", "bf16", "f16"].flatMap { t in [64, 128, 256].flatMap { d in [4, 8].map { "linea_splitkv_\(t)_d\(d)_r\($0)" } } }
                + ["linea_splitkv_merge"]),
            ("attention_block_sparse", attentionBlockSparse,
             [64, 128, 256].map { "linea_attn_bsparse_d\($0)" }),
            ("chunked", chunked, chunkedEntries),
            ("chunked_gla", chunkedGLA, [64, 128].flatMap { k in [64, 128].map { "linea_gla_fwd_k\(k)_v\($0)" } }),
            ("chunked_simt", chunkedSIMT,
             ["f32", "f16"].flatMap { t in [64, 128].flatMap { k in [32, 64].map { "linea_chunk_simt_\(t)_k\(k)_v\($0)" } } }),
        ]
    }

    /// The entries of `chunked`: the full walk and end-state pass per K, V block and kind of the scalar decays, and per K
    /// and kind of the delta rules; the WY prepass; the scans.
    static var chunkedEntries: [String] {
        var names: [String] = []
        for pass in ["fwd", "end"] {
            for k in [64, 128] {
                for v in [32, 64, 128] {
                    names += ["plain", "gated"].map { "linea_chunk_\(pass)_k\(k)_v\(v)_\($0)" }
                }
                names += ["delta", "gdelta"].map { "linea_chunk_\(pass)_k\(k)_\($0)" }
            }
        }
        names += [64, 128].flatMap { k in [64, 128].map { "linea_chunk_wy_k\(k)_v\($0)" } }
        return names + ["linea_chunk_seg_scan", "linea_chunk_seg_scan_delta"]
    }
}
