import Foundation

/// Rotates `x [B, T, H, D]` to `positions` (one per token row, the same for every sequence of the batch): a layer's
/// rotary embedding, handed to a cache so that the cache decides which positions its keys and queries take.
public typealias KVRotation = (_ x: DeviceTensor, _ positions: [Int]) throws -> DeviceTensor

/// What a token is, for caches that keep the kinds apart (StreamingVLM keeps a long window of text and a short one
/// of vision tokens).
public enum KVTokenKind: Sendable, Equatable {
    /// A text token (StreamingVLM's long window).
    case text
    /// A vision token (StreamingVLM's short window).
    case vision
}

/// One attention layer's key/value cache: it takes each call's new keys and values, attends the call's queries over
/// what it keeps plus them, and keeps what its policy says within a memory bound fixed at creation.
public protocol KVCache: AnyObject {
    /// The policy and sizes it was made with.
    var config: KVCacheConfig { get }
    /// Tokens appended so far: the original position of the next one. O(1).
    var tokensSeen: Int { get }
    /// Tokens it holds now (all of them, pruned or whole, for the caches that evict none). O(1).
    var tokensKept: Int { get }
    /// The most tokens it ever holds, whatever the input length. O(1).
    var boundTokens: Int { get }
    /// Bytes of everything it holds between calls, allocated at creation and never exceeded. O(1).
    var boundBytes: Int { get }
    /// Attention `o [B, T, Hq, Dv]` of `q [B, T, Hq, D]` over the kept tokens and the new `k [B, T, Hkv, D]`,
    /// `v [B, T, Hkv, Dv]` (q and k before any rotary embedding: `rotation` places them; nil for none), causal;
    /// then keeps the new tokens per its policy. `kinds`: one per new token (nil: all text). A one-token call runs
    /// attention's decode form (split-KV). O(B·Hq·T·(kept + T)·D) plus the policy's bookkeeping.
    func attend(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, kinds: [KVTokenKind]?, rotation: KVRotation?,
                options: AttentionOptions) throws -> DeviceTensor
    /// The original indices, ascending, of the tokens the last call's last query read for sequence `batch` and
    /// key/value head `head` (what tests compare against exact attention). O(kept).
    func attendedTokens(batch: Int, head: Int) -> [Int]
    /// The key channels (ascending) the last call's last query read of token `token` for sequence `batch` and head
    /// `head`; nil when it read them all. O(D).
    func attendedChannels(batch: Int, head: Int, token: Int) -> [Int]?
}

extension KVCache {
    /// Every channel of every token (the caches that prune none). O(1).
    public func attendedChannels(batch: Int, head: Int, token: Int) -> [Int]? { nil }

    /// `attend` with every token text, no rotary embedding and causal default options. O(attend).
    public func attend(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, kinds: [KVTokenKind]? = nil, rotation: KVRotation? = nil,
                       options: AttentionOptions = AttentionOptions()) throws -> DeviceTensor {
        try attend(q: q, k: k, v: v, kinds: kinds, rotation: rotation, options: options)
    }
}

/// A KV-cache policy and its sizes, checked; `make` builds one layer's cache.
public enum KVCacheConfig: Sendable, Equatable, CustomStringConvertible {
    /// Every token, up to the capacity given to `make` (preallocated): exact attention.
    case full
    /// StreamingLLM: the first `sinks` tokens and the last `window` (a ring buffer).
    case sinkWindow(sinks: Int, window: Int)
    /// StreamingVLM: the first `sinks` tokens, the last `textWindow` text tokens and the last `visionWindow` vision
    /// tokens, at contiguous positions.
    case streamingVLM(sinks: Int, textWindow: Int, visionWindow: Int)
    /// ThinK: every token, keys older than the last `recent` keep only the key channels the first call's last
    /// `observation` queries score highest (`pruneRatio` of the channels dropped).
    case think(pruneRatio: Double, recent: Int, observation: Int)
    /// Quest-style pages at decode: every token kept; a decode step reads the `sinks` first tokens, the `pages`
    /// pages of `pageSize` tokens with the largest upper bound on `q·k`, and the last `window` tokens.
    case topK(pages: Int, pageSize: Int, sinks: Int, window: Int)

    /// The policy names, as the command line spells them.
    public static let names = ["full", "sink-window", "streaming-vlm", "think", "topk"]

