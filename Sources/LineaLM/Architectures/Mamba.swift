import Foundation
import Linea

/// Hugging Face's `mamba` (MambaForCausalLM) and `falcon_mamba`: RMSNorm, then the Mamba-1 mixer — one input
/// projection to [x | z], a causal SiLU convolution over x with its carried state, x_proj to [dt | B | C] (Falcon-Mamba
/// RMS-normalizes each, without a weight), dt_proj, the selective scan (softplus(dt + dt_proj.bias), A = -e^A_log, a D
/// skip, gated by silu(z)) from the carried state, the output projection — and a residual add.
///
/// The scan reads channels first (`[B, D, L]`, as mamba_ssm); the projections run channels last, so the mixer
/// transposes between the two where the tensors live (`Ops.transposeLastTwo`).
public final class Mamba: CausalLM {
    /// The config fields the forward reads.
    struct Config {
        let vocab: Int, hidden: Int, layers: Int, eps: Float, tied: Bool
        let inner: Int, state: Int, convWidth: Int, rank: Int, bias: Bool, convBias: Bool
        /// Falcon-Mamba's RMS normalization of dt, B and C (nil: none).
        let mixerEps: Float?

        init(_ c: ConfigFields, falcon: Bool) throws {
            vocab = try c.int("vocab_size")
            hidden = try c.int("hidden_size")
            layers = try c.int("num_hidden_layers")
            eps = Float(try c.double("layer_norm_epsilon", default: 1e-5))
            tied = try c.bool("tie_word_embeddings", default: true)
            state = try c.int("state_size", default: 16)
            let expand = try c.double("expand", default: 2)
            inner = try c.int("intermediate_size", default: Int(expand * Double(hidden)))
            convWidth = try c.int("conv_kernel", default: 4)
            if (try? c.string("time_step_rank")) == "auto" {
                rank = (hidden + 15) / 16
            } else {
                rank = try c.int("time_step_rank", default: (hidden + 15) / 16)
            }
            bias = try c.bool("use_bias", default: false)
            convBias = try c.bool("use_conv_bias", default: true)
            mixerEps = falcon ? Float(try c.double("mixer_rms_eps", default: 1e-6)) : nil
            guard try c.string("hidden_act", default: "silu") == "silu" else { throw c.unsupported("hidden_act", "silu") }
            c.ignore(["expand", "residual_in_fp32", "rescale_prenorm_residual", "time_step_floor", "time_step_init_scheme", "time_step_max",
                      "time_step_min", "time_step_scale", "use_associative_scan", "use_mambapy", "use_falcon_mambapy", "initializer_range"])
            for (name, n) in [("vocab_size", vocab), ("hidden_size", hidden), ("num_hidden_layers", layers), ("state_size", state),
                              ("intermediate_size", inner), ("time_step_rank", rank)] where n < 1 {
                throw LineaError.invalidArgument(argument: "\(c.source): \(name)", expected: ">= 1", actual: "\(n)")
            }
            guard (2...4).contains(convWidth) else { throw c.unsupported("conv_kernel", "2, 3 or 4") }
        }
    }

    /// One block's weights; `a = -e^A_log [I, N]`, `d [I]` and `dtBias [I]` as f32.
    struct Layer {
        let norm: DeviceTensor, inProj: DeviceTensor, inBias: DeviceTensor?, conv: DeviceTensor, convBias: DeviceTensor?
        let xProj: DeviceTensor, dtProj: DeviceTensor, dtBias: DeviceTensor, a: DeviceTensor, d: DeviceTensor
        let outProj: DeviceTensor, outBias: DeviceTensor?
    }

    public let modelType: String
    public var vocabularySize: Int { config.vocab }
    public var maxContext: Int? { nil }
    public let device: Device
    let config: Config
    let embed: DeviceTensor, norm: DeviceTensor, head: DeviceTensor
    let layers: [Layer]
    /// Ones for Falcon-Mamba's weightless RMS norms, of dt_rank and of N.
    let unitRank: DeviceTensor, unitState: DeviceTensor

