import Foundation

/// StreamingLLM's cache (Xiao et al. 2023, mit-han-lab/streaming-llm): the first `sinks` tokens (attention sinks)
/// and the last `window` tokens in a ring buffer; memory `sinks + window` rows whatever the stream's length.
///
/// Positions: StreamingLLM places every kept token at its slot in the cache (sinks at 0..<S, the window after them,
/// the query at the last slot) rather than at its position in the stream. Rotary scores depend only on the
/// difference of two positions, and a window token's distance to the query is the same in both placements; only the
/// sinks come closer, by the number of tokens evicted. So keys are stored rotated at their stream positions (once,
/// on arrival), the query is rotated at its stream position, and the sinks alone are re-rotated by the evicted count
/// (O(sinks·D) a step instead of re-rotating the whole window as the reference and Hugging Face's SinkCache do); the
/// scores are StreamingLLM's, as the tests check against keys rotated at cache slots in Float64.
final class SinkWindowKVCache: KVCache {
    let config: KVCacheConfig
    let shape: KVShape, sinks: Int, window: Int
    /// `[B, sinks + window, Hkv, D]`: slots `0..<sinks` hold the sinks as attention reads them (rotated `shift` past
    /// their positions), slots `sinks...` the ring of window keys, token `i` at `sinks + (i - sinks) % window`.
    let keys: DeviceTensor
    /// `[B, sinks + window, Hkv, Dv]`, slots as `keys`.
    let values: DeviceTensor
    /// `[B, sinks, Hkv, D]`: the sinks rotated at their own positions, the source of every re-rotation (no rounding
    /// accumulates).
    let sinkKeys: DeviceTensor
    private(set) var tokensSeen = 0
    /// How far past their positions the keys in the sink slots are rotated.
    private var shift = 0
    /// What the last call's last query read: the first `lastSinks` tokens and the tokens `lastRun`.
    private var lastSinks = 0, lastRun = 0..<0

    var tokensKept: Int { min(tokensSeen, sinks + window) }
    var boundTokens: Int { sinks + window }
    var boundBytes: Int { shape.bytes(tokens: sinks + window) + 4 * shape.B * sinks * shape.Hkv * shape.D }

    /// Allocates the sink and window rows. O(sinks + window).
    init(_ shape: KVShape, sinks: Int, window: Int) throws {
        (self.shape, self.sinks, self.window) = (shape, sinks, window)
        config = .sinkWindow(sinks: sinks, window: window)
        keys = try DeviceTensor.zeros([shape.B, sinks + window, shape.Hkv, shape.D], on: shape.device)
        values = try DeviceTensor.zeros([shape.B, sinks + window, shape.Hkv, shape.Dv], on: shape.device)
        sinkKeys = try DeviceTensor.zeros([shape.B, sinks, shape.Hkv, shape.D], on: shape.device)
    }

    /// The slot of token `i` (a sink, or a window token in the ring). O(1).
    func slot(_ i: Int) -> Int { i < sinks ? i : sinks + (i - sinks) % window }

    /// A decode step writes its token into the ring first and attends over the cache in place (one query sees every
    /// key, so the ring's order does not matter); a longer call gathers, in order, the sinks, the window tokens that
    /// survive it (StreamingLLM's `evict_for_space`: the last `window - T`) and its own tokens, attends causally,
    /// then writes its tokens.
    func attend(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, kinds: [KVTokenKind]?, rotation: KVRotation?,
                options: AttentionOptions) throws -> DeviceTensor {
        let T = try shape.check(q: q, k: k, v: v, kinds: kinds, options: options)
        let n = tokensSeen, positions = Array(n..<(n + T))
        let (qr, kr) = (try KVMath.rotate(q, rotation, positions), try KVMath.rotate(k, rotation, positions))
        if T == 1 {
            try store(kr, v)
            let kept = tokensKept
            try placeSinks(shift: max(0, n + 1 - kept), rotation)
            (lastSinks, lastRun) = (min(n + 1, sinks), max(sinks, n + 1 - window)..<max(sinks, n + 1))
            return try KVMath.attention(q: qr, k: keys.narrowed(axis: 1, 0..<kept), v: values.narrowed(axis: 1, 0..<kept), options: options).o
        }
        let s = min(n, sinks)
        let m = n > sinks ? max(0, min(n - sinks, window - T)) : 0  // window tokens that survive this call
        let first = n - m, length = s + m + T
        try placeSinks(shift: first - s, rotation)
        let gathered = (k: try KVMath.scratch(shape.B, rows: length, allocated: boundTokens + T, heads: shape.Hkv, width: shape.D, on: shape.device),
                        v: try KVMath.scratch(shape.B, rows: length, allocated: boundTokens + T, heads: shape.Hkv, width: shape.Dv, on: shape.device))
        let pairs = (0..<s).map { (from: $0, to: $0) } + (first..<n).map { (from: slot($0), to: s + $0 - first) }
        try KVMath.copyRows(keys, into: gathered.k, pairs: pairs)
        try KVMath.copyRows(values, into: gathered.v, pairs: pairs)
        try KVMath.copyRows(kr, 0..<T, into: gathered.k, at: s + m)
        try KVMath.copyRows(v, 0..<T, into: gathered.v, at: s + m)
        let o = try KVMath.attention(q: qr, k: gathered.k, v: gathered.v, options: options).o
        try store(kr, v)
        (lastSinks, lastRun) = (s, first..<(n + T))
        return o
    }

    func attendedTokens(batch: Int, head: Int) -> [Int] { Array(0..<lastSinks) + Array(lastRun) }

    /// Writes the new tokens (keys already rotated): the first `sinks` of the stream to the sink slots (and
    /// `sinkKeys`), the last `window` of the others into the ring. O(T·row).
    private func store(_ k: DeviceTensor, _ v: DeviceTensor) throws {
        let n = tokensSeen, T = k.shape[1]
        let sinkCount = min(T, max(0, sinks - n))
        // While sinks arrive nothing has been evicted: the shift is 0 and the slots hold the sinks as they are.
        try KVMath.copyRows(k, 0..<sinkCount, into: sinkKeys, at: n)
        let pairs = (0..<sinkCount).map { (from: $0, to: n + $0) } + (max(sinkCount, T - window)..<T).map { (from: $0, to: slot(n + $0)) }
        try KVMath.copyRows(k, into: keys, pairs: pairs)
        try KVMath.copyRows(v, into: values, pairs: pairs)
        tokensSeen = n + T
    }

    /// Rotates the held sinks `shift` positions past their own into the sink slots (a no-op without rotation or when
    /// already so): a sink then sits at its cache slot relative to a query rotated at its stream position. O(sinks·D).
    private func placeSinks(shift: Int, _ rotation: KVRotation?) throws {
        let count = min(tokensSeen, sinks)
        guard let rotation, shift != self.shift, count > 0 else { return }
        let source = try sinkKeys.narrowed(axis: 1, 0..<count).contiguous()
        try keys.narrowed(axis: 1, 0..<count).copy(from: KVMath.rotate(source, rotation, Array(repeating: shift, count: count)))
        self.shift = shift
    }
}
