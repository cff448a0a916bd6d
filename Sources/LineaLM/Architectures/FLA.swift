import Foundation
import Linea

/// The token mixer of one fla block: what sits between `attn_norm` and the residual add.
protocol FLAMixer {
    /// This layer's cache entries for `batch` sequences of up to `capacity` tokens.
    func makeCache(batch: Int, capacity: Int, device: Device) throws -> [String: DeviceTensor]
    /// The mixer on `x [B, T, hidden]` (f32) at `positions [B, T]` (the first is `start`), continuing `cache`.
    func forward(_ x: DeviceTensor, positions: DeviceTensor, start: Int, cache: inout [String: DeviceTensor]) throws -> DeviceTensor
}

/// flash-linear-attention's causal language models (`gla`, `retnet`, `linear_attn`, `delta_net`, `gated_deltanet`,
/// `transformer`): embeddings, blocks of RMSNorm, a mixer (the type's own, or softmax attention at the layers fla's
/// hybrid `attn` spec names), RMSNorm and fla's GatedMLP, then the final RMSNorm and the head.
public final class FLAModel: CausalLM {
    /// A block's token mixer: softmax attention (its cache a KV cache) or the type's own recurrent mixer.
    enum Mixer {
        case attention(FLAAttention)
        case recurrent(any FLAMixer)
    }

    /// One block's weights.
    struct Block {
        let attnNorm: DeviceTensor, mlpNorm: DeviceTensor, mixer: Mixer, mlp: GatedMLP
    }

    public let modelType: String
    public var vocabularySize: Int { config.vocab }
    public var maxContext: Int? { nil }
    public let device: Device
    let config: FLAConfig
    let embed: DeviceTensor, norm: DeviceTensor, head: DeviceTensor
    let blocks: [Block]

    /// Reads the block config, takes the shared weights under `model.` and builds each layer's mixer: fla's
    /// softmax attention where the hybrid spec says (every layer with `everyLayer`), else `mixer(layer, prefix)` (its
    /// weights under `prefix`, `model.layers.{i}.attn.`). Throws naming a missing, misshapen or left-over tensor. O(weights).
    init(config fields: ConfigFields, weights w: Weights, modelType: String, hiddenRatio: Double, everyLayer: FLAAttention.Spec? = nil,
         mixer: ((_ layer: Int, _ prefix: String) throws -> any FLAMixer)? = nil) throws {
        let c = try FLAConfig(fields, hiddenRatio: hiddenRatio)
        (config, self.modelType, device) = (c, modelType, w.device)
        embed = try w.take("model.embeddings.weight", [c.vocab, c.hidden])
        norm = try w.take("model.norm.weight", [c.hidden])
        head = try w.head(tied: c.tied, embedding: embed)
        blocks = try (0..<c.layers).map { i in
            let p = "model.layers.\(i)."
            let m: Mixer = if let spec = c.attention[i] ?? everyLayer {
                .attention(try FLAAttention(spec, hidden: c.hidden, weights: w, prefix: p + "attn."))
            } else if let mixer {
                .recurrent(try mixer(i, p + "attn."))
            } else {
                throw LineaError.invalidArgument(argument: "\(modelType): layer \(i)", expected: "a mixer", actual: "none")
            }
            return Block(attnNorm: try w.take(p + "attn_norm.weight", [c.hidden]), mlpNorm: try w.take(p + "mlp_norm.weight", [c.hidden]),
                         mixer: m, mlp: try GatedMLP(w, p + "mlp.", hidden: c.hidden, width: c.intermediate))
        }
        try w.finish()
    }

    public func makeCache(batch: Int, capacity: Int, kvCache: KVCacheConfig) throws -> ModelCache {
        let cache = ModelCache(batch: batch, capacity: capacity, layers: config.layers, kvCache: kvCache)
        for (i, block) in blocks.enumerated() {
            switch block.mixer {
            case .attention(let a): try cache.addKV(layer: i, kvHeads: a.spec.kvHeads, headDim: a.spec.headDim, device: device, weights: embed)
            case .recurrent(let m): cache.layers[i] = try m.makeCache(batch: batch, capacity: capacity, device: device)
            }
        }
        return cache
    }