    /// Reads the config and takes every weight under `backbone.` (throws naming a missing, misshapen or left-over
    /// tensor). O(weights).
    init(config fields: ConfigFields, weights w: Weights, modelType: String) throws {
        let c = try Config(fields, falcon: modelType == "falcon_mamba")
        (config, self.modelType, device) = (c, modelType, w.device)
        embed = try w.take("backbone.embeddings.weight", [c.vocab, c.hidden])
        norm = try w.take("backbone.norm_f.weight", [c.hidden])
        head = try w.head(tied: c.tied, embedding: embed)
        layers = try (0..<c.layers).map { i in
            let p = "backbone.layers.\(i)."
            let m = p + "mixer."
            return Layer(
                norm: try w.take(p + "norm.weight", [c.hidden]), inProj: try w.take(m + "in_proj.weight", [2 * c.inner, c.hidden]),
                inBias: c.bias ? try w.take(m + "in_proj.bias", [2 * c.inner]) : nil,
                conv: try w.take(m + "conv1d.weight", [c.inner, 1, c.convWidth]).reshaped([c.inner, c.convWidth]),
                convBias: c.convBias ? try w.take(m + "conv1d.bias", [c.inner]) : nil,
                xProj: try w.take(m + "x_proj.weight", [c.rank + 2 * c.state, c.inner]), dtProj: try w.take(m + "dt_proj.weight", [c.inner, c.rank]),
                dtBias: try Ops.cast(w.take(m + "dt_proj.bias", [c.inner]), to: .float32),
                a: try ModelMath.negExp(w.take(m + "A_log", [c.inner, c.state])), d: try Ops.cast(w.take(m + "D", [c.inner]), to: .float32),
                outProj: try w.take(m + "out_proj.weight", [c.hidden, c.inner]), outBias: c.bias ? try w.take(m + "out_proj.bias", [c.hidden]) : nil)
        }
        try w.finish()
        unitRank = try DeviceTensor(Tensor(zeros: [c.rank], value: 1), on: device)
        unitState = try DeviceTensor(Tensor(zeros: [c.state], value: 1), on: device)
    }

    /// No attention layer: `kvCache` has nothing to apply to.
    public func makeCache(batch: Int, capacity: Int, kvCache: KVCacheConfig) throws -> ModelCache {
        try ModelMath.recurrentCache(batch: batch, capacity: capacity, layers: config.layers, state: [config.inner, config.state],
                                     convChannels: config.inner, convWidth: config.convWidth, device: device)
    }

    public func forward(_ ids: DeviceTensor, cache: ModelCache, lastOnly: Bool) throws -> DeviceTensor {
        try ModelMath.residualStack(ids, cache: cache, embed: embed, norms: layers.map(\.norm), eps: config.eps, finalNorm: norm, head: head,
                                    lastOnly: lastOnly) { i, x, layerCache in try mixer(x, layers[i], cache: &layerCache) }
    }

    /// The Mamba-1 mixer on `x [B, T, hidden]`, continuing the layer's conv and SSM states.
    private func mixer(_ x: DeviceTensor, _ m: Layer, cache: inout [String: DeviceTensor]) throws -> DeviceTensor {
        let c = config
        let (I, N, R) = (c.inner, c.state, c.rank)
        let projected = try Ops.matmul(x, weight: m.inProj, bias: m.inBias)
        let conv = try Ops.causalConv1d(ModelMath.slice(projected, 0..<I), weight: m.conv, bias: m.convBias, state: cache["conv"]!, silu: true)
        let parameters = try Ops.matmul(conv, weight: m.xProj)
        var (dt, b, cc) = (try ModelMath.slice(parameters, 0..<R), try ModelMath.slice(parameters, R..<(R + N)),
                           try ModelMath.slice(parameters, (R + N)..<(R + 2 * N)))
        if let eps = c.mixerEps {
            (dt, b, cc) = (try Ops.rmsNorm(dt, weight: unitRank, eps: eps), try Ops.rmsNorm(b, weight: unitState, eps: eps),
                           try Ops.rmsNorm(cc, weight: unitState, eps: eps))
        }
        let delta = try Ops.matmul(dt, weight: m.dtProj)
        let scan = try SelectiveScan.forward(u: swapped(conv), delta: swapped(delta), A: m.a, B: swapped(b),
                                             C: swapped(cc), D: m.d, z: swapped(ModelMath.slice(projected, I..<(2 * I))),
                                             deltaBias: m.dtBias, deltaSoftplus: true, initialState: cache["state"]!)
        cache["state"] = scan.finalState
        return try Ops.matmul(swapped(scan.o), weight: m.outProj, bias: m.outBias)
    }

    /// `[B, T, C]` to `[B, C, T]` (or back: the last two axes swapped). O(n).
    private func swapped(_ x: DeviceTensor) throws -> DeviceTensor { try Ops.transposeLastTwo(x) }
}
