import Foundation
import Linea

/// A loaded causal language model: the forward over new tokens that continues a cache.
public protocol CausalLM: AnyObject {
    /// The `model_type` it was loaded as.
    var modelType: String { get }
    /// Logit rows per token.
    var vocabularySize: Int { get }
    /// The longest context the config allows (`max_position_embeddings`), nil when unbounded.
    var maxContext: Int? { get }
    /// Where the weights live and the forward runs.
    var device: Device { get }
    /// A fresh cache for `batch` sequences of up to `capacity` tokens: each attention layer gets a KV cache of policy
    /// `kvCache` (full preallocates `capacity` rows), each recurrent layer its fixed-size state. O(layers + bound).
    func makeCache(batch: Int, capacity: Int, kvCache: KVCacheConfig) throws -> ModelCache
    /// Logits `[B, T, vocab]` f32 (`[B, 1, vocab]` with `lastOnly`) for `ids [B, T]` (i64 or i32, on `device`)
    /// continuing `cache`, which then holds them too. Prefill and decode are the same call.
    func forward(_ ids: DeviceTensor, cache: ModelCache, lastOnly: Bool) throws -> DeviceTensor
}

extension CausalLM {
    /// A fresh cache with full KV caches (every token kept). O(layers + capacity · kv width).
    public func makeCache(batch: Int, capacity: Int) throws -> ModelCache { try makeCache(batch: batch, capacity: capacity, kvCache: .full) }
}

/// What a model keeps between calls: per layer its KV cache or its recurrent and convolution states.
public final class ModelCache {
    /// Sequences and the most tokens each may hold.
    public let batch: Int, capacity: Int
    /// The KV-cache policy of its attention layers.
    public let kvCache: KVCacheConfig
    /// Tokens seen so far (the stream position of the next one).
    public internal(set) var length = 0
    /// Per layer, named tensors (`state`, `conv`).
    package var layers: [[String: DeviceTensor]]
    /// Per layer, an attention layer's KV cache (nil for a recurrent layer).
    public internal(set) var kv: [(any KVCache)?]

    /// An empty cache of `layers` layers. O(layers).
    init(batch: Int, capacity: Int, layers: Int, kvCache: KVCacheConfig = .full) {
        (self.batch, self.capacity, self.kvCache) = (batch, capacity, kvCache)
        self.layers = Array(repeating: [:], count: layers)
        kv = Array(repeating: nil, count: layers)
    }

    /// Gives layer `layer` a KV cache of the cache's policy for `kvHeads` heads of `headDim` (keys and values): on a
    /// GPU, in the dtype of a 16-bit model's `weights` (its attention then runs on the 16-bit tensor-core kernels, as
    /// transformers runs it), else f32. O(the policy's bound).
    func addKV(layer: Int, kvHeads: Int, headDim: Int, device: Device, weights: DeviceTensor) throws {
        let dtype = device != .cpu && [.bfloat16, .float16].contains(weights.dtype) ? weights.dtype : DType.float32
        kv[layer] = try kvCache.make(batch: batch, capacity: capacity, kvHeads: kvHeads, headDim: headDim, valueDim: headDim, device: device,
                                     dtype: dtype)
    }

    /// Throws unless `tokens` more fit. O(1).
    func reserve(_ tokens: Int) throws {
        guard length + tokens <= capacity else {
            throw LineaError.invalidArgument(argument: "tokens", expected: "at most \(capacity) in the cache (its capacity)",
                                             actual: "\(length) held + \(tokens) new")
        }
    }
}

/// Small tensor helpers the architectures share.
enum ModelMath {
    /// Checks `ids [B, T]` against `cache` (its batch, room for T more tokens); returns B, T and the first new
    /// position. O(1).
    static func begin(_ ids: DeviceTensor, _ cache: ModelCache) throws -> (B: Int, T: Int, start: Int) {
        try ids.expectRank(2, "ids", layout: "[B, T]")
        let (B, T) = (ids.shape[0], ids.shape[1])
        guard B == cache.batch else {
            throw LineaError.shapeMismatch(argument: "ids", expected: "[\(cache.batch), T] (the cache's batch)", actual: "\(ids.shape)")
        }
        try cache.reserve(T)
        return (B, T, cache.length)
    }

