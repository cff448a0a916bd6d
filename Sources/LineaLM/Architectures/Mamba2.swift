import Foundation
import Linea

/// Hugging Face's `mamba2` (Mamba2ForCausalLM): RMSNorm, then the Mamba-2 mixer — one input projection to
/// [z | x B C | dt], a causal SiLU convolution over x, B, C with its carried state, the SSD scan, a D skip, a gated
/// RMSNorm over groups of channels, the output projection — and a residual add.
///
/// flash-linear-attention's `mamba2` shares the model_type, the weight names and the forward but names its fields
/// differently (`norm_eps`, `dt_limit`, ...) and adds options (`rmsnorm`, `norm_before_gate`, `D_has_hdim`): a
/// config with any of fla's fields is read by fla's names.
///
/// The SSD scan is simple_gla with grouped heads: per head h, `S_t = e^{dt_t·A_h} S_{t-1} + B_t (dt_t x_t)ᵀ` and
/// `y_t = C_tᵀ S_t`, so q = C, k = B (n_groups key heads), v = dt·x, g = dt·A and scale 1.
public final class Mamba2: CausalLM {
    /// The config fields the forward reads.
    struct Config {
        let vocab: Int, hidden: Int, layers: Int, eps: Float, tied: Bool
        let heads: Int, headDim: Int, state: Int, groups: Int, convWidth: Int, inner: Int, convBias: Bool, bias: Bool
        let dtMin: Float, dtMax: Float
        /// fla only: the gated RMSNorm on the output (else `y · silu(z)`), and D per channel instead of per head.
        let gatedNorm: Bool, dPerChannel: Bool

        init(_ c: ConfigFields) throws {
            let fla = ["norm_eps", "dt_limit", "rmsnorm", "D_has_hdim", "norm_before_gate"].contains { c.values[$0] != nil }
            vocab = try c.int("vocab_size")
            hidden = try c.int("hidden_size")
            layers = try c.int("num_hidden_layers")
            eps = Float(try c.double(fla ? "norm_eps" : "layer_norm_epsilon", default: 1e-5))
            tied = try c.bool("tie_word_embeddings", default: true)
            headDim = try c.int("head_dim")
            state = try c.int("state_size")
            groups = try c.int("n_groups", default: 1)
            convWidth = try c.int("conv_kernel", default: 4)
            let expand = try c.double("expand", default: 2)
            inner = Int(expand * Double(hidden))
            // fla derives the head count (and writes it too).
            heads = fla ? try c.optionalInt("num_heads") ?? inner / max(headDim, 1) : try c.int("num_heads")
            convBias = try c.bool("use_conv_bias", default: true)
            bias = try c.bool("use_bias", default: false)
            let limitKey = fla ? "dt_limit" : "time_step_limit"
            if c.has(limitKey) {
                guard let limit = c.values[limitKey] as? [Any], limit.count == 2,
                      let low = ConfigFields.number(limit[0]), let high = ConfigFields.number(limit[1]) else {
                    throw c.unsupported(limitKey, "[low, high] (numbers or {\"__float__\": \"Infinity\"})")
                }
                (dtMin, dtMax) = (Float(low), Float(high))
            } else {
                (dtMin, dtMax) = (0, .infinity)
            }
            guard try c.string("hidden_act", default: "silu") == "silu" else { throw c.unsupported("hidden_act", "silu") }
            if fla {
                gatedNorm = try c.bool("rmsnorm", default: true)
                dPerChannel = try c.bool("D_has_hdim", default: false)
                // transformers ignores this field (it always gates first); fla honors it.
                if try c.bool("norm_before_gate", default: false) { throw c.unsupported("norm_before_gate", "false (gate, then norm)") }
                // Initialization only, or kernel choices.
                c.ignore(["dt_min", "dt_max", "dt_init_floor", "A_init_range", "conv_init", "fuse_norm", "fuse_cross_entropy",
                          "fuse_linear_cross_entropy", "use_l2warp"])
            } else {
                (gatedNorm, dPerChannel) = (true, false)
                c.ignore(["norm_before_gate"])
            }
            c.ignore(["chunk_size", "time_step_rank", "time_step_min", "time_step_max", "time_step_floor", "residual_in_fp32",
                      "rescale_prenorm_residual", "layer_types"])
            guard inner == heads * headDim else {
                throw LineaError.invalidArgument(argument: "\(c.source): num_heads", expected: "num_heads · head_dim = expand · hidden_size (\(inner))",
                                                 actual: "\(heads) · \(headDim)")
            }
            guard groups >= 1, heads % groups == 0 else {
                throw LineaError.invalidArgument(argument: "\(c.source): n_groups", expected: "a divisor of num_heads (\(heads))", actual: "\(groups)")
            }
            guard (2...4).contains(convWidth) else { throw c.unsupported("conv_kernel", "2, 3 or 4") }
        }

        /// Channels through the convolution: x, B and C.
        var convChannels: Int { inner + 2 * groups * state }
    }

    /// One block's weights; the per-head vectors as f32: `a = -e^A_log`, `d [H, 1]` (broadcast over a head's channels;
    /// `[H, P]` per channel), `dtBias`; `gatedNorm` nil when fla's `rmsnorm` is off.
    struct Layer {
        let norm: DeviceTensor, inProj: DeviceTensor, inBias: DeviceTensor?, conv: DeviceTensor, convBias: DeviceTensor?
        let a: DeviceTensor, d: DeviceTensor, dtBias: DeviceTensor, gatedNorm: DeviceTensor?, outProj: DeviceTensor, outBias: DeviceTensor?
    }

