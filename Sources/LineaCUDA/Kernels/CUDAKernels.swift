/// The CUDA C sources of Linea's kernels (compiled by NVRTC on first use) and their entry points.
/// The sources are the files in Kernels/cu, embedded into `files` by scripts/embed_kernels.py (Kernels/Embedded), so
/// the binary needs nothing beside it.
package enum CUDAKernels {
    /// Tiled online-softmax attention forward, no tensor cores; any head dim <= 256; any architecture.
    /// Entries `linea_attn_simple_{f32,bf16,f16}_d{64,128,256}` (the suffix is the largest head dim handled), each
    /// compiled alone (`CUDAContext.entry`).
    public static let attentionSimple = file("attention_simple.cu")

    /// Flash attention forward on tensor cores (`mma.sync` m16n8k16 bf16, fp32 accumulation), header-free PTX.
    /// Entries `linea_attn_mma_{bf16,f16}_d{64,128}`.
    public static let attentionMMA = file("attention_mma.cu")

    /// Flash attention forward for Hopper: two warpgroups of 64 query rows, `wgmma` m64n128k16 for S = Q Kᵀ
    /// (both operands in shared memory) and O += P V (P from registers), K/V tiles of 128 keys brought in with
    /// cp.async into three 128B-swizzled shared-memory stages. Entries `linea_attn_wgmma_{bf16,f16}_d128` (v4: 256
    /// threads, grid (query tiles, Hq, B)) and `linea_attn_wgmma_ws_{bf16,f16}_d128` (warp-specialized, 384 threads,
    /// one-dimensional grid of work items, two more int arguments: B and the head-group size), and the latter's
    /// block-sparse form `linea_attn_wgmma_bsparse_{bf16,f16}_d128` (a block mask's kept 128-key tiles only).
    public static let attentionHopper = file("attention_hopper.cu")

    /// NVRTC option that the Hopper attention kernel needs (wgmma is an sm_90a-only instruction).
    public static let attentionHopperOptions = ["--gpu-architecture=sm_90a"]

    /// Flash-decoding: few queries against a long KV. `linea_splitkv_{f32,bf16,f16}_d{64,128,256}_r{4,8}` (input
    /// type, largest head dim, query rows per block) write per-partition partial results; `linea_splitkv_merge`
    /// combines them through their log-sum-exp.
    public static let attentionSplitKV = file("attention_split_kv.cu")

    /// Flash-style attention over a block mask, skipping key tiles the mask drops for the whole query tile.
    /// Entries `linea_attn_bsparse_d{64,128,256}` (largest head dim handled); the input type is a launch argument
    /// (it only changes the staging loads into fp32 shared memory).
    public static let attentionBlockSparse = file("attention_block_sparse.cu")

    /// Block-sparse attention on tensor cores (`mma.sync` m16n8k16, fp32 accumulation): the flash loop of
    /// attention_mma.cu over the key tiles of 64 the mask keeps (bn % 64 == 0, bm % 16 == 0 by default).
    /// Entries `linea_attn_bsparse_mma_{bf16,f16}_d{64,128}`.
    public static let attentionBlockSparseMMA = file("attention_block_sparse_mma.cu")

    /// Neighborhood attention (NATTEN) forward on a 1-D/2-D/3-D grid: query tiles of 64 against the box of keys their
    /// windows cover, online softmax. Entries `linea_natten_d{64,128,256}` (fp32 CUDA cores, key tiles of 32; largest
    /// value head dim handled; input and output types are launch arguments) and `linea_natten_mma_{bf16,f16}_d{64,128}`
    /// (mma.sync m16n8k16, key tiles of 64 gathered with cp.async, D = Dv).
    public static let attentionNeighborhood = file("attention_neighborhood.cu")

    /// The recurrent forms of the seven mechanisms (a template over gate kind and delta write), fp32 state: the
    /// one-token step, updated in place in one pass (`linea_rec_step_*`), and the whole-sequence scan, the state in
    /// registers over T tokens (`linea_rec_seq_*`). Entries `linea_rec_{step,seq}_{f32,bf16,f16}_k{128,256}_v{1,4}`
    /// (input type, largest key dim handled, columns per lane); the mechanism is a launch argument (uniform switch,
    /// 0...6 as `CUDARecurrentStep.mechanismCode`).
    public static let recurrentStep = file("recurrent_step.cu")

    // The chunked forward of the scalar-decay recurrences (linear_attn, retention, simple_gla) and, with the WY/UT
    // prepass, the delta rules, on tensor cores (`mma.sync` m16n8k16 bf16, fp32 accumulation, fp32 state), one compile
    // unit per stage so that a first use compiles only the stages it launches (chunked_scalar.cuh has the method).
    // plain: linear_attn, gated: retention and simple_gla, delta: delta_rule, gdelta: gated_delta_rule.

    /// The scalar decays' full walk: `linea_chunk_fwd_k{64,128}_v{32,64,128}_{plain,gated}`.
    public static let chunkedFwd = file("chunked_fwd.cu")

    /// The scalar decays' end-state pass of segmented runs: `linea_chunk_end_k{64,128}_v{32,64,128}_{plain,gated}`.
    public static let chunkedEnd = file("chunked_end.cu")

    /// The delta rules' full walk (64 columns of V per block): `linea_chunk_fwd_k{64,128}_{delta,gdelta}`.
    public static let chunkedDeltaFwd = file("chunked_delta_fwd.cu")

    /// The delta rules' end-state pass of segmented runs: `linea_chunk_end_k{64,128}_{delta,gdelta}`.
    public static let chunkedDeltaEnd = file("chunked_delta_end.cu")

    /// The delta rules' WY prepass: `linea_chunk_wy_k{64,128}_v{64,128}`.
    public static let chunkedWY = file("chunked_wy.cu")

    /// The scans that join the segments of long runs: `linea_chunk_seg_scan`, `linea_chunk_seg_scan_delta`.
    public static let chunkedScan = file("chunked_scan.cu")

    /// Chunked forward of gla (a log gate per key channel, fla's chunk_gla) on tensor cores (`mma.sync` m16n8k16 bf16,
    /// fp32 accumulation, fp32 state). Entries `linea_gla_fwd_k{64,128}_v{64,128}` (V block of 64 or 128 columns).
    /// Includes chunked_common.cuh.
    public static let chunkedGLA = file("chunked_gla.cu")

    /// Chunked forward of kda (the delta rule with a log decay per key channel, fla's chunk_kda) on tensor cores: the
    /// prepass `linea_kda_prep_k{64,128}_v{64,128}`, the walk `linea_kda_walk_k{64,128}_v{64,128}` (V block) and the
    /// end-state pass of split sequences `linea_kda_end_k{64,128}`.
    public static let chunkedKDA = file("chunked_kda.cu")

    /// Chunked forward of all six recurrences (linear_attn, retention, simple_gla, gla, delta_rule, gated_delta_rule)
    /// in fp32 on CUDA cores (no tensor cores), for f32 or f16 inputs. Entries
    /// `linea_chunk_simt_{f32,f16}_k{64,128}_v{32,64}` (input type, K, V block).
    public static let chunkedSIMT = file("chunked_simt.cu")

    /// The ops a model needs besides its mixers (embedding, norms, activations, rotary, causal conv1d, softmax, MoE
    /// routing, argmax, sampling, the matmul bias, dtype casts, transposes, pads, strided copies), one module for f32, bf16
    /// and f16. Entries `linea_<op>_{f32,bf16,f16}`, `linea_cast_<from>_<to>`, `linea_copy_strided_e{1,2,4,8}` and
    /// `linea_copy_rows_u{1,2,4,8,16}`.
    public static let modelOps = file("model_ops.cu")

    /// Mamba-1's selective scan (mamba_ssm's selective_scan_fn), fp32 state, lane groups of 16 or 32 per channel.
    /// Entries `linea_sscan_{f32,bf16,f16}_s{16,32}_p{1,2}` (sequence type, lanes per channel, states per lane).
    public static let selectiveScan = file("selective_scan.cu")

    /// The long convolution's steps around cuFFT (zero-pad into the in-place layout, spectral product, crop plus D u).
    /// Entries `linea_lconv_{pad,out}_{f32,bf16,f16}` (input type) and `linea_lconv_mul`.
    public static let longConv = file("long_conv.cu")

    /// Feature-map linear attention's maps (elu + 1, relu, taylor2, cosformer, Performer's exp with its stabilizers,
    /// hedgehog's and the hashing's per-head projections and two-sided features) and the column blocks, sums and
    /// normalizer around linear_attn's chunked kernel, and the non-causal read-out from its final state. Entries
    /// `linea_fmap_{map,performer,seqmax,cols,accum,finish,headproj,twosided,readout}` (f32).
    public static let featureMap = file("feature_map.cu")

    /// The prefill selectors' scoring (`BlockScoresCall`): XAttention's strided antidiagonal block scores, the pooled
    /// block scores (block means of q and k, then their products) and MInference's last-queries sums, fp32 on CUDA
    /// cores; the input type is a launch argument. Entries `linea_bsel_{antidiag,pool,pooled,lastq}`, and the steps
    /// around cuBLAS of XAttention's GEMM path, `linea_bsel_{groups,rowsoftmax}`.
    public static let blockSelect = file("block_select.cu")

    /// NVRTC options of the grouped-value-head modules (fla's GVA: HV = group·H state heads, q and k `[B,T,H,K]`, value
    /// head h reading q/k head h / group). Only a source compiled with them reads q/k that way; without them the
    /// kernels ignore their `group` argument and compile as for HV = H (no grouped addressing: it cost gated_delta_rule
    /// 3-5% on an H100). The chunked kernels and the decode step take them (each source says so in its
    /// `// linea-nvrtc-variant: gva` line, which scripts/check_kernels.py compiles); `options(group:)` picks them.
    public static let groupedHeadsOptions = ["-DLINEA_GVA=1"]

    /// The options of a launch with `group` = HV / H value heads per q/k head: `groupedHeadsOptions` when `group` > 1,
    /// else none. O(1).
    public static func options(group: Int) -> [String] { group > 1 ? groupedHeadsOptions : [] }

    /// The headers the sources `#include`, as (include name, text), passed to NVRTC with every compile (by
    /// `CUDAContext.function`): chunked_common.cuh, the device helpers of the bf16 chunked kernels and `chunkedGLA`
    /// (cp.async tile loads, ldmatrix and `mma.sync` m16n8k16 bf16 wrappers, bf16 packing and the hi + lo split, the
    /// cumulative gate sum); chunked_scalar.cuh, the scalar decays' walk (`chunkedFwd`, `chunkedEnd`); chunked_delta.cuh,
    /// the delta rules' transposed-state helpers (`chunkedDeltaFwd`, `chunkedDeltaEnd`); element_io.cuh, the f32 / bf16 /
    /// f16 element types with fp32 loads and stores (`modelOps`, `selectiveScan` and others); mma_tiles.cuh, the mma.sync
    /// attention kernels' cp.async, ldmatrix, MMA, tile-load, online-softmax, P·V and epilogue steps (`attentionMMA`, the
    /// tensor-core block-sparse and neighborhood kernels); block_bits.cuh, the block-sparse kernels' walk over their
    /// bitmask of kept key blocks.
    public static let headers: [(name: String, source: String)] =
        files.keys.filter { $0.hasSuffix(".cuh") }.sorted().map { ($0, files[$0]!) }

    /// The embedded text of the kernel file `name`. A missing name is a build error of the package itself (a file
    /// renamed without rerunning scripts/embed_kernels.py), which the source tests catch, so it traps.
    static func file(_ name: String) -> String {
        guard let text = files[name] else {
            fatalError("Kernels/cu/\(name) is not embedded: run scripts/embed_kernels.py")
        }
        return text
    }

    /// Every kernel source with its name and `extern "C" __global__` entry points (for checks and tools).
    /// `attention_hopper` needs `attentionHopperOptions` (sm_90a) and an sm_90 device.
    public static var all: [(name: String, source: String, entries: [String])] {
        [
            ("attention_simple", attentionSimple,
             ["f32", "bf16", "f16"].flatMap { t in [64, 128, 256].map { "linea_attn_simple_\(t)_d\($0)" } }),
            ("attention_mma", attentionMMA, ["bf16", "f16"].flatMap { t in [64, 128].map { "linea_attn_mma_\(t)_d\($0)" } }),
            ("attention_hopper", attentionHopper,
             ["bf16", "f16"].flatMap { ["linea_attn_wgmma_\($0)_d128", "linea_attn_wgmma_ws_\($0)_d128", "linea_attn_wgmma_bsparse_\($0)_d128"] }),
            ("recurrent_step", recurrentStep,
             ["step", "seq"].flatMap { f in
                 ["f32", "bf16", "f16"].flatMap { t in [128, 256].flatMap { k in [1, 4].map { "linea_rec_\(f)_\(t)_k\(k)_v\($0)" } } }
             }),
            ("attention_split_kv", attentionSplitKV,
             ["f32", "bf16", "f16"].flatMap { t in [64, 128, 256].flatMap { d in [4, 8].map { "linea_splitkv_\(t)_d\(d)_r\($0)" } } }
                + ["linea_splitkv_merge"]),
            ("attention_block_sparse", attentionBlockSparse,
             [64, 128, 256].map { "linea_attn_bsparse_d\($0)" }),
            ("attention_block_sparse_mma", attentionBlockSparseMMA,
             ["bf16", "f16"].flatMap { t in [64, 128].map { "linea_attn_bsparse_mma_\(t)_d\($0)" } }),
            ("attention_neighborhood", attentionNeighborhood,
             [64, 128, 256].map { "linea_natten_d\($0)" } + ["bf16", "f16"].flatMap { t in [64, 128].map { "linea_natten_mma_\(t)_d\($0)" } }),
            ("chunked_fwd", chunkedFwd, chunkedEntries(pass: "fwd")),
            ("chunked_end", chunkedEnd, chunkedEntries(pass: "end")),
            ("chunked_delta_fwd", chunkedDeltaFwd, ["delta", "gdelta"].flatMap { d in [64, 128].map { "linea_chunk_fwd_k\($0)_\(d)" } }),
            ("chunked_delta_end", chunkedDeltaEnd, ["delta", "gdelta"].flatMap { d in [64, 128].map { "linea_chunk_end_k\($0)_\(d)" } }),
            ("chunked_wy", chunkedWY, [64, 128].flatMap { k in [64, 128].map { "linea_chunk_wy_k\(k)_v\($0)" } }),
            ("chunked_scan", chunkedScan, ["linea_chunk_seg_scan", "linea_chunk_seg_scan_delta"]),
            ("chunked_gla", chunkedGLA, [64, 128].flatMap { k in [64, 128].map { "linea_gla_fwd_k\(k)_v\($0)" } }),
            ("chunked_kda", chunkedKDA,
             ["prep", "walk"].flatMap { p in [64, 128].flatMap { k in [64, 128].map { "linea_kda_\(p)_k\(k)_v\($0)" } } }
                + [64, 128].map { "linea_kda_end_k\($0)" }),
            ("chunked_simt", chunkedSIMT,
             ["f32", "f16"].flatMap { t in [64, 128].flatMap { k in [32, 64].map { "linea_chunk_simt_\(t)_k\(k)_v\($0)" } } }),
            ("selective_scan", selectiveScan,
             ["f32", "bf16", "f16"].flatMap { t in ["s16_p1", "s32_p1", "s32_p2"].map { "linea_sscan_\(t)_\($0)" } }),
            ("feature_map", featureMap, ["map", "performer", "seqmax", "cols", "accum", "finish", "headproj", "twosided", "readout"].map { "linea_fmap_\($0)" }),
            ("block_select", blockSelect, ["antidiag", "pool", "pooled", "lastq", "groups", "rowsoftmax"].map { "linea_bsel_\($0)" }),
            ("long_conv", longConv, ["f32", "bf16", "f16"].flatMap { ["linea_lconv_pad_\($0)", "linea_lconv_out_\($0)"] } + ["linea_lconv_mul"]),
            ("model_ops", modelOps,
             ["f32", "bf16", "f16"].flatMap { t in
                 ["embed_i32", "embed_i64", "norm", "norm_warp", "unary", "binary", "swiglu_halves", "rotary", "conv1d", "softmax", "route", "argmax", "sample",
                  "add_bias", "transpose", "pad2d"].map { "linea_\($0)_\(t)" }
             } + ["bf16", "f16"].flatMap { t in ["norm", "norm_warp", "swiglu_halves"].map { "linea_\($0)_f32_to_\(t)" } }
                + modelOpsCasts + ["linea_index_add_f32"] + [1, 2, 4, 8].map { "linea_copy_strided_e\($0)" }
                + [1, 2, 4, 8, 16].map { "linea_copy_rows_u\($0)" }),
        ]
    }

    /// model_ops.cu's dtype casts (every ordered pair of f32, bf16, f16).
    static let modelOpsCasts = [("f32", "bf16"), ("f32", "f16"), ("bf16", "f32"), ("f16", "f32"), ("bf16", "f16"), ("f16", "bf16")]
        .map { "linea_cast_\($0.0)_\($0.1)" }

    /// The scalar decays' entries of `pass` ("fwd": the full walk, "end": the end-state pass) per K, V block and kind.
    static func chunkedEntries(pass: String) -> [String] {
        [64, 128].flatMap { k in
            [32, 64, 128].flatMap { v in ["plain", "gated"].map { "linea_chunk_\(pass)_k\(k)_v\(v)_\($0)" } }
        }
    }
}