    /// The policy called `name` with its sizes, each defaulted when nil (sinks 4; window 4096 for sink-window, 2048
    /// text tokens for streaming-vlm with 1024 vision tokens, 32 recent keys for think, 64 recent tokens for topk;
    /// prune ratio 0.5; 32 pages of 16 tokens), checked (`validate`). Throws naming an unknown name. O(1).
    public init(name: String, sinks: Int? = nil, window: Int? = nil, visionWindow: Int? = nil, pruneRatio: Double? = nil,
                pages: Int? = nil, pageSize: Int? = nil) throws {
        switch name {
        case "full": self = .full
        case "sink-window": self = .sinkWindow(sinks: sinks ?? 4, window: window ?? 4096)
        case "streaming-vlm": self = .streamingVLM(sinks: sinks ?? 4, textWindow: window ?? 2048, visionWindow: visionWindow ?? 1024)
        case "think": self = .think(pruneRatio: pruneRatio ?? 0.5, recent: window ?? 32, observation: 32)
        case "topk": self = .topK(pages: pages ?? 32, pageSize: pageSize ?? 16, sinks: sinks ?? 4, window: window ?? 64)
        default:
            throw LineaError.invalidArgument(argument: "kv cache", expected: "one of \(Self.names.joined(separator: ", "))", actual: "'\(name)'")
        }
        try validate()
    }

    /// The name `init(name:)` reads.
    public var name: String {
        switch self {
        case .full: return "full"
        case .sinkWindow: return "sink-window"
        case .streamingVLM: return "streaming-vlm"
        case .think: return "think"
        case .topK: return "topk"
        }
    }

    /// The name and sizes, as the command line prints them.
    public var description: String {
        switch self {
        case .full: return "full"
        case let .sinkWindow(s, w): return "sink-window (sinks \(s), window \(w))"
        case let .streamingVLM(s, t, v): return "streaming-vlm (sinks \(s), text window \(t), vision window \(v))"
        case let .think(r, recent, o): return "think (prune ratio \(r), recent \(recent), observation \(o))"
        case let .topK(p, size, s, w): return "topk (\(p) pages of \(size), sinks \(s), window \(w))"
        }
    }

    /// Throws naming the size out of range: negative sinks, a window below 1 or below the sinks (the sinks are the
    /// handful of first tokens; a window smaller than them keeps less recent context than start), a prune ratio
    /// outside [0, 1), pages or page size below 1. O(1).
    public func validate() throws {
        func atLeast(_ name: String, _ value: Int, _ low: Int) throws {
            guard value >= low else { throw LineaError.invalidArgument(argument: name, expected: ">= \(low)", actual: "\(value)") }
        }
        func windowCoversSinks(_ name: String, _ window: Int, _ sinks: Int) throws {
            try atLeast("sinks", sinks, 0)
            try atLeast(name, window, 1)
            guard window >= sinks else {
                throw LineaError.invalidArgument(argument: name, expected: ">= sinks (\(sinks))", actual: "\(window)")
            }
        }
        switch self {
        case .full: break
        case let .sinkWindow(s, w): try windowCoversSinks("window", w, s)
        case let .streamingVLM(s, t, v):
            try windowCoversSinks("window", t, s)
            try atLeast("vision window", v, 1)
        case let .think(r, recent, o):
            guard r >= 0 && r < 1 else { throw LineaError.invalidArgument(argument: "prune ratio", expected: "a number in [0, 1)", actual: "\(r)") }
            try atLeast("window", recent, 0)
            try atLeast("observation", o, 1)
        case let .topK(p, size, s, w):
            try atLeast("pages", p, 1)
            try atLeast("page size", size, 1)
            try windowCoversSinks("window", w, s)
        }
    }

    /// The largest position a query or key takes when the cache places tokens at their slot in the cache
    /// (sink-window, streaming-vlm: bounded, so a model's `max_position_embeddings` bounds the cache, not the
    /// stream); nil when tokens keep their original positions. O(1).
    public var positionSpan: Int? {
        switch self {
        case let .sinkWindow(s, w): return s + w
        case let .streamingVLM(s, t, v): return s + t + v
        default: return nil
        }
    }

    /// The longest piece a prefill should pass in one call so that each of its queries sees at most the cache's
    /// window (longer pieces attend over themselves whole); nil: any. O(1).
    public var longestPiece: Int? {
        switch self {
        case let .sinkWindow(_, w): return w
        case let .streamingVLM(_, t, v): return min(t, v)
        default: return nil
        }
    }