    /// Positions `start ..< start + T` for each of `batch` sequences, `[batch, T]` i32 on `device`. O(batch·T).
    static func positions(from start: Int, count: Int, batch: Int, on device: Device) throws -> DeviceTensor {
        try positions(Array(start..<(start + count)), batch: batch, on: device)
    }

    /// `row` for each of `batch` sequences, `[batch, row.count]` i32 on `device`. O(batch·T).
    static func positions(_ row: [Int], batch: Int, on device: Device) throws -> DeviceTensor {
        try DeviceTensor(integers: Array((0..<batch).map { _ in row }.joined()), shape: [batch, row.count], dtype: .int32, on: device)
    }

    /// The rotary embedding (half-split) as a KV cache applies it to `x [B, T, H, D]` at the positions it chooses. The
    /// last positions tensor is kept: a forward's layers rotate q and k at the same positions, uploaded once.
    static func rotation(theta: Float, rotaryDim: Int? = nil, scaling: RotaryScaling? = nil, on device: Device) -> KVRotation {
        final class Last { var row: [Int] = [], batch = 0, positions: DeviceTensor? }
        let last = Last()
        return { x, row in
            if last.positions == nil || last.row != row || last.batch != x.shape[0] {
                (last.row, last.batch, last.positions) = (row, x.shape[0], try positions(row, batch: x.shape[0], on: device))
            }
            return try Ops.rotary(x, positions: last.positions!, theta: theta, rotaryDim: rotaryDim, scaling: scaling)
        }
    }

    /// Logits f32 from the last hidden states `h [B, T, D]`: the final RMSNorm and the output head, on every token
    /// or (`lastOnly`) the last one only. O(B·T·D·vocab).
    static func logits(_ h: DeviceTensor, norm: DeviceTensor, eps: Float, zeroCentered: Bool = false, head: DeviceTensor,
                       lastOnly: Bool) throws -> DeviceTensor {
        let rows = lastOnly ? try h.narrowed(axis: 1, (h.shape[1] - 1)..<h.shape[1]).contiguous() : h
        let normed = try Ops.rmsNorm(rows, weight: norm, eps: eps, zeroCentered: zeroCentered, outputDType: matmulInput(head))
        return try Ops.matmul(normed, weight: head, outputDType: .float32)
    }

    /// The dtype in which a norm (or SwiGLU) may hand its f32 result to a matmul by `weight`: the weight's own when it
    /// is 16-bit on a GPU, where the product reads its input in that dtype anyway (one rounding either way, without an
    /// f32 tensor and a cast in between); nil (as computed) elsewhere. O(1).
    static func matmulInput(_ weight: DeviceTensor) -> DType? {
        weight.device != .cpu && [.bfloat16, .float16].contains(weight.dtype) ? weight.dtype : nil
    }

    /// `x · weight^T + bias` for a weight whose rows stack projections `widths` wide (in order), one packed tensor per
    /// projection: for a single row one matmul and views of it; for more, one matmul per row block of the weight, so
    /// that no column block of a wide product is copied out (a prefill's slices cost as much as its matmuls). O(rows · weight).
    static func projections(_ x: DeviceTensor, weight: DeviceTensor, bias: DeviceTensor? = nil, widths: [Int]) throws -> [DeviceTensor] {
        let ends = widths.reduce(into: [0]) { $0.append($0.last! + $1) }
        let ranges = zip(ends, ends.dropFirst()).map { $0..<$1 }
        if x.count == x.shape.last {
            let all = try Ops.matmul(x, weight: weight, bias: bias, outputDType: .float32)
            return try ranges.map { try slice(all, $0) }
        }
        return try ranges.map { try Ops.matmul(x, weight: weight.narrowed(axis: 0, $0), bias: bias?.narrowed(axis: 0, $0), outputDType: .float32) }
    }

    /// `x`'s elements `range` of the last axis, packed (splitting a fused projection). O(n).
    static func slice(_ x: DeviceTensor, _ range: Range<Int>) throws -> DeviceTensor {
        try x.narrowed(axis: x.rank - 1, range).contiguous()
    }