    public func forward(_ ids: DeviceTensor, cache: ModelCache, lastOnly: Bool) throws -> DeviceTensor {
        let (B, T, start) = try ModelMath.begin(ids, cache)
        let positions = try ModelMath.positions(from: start, count: T, batch: B, on: device)
        var h = try Ops.cast(Ops.embedding(ids: ids, table: embed), to: .float32)
        for (i, block) in blocks.enumerated() {
            let x = try Ops.rmsNorm(h, weight: block.attnNorm, eps: config.eps)
            let mixed = switch block.mixer {
            case .attention(let a): try a.forward(x, kv: cache.kv[i]!)
            case .recurrent(let m): try m.forward(x, positions: positions, start: start, cache: &cache.layers[i])
            }
            h = try Ops.add(h, mixed)
            h = try Ops.add(h, block.mlp(Ops.rmsNorm(h, weight: block.mlpNorm, eps: config.eps)))
        }
        cache.length += T
        return try ModelMath.logits(h, norm: norm, eps: config.eps, head: head, lastOnly: lastOnly)
    }
}

/// The config fields every fla model type shares (`fla/models/<type>/configuration_<type>.py`).
struct FLAConfig {
    let vocab: Int, hidden: Int, layers: Int, eps: Float, tied: Bool, intermediate: Int
    /// Softmax-attention layers of a hybrid model, by layer index.
    let attention: [Int: FLAAttention.Spec]

    /// Reads the shared fields; `hiddenRatio` is the type's default for the MLP width when `intermediate_size` is
    /// null. O(layers).
    init(_ c: ConfigFields, hiddenRatio: Double) throws {
        vocab = try c.int("vocab_size")
        hidden = try c.int("hidden_size")
        layers = try c.int("num_hidden_layers")
        eps = Float(try c.double("norm_eps", default: 1e-6))
        tied = try c.bool("tie_word_embeddings", default: false)
        let ratio = c.has("hidden_ratio") ? try c.double("hidden_ratio") : hiddenRatio
        // fla's GatedMLP: 2/3 of hidden · ratio, rounded up to a multiple of 256.
        intermediate = try c.optionalInt("intermediate_size") ?? 256 * ((Int(Double(hidden) * ratio * 2 / 3) + 255) / 256)
        let act = try c.string("hidden_act", default: "swish")
        guard act == "swish" || act == "silu" else { throw c.unsupported("hidden_act", "swish") }
        if c.has("attnres_block_size") { throw c.unsupported("attnres_block_size", "null (attention residuals change the block)") }
        // Kernel choices, training-only switches and the rotary table size: none changes the forward.
        c.ignore(["attn_mode", "fuse_swiglu", "fuse_cross_entropy", "fuse_linear_cross_entropy", "use_l2warp", "max_position_embeddings",
                  "fuse_norm", "elementwise_affine"])
        for (name, n) in [("vocab_size", vocab), ("hidden_size", hidden), ("num_hidden_layers", layers), ("intermediate_size", intermediate)] where n < 1 {
            throw LineaError.invalidArgument(argument: "\(c.source): \(name)", expected: ">= 1", actual: "\(n)")
        }
        attention = try FLAConfig.hybrid(c, hidden: hidden, layers: layers)
    }

    /// fla's `attn` spec (`parse_attention_config`): null, one object or a list of objects, each naming `layers`
    /// that run softmax attention with its own heads, kv heads, qkv bias, window and rope theta. O(layers).
    static func hybrid(_ c: ConfigFields, hidden: Int, layers: Int) throws -> [Int: FLAAttention.Spec] {
        guard c.has("attn") else { return [:] }
        let raw = c.values["attn"]
        let objects: [[String: Any]]
        if let one = raw as? [String: Any] { objects = [one] } else if let list = raw as? [[String: Any]] { objects = list } else {
            throw c.unsupported("attn", "null, an object or a list of objects")
        }
        var specs: [Int: FLAAttention.Spec] = [:]
        for (n, object) in objects.enumerated() {
            let s = ConfigFields(object, source: "\(c.source) attn[\(n)]")
            let at = try s.ints("layers") ?? []
            let spec = try FLAAttention.Spec(s, hidden: hidden, qkNorm: false)
            if let unknown = s.unknownKeys.first { throw s.unsupported(unknown, "the fields of an fla attn spec") }
            for i in at {
                guard (0..<layers).contains(i) else {
                    throw LineaError.invalidArgument(argument: "\(s.source): layers", expected: "indices in 0..<\(layers)", actual: "\(i)")
                }
                specs[i] = spec
            }
        }
        return specs
    }
}