    /// One layer's cache for `batch` sequences with `kvHeads` heads of keys `headDim` wide and values `valueDim`
    /// wide on `device`; `capacity` bounds the caches that evict nothing (full, think, topk). Think and topk
    /// choose on the host and run on the CPU only. The full cache holds `dtype` (f32, bf16 or f16: a 16-bit model's
    /// attention then runs in its dtype, as its reference framework runs it); the others hold f32. O(bound) memory,
    /// allocated now.
    public func make(batch: Int, capacity: Int, kvHeads: Int, headDim: Int, valueDim: Int, device: Device = .cpu,
                     dtype: DType = .float32) throws -> any KVCache {
        try validate()
        try DeviceTensor.expectOutputDType(dtype, argument: "dtype")
        let shape = KVShape(B: batch, Hkv: kvHeads, D: headDim, Dv: valueDim, device: device, dtype: self == .full ? dtype : .float32)
        try shape.validate(capacity: capacity)
        switch self {
        case .full: return try FullKVCache(shape, capacity: capacity)
        case let .sinkWindow(s, w): return try SinkWindowKVCache(shape, sinks: s, window: w)
        case let .streamingVLM(s, t, v): return try StreamingVLMKVCache(shape, sinks: s, textWindow: t, visionWindow: v)
        case let .think(r, recent, o): return try ThinKKVCache(shape, capacity: capacity, pruneRatio: r, recent: recent, observation: o)
        case let .topK(p, size, s, w): return try TopKPagesKVCache(shape, capacity: capacity, pages: p, pageSize: size, sinks: s, window: w)
        }
    }
}

/// The sizes every cache shares: `B` sequences, `Hkv` key/value heads, key width `D`, value width `Dv`, the device.
struct KVShape {
    let B: Int, Hkv: Int, D: Int, Dv: Int, device: Device
    /// The element type of the keys and values held.
    var dtype = DType.float32

    /// Throws naming a size below 1. O(1).
    func validate(capacity: Int) throws {
        for (name, value) in [("batch", B), ("kv heads", Hkv), ("head dim", D), ("value dim", Dv), ("capacity", capacity)] where value < 1 {
            throw LineaError.invalidArgument(argument: name, expected: ">= 1", actual: "\(value)")
        }
    }

    /// Bytes of `tokens` rows of keys `keyWidth` wide and values. O(1).
    func bytes(tokens: Int, keyWidth: Int? = nil) -> Int { dtype.byteCount * B * tokens * Hkv * ((keyWidth ?? D) + Dv) }

    /// The stream positions `held..<held + T` of a call's tokens; throws unless they fit in a cache of `capacity`
    /// tokens (`cache` names it). O(T).
    func positions(held: Int, adding T: Int, capacity: Int, cache: String) throws -> [Int] {
        guard held + T <= capacity else {
            throw LineaError.invalidArgument(argument: "tokens", expected: "at most \(capacity) in the \(cache) KV cache (its capacity)",
                                             actual: "\(held) held + \(T) new")
        }
        return Array(held..<(held + T))
    }

    /// Checks one call's `q [B, T, Hq, D]`, `k [B, T, Hkv, D]`, `v [B, T, Hkv, Dv]` (f32, on the cache's device), its
    /// kinds (one per token) and options (causal; a sliding window only where `window` allows); returns T. O(1).
    func check(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, kinds: [KVTokenKind]?, options: AttentionOptions,
               allowsWindow: Bool = false) throws -> Int {
        try q.expectRank(4, "q", layout: "[B, T, Hq, D]")
        let T = q.shape[1]
        try k.expectShape([B, T, Hkv, D], "k")
        try v.expectShape([B, T, Hkv, Dv], "v")
        guard q.shape[0] == B, q.shape[3] == D, q.shape[2] % Hkv == 0 else {
            throw LineaError.shapeMismatch(argument: "q", expected: "[\(B), T, a multiple of \(Hkv), \(D)]", actual: "\(q.shape)")
        }
        guard T >= 1 else { throw LineaError.shapeMismatch(argument: "q", expected: "at least one token (T >= 1)", actual: "\(q.shape)") }
        for (name, x) in [("q", q), ("k", k), ("v", v)] {
            try x.expectDType([.float32], name)
            guard x.device == device else {
                throw LineaError.invalidArgument(argument: name, expected: "a tensor on \(device) (the cache's device)", actual: "\(x.device)")
            }
        }
        if let kinds, kinds.count != T {
            throw LineaError.invalidArgument(argument: "kinds", expected: "\(T) (one per new token)", actual: "\(kinds.count)")
        }
        guard options.causal else {
            throw LineaError.invalidArgument(argument: "causal", expected: "true (a KV cache serves causal decoding)", actual: "false")
        }
        if let w = options.window, !allowsWindow {
            throw LineaError.invalidArgument(argument: "window", expected: "none with this KV cache (a sliding-window layer already bounds what it reads: use the full cache)",
                                             actual: "\(w)")
        }
        return T
    }
}