    /// A state-space model's cache: per layer a zero state `[batch] + state` and conv state `[batch, convChannels,
    /// convWidth - 1]`. O(layers · state).
    static func recurrentCache(batch: Int, capacity: Int, layers: Int, state: [Int], convChannels: Int, convWidth: Int,
                               device: Device) throws -> ModelCache {
        let cache = ModelCache(batch: batch, capacity: capacity, layers: layers)
        for i in 0..<layers {
            cache.layers[i]["state"] = try DeviceTensor.zeros([batch] + state, on: device)
            cache.layers[i]["conv"] = try DeviceTensor.zeros([batch, convChannels, convWidth - 1], on: device)
        }
        return cache
    }

    /// The pre-norm residual stack of the state-space models: the embedding (as f32), `h += mixer(layer, rmsNorm(h),
    /// its cache)` per layer, then the final norm and the head. O(layers · the mixer).
    static func residualStack(_ ids: DeviceTensor, cache: ModelCache, embed: DeviceTensor, norms: [DeviceTensor], eps: Float,
                              finalNorm: DeviceTensor, head: DeviceTensor, lastOnly: Bool,
                              mixer: (Int, DeviceTensor, inout [String: DeviceTensor]) throws -> DeviceTensor) throws -> DeviceTensor {
        _ = try begin(ids, cache)
        var h = try Ops.cast(Ops.embedding(ids: ids, table: embed), to: .float32)
        for (i, norm) in norms.enumerated() {
            h = try Ops.add(h, mixer(i, Ops.rmsNorm(h, weight: norm, eps: eps), &cache.layers[i]))
        }
        cache.length += ids.shape[1]
        return try logits(h, norm: finalNorm, eps: eps, head: head, lastOnly: lastOnly)
    }

    /// `mechanism` over `q, k [B,T,H,K]`, `v [B,T,HV,V]` from the layer's `cache["state"]`, returning `o [B,T,HV,V]`:
    /// one token steps the cached state in place (a decode allocates no new state), more run the whole-sequence
    /// forward and replace it. With bf16 `weights` (the mixer's) on a GPU, the whole-sequence forward reads q, k, v
    /// rounded to bf16, as the reference frameworks run such checkpoints: the tensor-core kernels, f32 state and gates.
    /// O(B·T·HV·K·V).
    static func recurrence(_ mechanism: RecurrentMechanism, q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, g: DeviceTensor? = nil,
                           beta: DeviceTensor? = nil, scale: Float? = nil, useQKL2Norm: Bool = false, weights: DeviceTensor? = nil,
                           cache: inout [String: DeviceTensor]) throws -> DeviceTensor {
        let (B, T, HV, V) = (v.shape[0], v.shape[1], v.shape[2], v.shape[3])
        guard T == 1 else {
            let bf16 = v.device != .cpu && weights?.dtype == .bfloat16
            func inputs(_ x: DeviceTensor) throws -> DeviceTensor { bf16 ? try Ops.cast(x, to: .bfloat16) : x }
            let out = try Recurrence.forward(mechanism, q: inputs(q), k: inputs(k), v: inputs(v), g: g, beta: beta, initialState: cache["state"]!,
                                             scale: scale, useQKL2Norm: useQKL2Norm)
            cache["state"] = out.finalState
            return out.o
        }
        func token(_ x: DeviceTensor?) throws -> DeviceTensor? { try x?.reshaped([B] + Array(x!.shape.dropFirst(2))) }
        let o = try Recurrence.step(mechanism, q: token(q)!, k: token(k)!, v: token(v)!, g: token(g), beta: token(beta), state: cache["state"]!,
                                    scale: scale, useQKL2Norm: useQKL2Norm)
        // The step does not check values; on the CPU its output is checked as the whole-sequence forward checks its own
        // (a NaN or infinity in the state reaches o through q). A GPU check would cost a synchronizing copy per layer.
        if o.device == .cpu { try o.host().checkFiniteOutput("o") }
        return try o.reshaped([B, 1, HV, V])
    }

    /// `-e^x` of a small weight vector (A_log to the decay rate A), as f32 on its device; computed once at load. O(n).
    static func negExp(_ x: DeviceTensor) throws -> DeviceTensor {
        try DeviceTensor(Tensor(shape: x.shape, scalars: x.host().scalars.map { -exp($0) }), on: x.device)
    }
}