    public let modelType: String
    public var vocabularySize: Int { config.vocab }
    public var maxContext: Int? { nil }
    public let device: Device
    let config: Config
    let embed: DeviceTensor, norm: DeviceTensor, head: DeviceTensor
    let layers: [Layer]
    /// Ones of one group's width: the gated norm normalizes each group, then scales by the whole weight.
    let unitWeight: DeviceTensor

    /// Reads the config and takes every weight under `backbone.` (throws naming a missing, misshapen or left-over
    /// tensor). O(weights).
    init(config fields: ConfigFields, weights w: Weights, modelType: String) throws {
        let c = try Config(fields)
        (config, self.modelType, device) = (c, modelType, w.device)
        embed = try w.take("backbone.embeddings.weight", [c.vocab, c.hidden])
        norm = try w.take("backbone.norm_f.weight", [c.hidden])
        head = try w.head(tied: c.tied, embedding: embed)
        let projection = c.inner + c.convChannels + c.heads
        layers = try (0..<c.layers).map { i in
            let p = "backbone.layers.\(i)."
            let m = p + "mixer."
            return Layer(
                norm: try w.take(p + "norm.weight", [c.hidden]), inProj: try w.take(m + "in_proj.weight", [projection, c.hidden]),
                inBias: c.bias ? try w.take(m + "in_proj.bias", [projection]) : nil,
                conv: try w.take(m + "conv1d.weight", [c.convChannels, 1, c.convWidth]).reshaped([c.convChannels, c.convWidth]),
                convBias: c.convBias ? try w.take(m + "conv1d.bias", [c.convChannels]) : nil,
                a: try ModelMath.negExp(w.take(m + "A_log", [c.heads])), d: try Ops.cast(w.take(m + "D", c.dPerChannel ? [c.inner] : [c.heads]), to: .float32).reshaped([c.heads, c.dPerChannel ? c.headDim : 1]),
                dtBias: try Ops.cast(w.take(m + "dt_bias", [c.heads]), to: .float32),
                gatedNorm: c.gatedNorm ? try Ops.cast(w.take(m + "norm.weight", [c.inner]), to: .float32) : nil,
                outProj: try w.take(m + "out_proj.weight", [c.hidden, c.inner]), outBias: c.bias ? try w.take(m + "out_proj.bias", [c.hidden]) : nil)
        }
        try w.finish()
        unitWeight = try DeviceTensor(Tensor(zeros: [c.inner / c.groups], value: 1), on: device)
    }

    /// No attention layer: `kvCache` has nothing to apply to.
    public func makeCache(batch: Int, capacity: Int, kvCache: KVCacheConfig) throws -> ModelCache {
        try ModelMath.recurrentCache(batch: batch, capacity: capacity, layers: config.layers, state: [config.heads, config.state, config.headDim],
                                     convChannels: config.convChannels, convWidth: config.convWidth, device: device)
    }

    public func forward(_ ids: DeviceTensor, cache: ModelCache, lastOnly: Bool) throws -> DeviceTensor {
        try ModelMath.residualStack(ids, cache: cache, embed: embed, norms: layers.map(\.norm), eps: config.eps, finalNorm: norm, head: head,
                                    lastOnly: lastOnly) { i, x, layerCache in try mixer(x, layers[i], cache: &layerCache) }
    }


    /// The Mamba-2 mixer on `x [B, T, hidden]`, continuing the layer's conv and SSM states.
    private func mixer(_ x: DeviceTensor, _ m: Layer, cache: inout [String: DeviceTensor]) throws -> DeviceTensor {
        let c = config
        let (B, T, H, P, N, G, I) = (x.shape[0], x.shape[1], c.heads, c.headDim, c.state, c.groups, c.inner)
        let parts = try ModelMath.projections(x, weight: m.inProj, bias: m.inBias, widths: [I, c.convChannels, H])
        let z = try parts[0].reshaped([B, T, H, P])
        let conv = try Ops.causalConv1d(parts[1], weight: m.conv, bias: m.convBias, state: cache["conv"]!, silu: true, parts: [I, G * N, G * N])
        let xs = try conv[0].reshaped([B, T, H, P])
        let keys = try conv[1].reshaped([B, T, G, N])
        let queries = try conv[2].reshaped([B, T, G, N])
        // dt = clamp(softplus(dt + dt_bias), limit); the scan reads v = dt·x and the log decay g = dt·A.
        var dt = try Ops.softplus(Ops.add(parts[2], m.dtBias))
        if c.dtMin > 0 || c.dtMax < .infinity { dt = try Ops.clamp(dt, min: c.dtMin, max: c.dtMax) }
        let scanned = try ModelMath.recurrence(.simpleGLA, q: queries, k: keys, v: Ops.mul(xs, dt.reshaped([B, T, H, 1])), g: Ops.mul(dt, m.a),
                                               scale: 1, weights: m.outProj, cache: &cache)
        // y + D·x, gated by silu(z), then RMS-normalized over each group of I/G channels and scaled by the weight.
        let gated = try Ops.mul(Ops.add(scanned, Ops.mul(xs, m.d)), Ops.silu(z)).reshaped([B, T, G, I / G])
        let y = try m.gatedNorm.map { try Ops.mul(Ops.rmsNorm(gated, weight: unitWeight, eps: c.eps).reshaped([B, T, I]), $0) }
            ?? gated.reshaped([B, T, I])
        return try Ops.matmul(y, weight: m.outProj, bias: m.outBias)
    }
}