/// Helpers the caches share.
enum KVMath {
    /// Exact attention of `q` over `k`, `v` on their device: attention's decode form for one query (on the CPU the
    /// in-place `decodeOne`; elsewhere split-KV), flash for more. O(B·Hq·T·S·D).
    static func attention(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, options: AttentionOptions,
                          outputDType: DType = .float32) throws -> (o: DeviceTensor, lse: DeviceTensor) {
        let form: AttentionForm? = q.device != .cpu && q.shape[1] == 1 && options.window == nil ? .splitKV(partitions: nil) : nil
        return try Attention.forward(q: q, k: k, v: v, options: options, form: form, outputDType: outputDType)
    }

    /// Rows `0..<rows` of a new uninitialized `[B, allocated, heads, width]` tensor: the caches size their per-call
    /// buffers by their bound, not by what a call reads, so that the host buffer cache (which reuses exact sizes)
    /// serves every call from one buffer instead of keeping one per size while a cache fills. O(1).
    static func scratch(_ B: Int, rows: Int, allocated: Int, heads: Int, width: Int, on device: Device) throws -> DeviceTensor {
        try DeviceTensor.uninitialized([B, max(rows, allocated), heads, width], on: device).narrowed(axis: 1, 0..<rows)
    }

    /// Copies rows `rows` (axis 1) of `source` into `destination` from row `at` on. O(rows · row bytes).
    static func copyRows(_ source: DeviceTensor, _ rows: Range<Int>, into destination: DeviceTensor, at: Int) throws {
        guard !rows.isEmpty else { return }
        try destination.narrowed(axis: 1, at..<(at + rows.count)).copy(from: source.narrowed(axis: 1, rows))
    }

    /// Copies `source` rows into `destination` rows pair by pair, as few copies as the pairs' runs allow (a run: both
    /// rows advancing by one). O(pairs · row bytes).
    static func copyRows(_ source: DeviceTensor, into destination: DeviceTensor, pairs: [(from: Int, to: Int)]) throws {
        var i = 0
        while i < pairs.count {
            var j = i + 1
            while j < pairs.count, pairs[j].from == pairs[j - 1].from + 1, pairs[j].to == pairs[j - 1].to + 1 { j += 1 }
            try copyRows(source, pairs[i].from..<(pairs[j - 1].from + 1), into: destination, at: pairs[i].to)
            i = j
        }
    }

    /// `x` rotated to `positions` when there is a rotation, else `x`. O(x).
    static func rotate(_ x: DeviceTensor, _ rotation: KVRotation?, _ positions: [Int]) throws -> DeviceTensor {
        guard let rotation else { return x }
        let out = try rotation(x, positions)
        try out.expectShape(x.shape, "rotation output")
        return out
    }

    /// The softmax over two disjoint key sets from their partial attentions (split-KV's merge): `lse = log(e^a +
    /// e^b)`, `o = e^(a - lse)·oA + e^(b - lse)·oB`, for CPU tensors `o [B, T, Hq, Dv]`, `lse [B, T, Hq]`. O(o).
    static func merge(_ a: (o: DeviceTensor, lse: DeviceTensor), _ b: (o: DeviceTensor, lse: DeviceTensor)) throws -> DeviceTensor {
        let out = try DeviceTensor.uninitialized(a.o.shape)
        let (oa, ob, la, lb, o) = (a.o.floats, b.o.floats, a.lse.floats, b.lse.floats, out.mutableFloats)
        let width = a.o.shape[3]
        for row in 0..<la.count {
            let top = max(la[row], lb[row])
            let (wa, wb) = top == -.infinity ? (Float(0), Float(0)) : (exp(la[row] - top), exp(lb[row] - top))
            let total = wa + wb
            for e in 0..<width {
                o[row * width + e] = total > 0 ? (wa * oa[row * width + e] + wb * ob[row * width + e]) / total : 0
            }
        }
        return out
    }
}