/// fla's softmax attention (`fla/layers/attn.py`): q, k, v projections (biases with `qkv_bias`), optional per-head
/// RMSNorm of q and k (eps 1e-5), NeoX rotary over the whole head, causal attention with GQA and an optional
/// window, the output projection, over the layer's KV cache (the full one applies the window by the mask).
struct FLAAttention {
    /// The shape of one attention layer.
    struct Spec {
        let heads: Int, kvHeads: Int, headDim: Int, qkvBias: Bool, window: Int?, theta: Float, qkNorm: Bool

        /// Reads `num_heads`, `num_kv_heads`, `qkv_bias`, `window_size`, `rope_theta` (and `qk_norm` when
        /// `qkNorm` is nil: the transformer's top level). O(1).
        init(_ c: ConfigFields, hidden: Int, qkNorm: Bool?) throws {
            heads = try c.int("num_heads")
            kvHeads = try c.optionalInt("num_kv_heads") ?? heads
            qkvBias = try c.bool("qkv_bias", default: false)
            window = try c.optionalInt("window_size")
            theta = Float(try c.double("rope_theta", default: 10_000))
            self.qkNorm = try qkNorm ?? c.bool("qk_norm", default: false)
            guard heads >= 1, hidden % heads == 0 else {
                throw LineaError.invalidArgument(argument: "\(c.source): num_heads", expected: "a divisor of hidden_size (\(hidden))", actual: "\(heads)")
            }
            headDim = hidden / heads
            guard kvHeads >= 1, heads % kvHeads == 0 else {
                throw LineaError.invalidArgument(argument: "\(c.source): num_kv_heads", expected: "a divisor of num_heads (\(heads))", actual: "\(kvHeads)")
            }
            if let window, window < 1 { throw c.unsupported("window_size", "null or >= 1") }
            guard theta > 0 else { throw c.unsupported("rope_theta", "> 0") }
        }
    }

    let spec: Spec
    let q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, o: DeviceTensor
    let qBias: DeviceTensor?, kBias: DeviceTensor?, vBias: DeviceTensor?, qNorm: DeviceTensor?, kNorm: DeviceTensor?

    /// Takes the layer's weights under `p`. O(weights).
    init(_ s: Spec, hidden: Int, weights w: Weights, prefix p: String) throws {
        spec = s
        let (qWidth, kvWidth) = (s.heads * s.headDim, s.kvHeads * s.headDim)
        q = try w.take(p + "q_proj.weight", [qWidth, hidden])
        k = try w.take(p + "k_proj.weight", [kvWidth, hidden])
        v = try w.take(p + "v_proj.weight", [kvWidth, hidden])
        o = try w.take(p + "o_proj.weight", [hidden, qWidth])
        qBias = s.qkvBias ? try w.take(p + "q_proj.bias", [qWidth]) : nil
        kBias = s.qkvBias ? try w.take(p + "k_proj.bias", [kvWidth]) : nil
        vBias = s.qkvBias ? try w.take(p + "v_proj.bias", [kvWidth]) : nil
        qNorm = s.qkNorm ? try w.take(p + "q_norm.weight", [s.headDim]) : nil
        kNorm = s.qkNorm ? try w.take(p + "k_norm.weight", [s.headDim]) : nil
    }

