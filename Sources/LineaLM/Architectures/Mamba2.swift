import Foundation
import Linea

/// Hugging Face's `mamba2` (Mamba2ForCausalLM): RMSNorm, then the Mamba-2 mixer — one input projection to
/// [z | x B C | dt], a causal SiLU convolution over x, B, C with its carried state, the SSD scan, a D skip, a gated
/// RMSNorm over groups of channels, the output projection — and a residual add.
///
/// The SSD scan is simple_gla with grouped heads: per head h, `S_t = e^{dt_t·A_h} S_{t-1} + B_t (dt_t x_t)ᵀ` and
/// `y_t = C_tᵀ S_t`, so q = C, k = B (n_groups key heads), v = dt·x, g = dt·A and scale 1.
public final class Mamba2: CausalLM {
    /// The config fields the forward reads.
    struct Config {
        let vocab: Int, hidden: Int, layers: Int, eps: Float, tied: Bool
        let heads: Int, headDim: Int, state: Int, groups: Int, convWidth: Int, inner: Int, convBias: Bool, bias: Bool
        let dtMin: Float, dtMax: Float

        init(_ c: ConfigFields) throws {
            vocab = try c.int("vocab_size")
            hidden = try c.int("hidden_size")
            layers = try c.int("num_hidden_layers")
            eps = Float(try c.double("layer_norm_epsilon", default: 1e-5))
            tied = try c.bool("tie_word_embeddings", default: true)
            heads = try c.int("num_heads")
            headDim = try c.int("head_dim")
            state = try c.int("state_size")
            groups = try c.int("n_groups", default: 1)
            convWidth = try c.int("conv_kernel", default: 4)
            let expand = try c.double("expand", default: 2)
            inner = Int(expand * Double(hidden))
            convBias = try c.bool("use_conv_bias", default: true)
            bias = try c.bool("use_bias", default: false)
            if c.has("time_step_limit") {
                guard let limit = c.values["time_step_limit"] as? [Any], limit.count == 2,
                      let low = ConfigFields.number(limit[0]), let high = ConfigFields.number(limit[1]) else {
                    throw c.unsupported("time_step_limit", "[low, high] (numbers or {\"__float__\": \"Infinity\"})")
                }
                (dtMin, dtMax) = (Float(low), Float(high))
            } else {
                (dtMin, dtMax) = (0, .infinity)
            }
            guard try c.string("hidden_act", default: "silu") == "silu" else { throw c.unsupported("hidden_act", "silu") }
            c.ignore(["chunk_size", "time_step_rank", "time_step_min", "time_step_max", "time_step_floor", "residual_in_fp32",
                      "rescale_prenorm_residual", "layer_types", "norm_before_gate"])
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

    /// One block's weights (the A_log, D and dt_bias vectors on the host: the gating runs there).
    struct Layer {
        let norm: DeviceTensor, inProj: DeviceTensor, inBias: DeviceTensor?, conv: DeviceTensor, convBias: DeviceTensor?
        let a: [Float], d: [Float], dtBias: [Float], gatedNorm: [Float], outProj: DeviceTensor, outBias: DeviceTensor?
    }

    public let modelType: String
    public var vocabularySize: Int { config.vocab }
    public var maxContext: Int? { nil }
    public let device: Device
    let config: Config
    let embed: DeviceTensor, norm: DeviceTensor, head: DeviceTensor
    let layers: [Layer]

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
                a: try w.take(m + "A_log", [c.heads]).host().scalars.map { -exp($0) }, d: try w.take(m + "D", [c.heads]).host().scalars,
                dtBias: try w.take(m + "dt_bias", [c.heads]).host().scalars, gatedNorm: try w.take(m + "norm.weight", [c.inner]).host().scalars,
                outProj: try w.take(m + "out_proj.weight", [c.hidden, c.inner]), outBias: c.bias ? try w.take(m + "out_proj.bias", [c.hidden]) : nil)
        }
        try w.finish()
    }

    public func makeCache(batch: Int, capacity: Int) throws -> ModelCache {
        let c = config
        let cache = ModelCache(batch: batch, capacity: capacity, layers: c.layers)
        for i in 0..<c.layers {
            cache.layers[i]["state"] = try DeviceTensor.zeros([batch, c.heads, c.state, c.headDim], on: device)
            cache.layers[i]["conv"] = try DeviceTensor.zeros([batch, c.convChannels, c.convWidth - 1], on: device)
        }
        return cache
    }

    public func forward(_ ids: DeviceTensor, cache: ModelCache, lastOnly: Bool) throws -> DeviceTensor {
        let c = config
        _ = try ModelMath.begin(ids, cache)
        var h = try ModelMath.cast(Ops.embedding(ids: ids, table: embed), .float32)
        for (i, layer) in layers.enumerated() {
            h = try Ops.add(h, mixer(Ops.rmsNorm(h, weight: layer.norm, eps: c.eps), layer, cache: &cache.layers[i]))
        }
        cache.length += ids.shape[1]
        return try ModelMath.logits(h, norm: norm, eps: c.eps, head: head, lastOnly: lastOnly)
    }


    /// The Mamba-2 mixer on `x [B, T, hidden]`, continuing the layer's conv and SSM states.
    private func mixer(_ x: DeviceTensor, _ m: Layer, cache: inout [String: DeviceTensor]) throws -> DeviceTensor {
        let c = config
        let (B, T, H, P, N, G, I) = (x.shape[0], x.shape[1], c.heads, c.headDim, c.state, c.groups, c.inner)
        let projected = try Ops.matmul(x, weight: m.inProj, bias: m.inBias)
        let z = try ModelMath.slice(projected, 0..<I).host().scalars
        let rawDT = try ModelMath.slice(projected, (I + c.convChannels)..<(I + c.convChannels + H)).host().scalars
        let conv = try Ops.causalConv1d(ModelMath.slice(projected, I..<(I + c.convChannels)), weight: m.conv, bias: m.convBias,
                                        state: cache["conv"]!, silu: true)
        let xs = try ModelMath.slice(conv, 0..<I).host().scalars
        let keys = try ModelMath.slice(conv, I..<(I + G * N)).reshaped([B, T, G, N])
        let queries = try ModelMath.slice(conv, (I + G * N)..<(I + 2 * G * N)).reshaped([B, T, G, N])
        // dt = clamp(softplus(dt + dt_bias), limit); the scan reads v = dt·x and the log decay g = dt·A.
        var v = [Float](repeating: 0, count: B * T * I), g = [Float](repeating: 0, count: B * T * H)
        for row in 0..<(B * T) {
            for head in 0..<H {
                let shifted = rawDT[row * H + head] + m.dtBias[head]
                let dt = min(max(ModelMath.softplus(shifted), c.dtMin), c.dtMax)
                g[row * H + head] = dt * m.a[head]
                for p in 0..<P { v[(row * H + head) * P + p] = dt * xs[(row * H + head) * P + p] }
            }
        }
        let scan = try Recurrence.forward(
            .simpleGLA, q: queries, k: keys, v: DeviceTensor(Tensor(shape: [B, T, H, P], scalars: v), on: device),
            g: DeviceTensor(Tensor(shape: [B, T, H], scalars: g), on: device), initialState: cache["state"]!, scale: 1)
        cache["state"] = scan.finalState
        // y + D·x, gated by silu(z), then RMS-normalized over each group of I/G channels and scaled by the weight.
        var y = try scan.o.host().scalars
        let width = I / G
        for row in 0..<(B * T) {
            for j in 0..<I {
                let (index, head) = (row * I + j, j / P)
                let gate = z[index]
                y[index] = (y[index] + m.d[head] * xs[index]) * (gate / (1 + exp(-gate)))
            }
            for group in 0..<G {
                let base = row * I + group * width
                var sum: Float = 0
                for j in 0..<width { sum += y[base + j] * y[base + j] }
                let scale = 1 / (sum / Float(width) + c.eps).squareRoot()
                for j in 0..<width { y[base + j] *= scale * m.gatedNorm[group * width + j] }
            }
        }
        return try Ops.matmul(DeviceTensor(Tensor(shape: [B, T, I], scalars: y), on: device), weight: m.outProj, bias: m.outBias)
    }
}