    /// The layer on `x [B, T, hidden]` continuing its KV cache `kv`. O(B·T·(hidden² + kept·hidden)).
    func forward(_ x: DeviceTensor, kv: any KVCache) throws -> DeviceTensor {
        let s = spec
        let (B, T) = (x.shape[0], x.shape[1])
        var q = try Ops.matmul(x, weight: q, bias: qBias).reshaped([B, T, s.heads, s.headDim])
        var k = try Ops.matmul(x, weight: k, bias: kBias).reshaped([B, T, s.kvHeads, s.headDim])
        let v = try Ops.matmul(x, weight: v, bias: vBias).reshaped([B, T, s.kvHeads, s.headDim])
        if let qNorm, let kNorm {
            // fla's attention builds these norms without its config's norm_eps: RMSNorm's default 1e-5.
            (q, k) = (try Ops.rmsNorm(q, weight: qNorm, eps: 1e-5), try Ops.rmsNorm(k, weight: kNorm, eps: 1e-5))
        }
        let out = try kv.attend(q: q, k: k, v: v, kinds: nil, rotation: ModelMath.rotation(theta: s.theta, on: x.device),
                                options: AttentionOptions(causal: true, window: s.window))
        return try Ops.matmul(out.reshaped([B, T, s.heads * s.headDim]), weight: o)
    }
}

/// fla's ShortConvolution: a depthwise causal conv1d (weight `[C, 1, W]`, no bias) with optional SiLU, its last
/// W-1 inputs carried in the cache under `name`.
struct ShortConv {
    let weight: DeviceTensor, name: String, channels: Int, silu: Bool

    /// Takes `<name>.weight` under `p` (`q_conv1d`, ...). O(weights).
    init(_ w: Weights, _ p: String, _ name: String, channels: Int, width: Int, silu: Bool) throws {
        weight = try w.take(p + name + ".weight", [channels, 1, width]).reshaped([channels, width])
        (self.name, self.channels, self.silu) = (name, channels, silu)
    }

    /// The zero state for `batch` sequences. O(batch · channels · width).
    func state(batch: Int, device: Device) throws -> DeviceTensor {
        try DeviceTensor.zeros([batch, channels, weight.shape[1] - 1], on: device)
    }

    func callAsFunction(_ x: DeviceTensor, _ cache: [String: DeviceTensor]) throws -> DeviceTensor {
        try Ops.causalConv1d(x, weight: weight, state: cache[name]!, silu: silu)
    }
}

/// Helpers the fla mixers share.
package enum FLAMath {
    /// `x [B, T, H, D]` with each head repeated `group` times in a row (head h reads head h / group), as fla repeats
    /// key and value heads to the query heads. O(n · group).
    static func repeatHeads(_ x: DeviceTensor, _ group: Int) throws -> DeviceTensor {
        guard group > 1 else { return x }
        let (B, T, H, D) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let out = try DeviceTensor.zeros([B, T, H, group, D], dtype: x.dtype, on: x.device)
        let source = try x.reshaped([B, T, H, 1, D])
        for j in 0..<group { try out.narrowed(axis: 3, j..<(j + 1)).copy(from: source) }
        return try out.reshaped([B, T, H * group, D])
    }

    /// A recurrent mixer's cache: the zero state `state` (batch first) and each short convolution's state. O(state).
    static func recurrentCache(state: [Int], convs: [ShortConv], device: Device) throws -> [String: DeviceTensor] {
        var cache = ["state": try DeviceTensor.zeros(state, on: device)]
        for conv in convs { cache[conv.name] = try conv.state(batch: state[0], device: device) }
        return cache
    }

    /// A one-element f32 tensor on `device` (a scale to broadcast). O(1).
    static func scalar(_ value: Float, on device: Device) throws -> DeviceTensor {
        try DeviceTensor(Tensor(shape: [1], scalars: [value]), on: device)
    }

    /// The short-conv width, checked: Linea's conv1d takes 2 to 4 taps. O(1).
    static func convWidth(_ c: ConfigFields, _ key: String = "conv_size") throws -> Int {
        let width = try c.int(key, default: 4)
        guard (2...4).contains(width) else { throw c.unsupported(key, "2, 3 or 4") }
        return width
    }

    /// A positive size from a width times an `expand_*` ratio, failing unless it divides into `heads` heads. O(1).
    static func headDim(_ c: ConfigFields, total: Double, heads: Int, key: String) throws -> Int {
        let width = Int(total)
        guard heads >= 1, width >= heads, width % heads == 0 else {
            throw LineaError.invalidArgument(argument: "\(c.source): \(key)", expected: "a width divisible by num_heads (\(heads))", actual: "\(total)")
        }
        return width / heads
    }
}
