import Foundation

/// StreamingVLM's cache (Xu et al. 2025, mit-han-lab/streaming-vlm): the first `sinks` tokens, the last `textWindow`
/// text tokens and the last `visionWindow` vision tokens (a ring each), whatever kind the caller marks each token.
///
/// Positions: as its "shrink" mode (contiguous RoPE), the kept tokens take contiguous positions 0..<kept in stream
/// order and the new ones follow. Evicting vision tokens between two kept text tokens changes their distance, so no
/// stored rotation stays valid: keys are stored before rotation and the kept ones are rotated at every call, as the
/// reference applies RoPE after its cache update (O(kept·D) a call, besides the attention).
final class StreamingVLMKVCache: KVCache {
    let config: KVCacheConfig
    let shape: KVShape, sinks: Int, textWindow: Int, visionWindow: Int
    /// `[B, slots, Hkv, D]` keys before rotation and `[B, slots, Hkv, Dv]` values: slots `0..<sinks`, then the text
    /// ring, then the vision ring.
    let keys: DeviceTensor, values: DeviceTensor
    /// The stream index held in each slot (-1: empty).
    private var slotIndex: [Int]
    private(set) var tokensSeen = 0
    /// Text and vision tokens seen after the sinks (each ring's write count).
    private var textCount = 0, visionCount = 0
    private var lastAttended: [Int] = []

    var tokensKept: Int { min(tokensSeen, sinks) + min(textCount, textWindow) + min(visionCount, visionWindow) }
    var boundTokens: Int { sinks + textWindow + visionWindow }
    var boundBytes: Int { shape.bytes(tokens: boundTokens) }

    /// Allocates every slot. O(bound).
    init(_ shape: KVShape, sinks: Int, textWindow: Int, visionWindow: Int) throws {
        (self.shape, self.sinks, self.textWindow, self.visionWindow) = (shape, sinks, textWindow, visionWindow)
        config = .streamingVLM(sinks: sinks, textWindow: textWindow, visionWindow: visionWindow)
        let slots = sinks + textWindow + visionWindow
        keys = try DeviceTensor.zeros([shape.B, slots, shape.Hkv, shape.D], on: shape.device)
        values = try DeviceTensor.zeros([shape.B, slots, shape.Hkv, shape.Dv], on: shape.device)
        slotIndex = Array(repeating: -1, count: slots)
    }

    /// Gathers in stream order the sinks, the text and vision tokens that survive this call (each ring keeps its last
    /// `window - new tokens of its kind`), then this call's tokens; rotates them at 0..<L, attends causally, then
    /// writes the new tokens to their slots. O(L·(D + Dv)) copies and rotation, plus attention.
    func attend(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, kinds: [KVTokenKind]?, rotation: KVRotation?,
                options: AttentionOptions) throws -> DeviceTensor {
        let T = try shape.check(q: q, k: k, v: v, kinds: kinds, options: options)
        let n = tokensSeen, kinds = kinds ?? Array(repeating: .text, count: T)
        let windowed = (0..<T).filter { n + $0 >= sinks }
        let newText = windowed.filter { kinds[$0] == .text }.count, newVision = windowed.count - newText
        // Survivors as (stream index, slot), in stream order.
        var survivors = (0..<min(n, sinks)).map { (index: $0, slot: $0) }
        let keptText = max(0, min(textCount, textWindow - newText)), keptVision = max(0, min(visionCount, visionWindow - newVision))
        for j in (textCount - keptText)..<textCount { survivors.append((slotIndex[sinks + j % textWindow], sinks + j % textWindow)) }
        for j in (visionCount - keptVision)..<visionCount {
            let slot = sinks + textWindow + j % visionWindow
            survivors.append((slotIndex[slot], slot))
        }
        survivors.sort { $0.index < $1.index }
        let kept = survivors.count, length = kept + T
        let rows = boundTokens + T
        let whole = (k: try DeviceTensor.uninitialized([shape.B, rows, shape.Hkv, shape.D], on: shape.device),
                     v: try DeviceTensor.uninitialized([shape.B, rows, shape.Hkv, shape.Dv], on: shape.device))
        let gathered = (k: try whole.k.narrowed(axis: 1, 0..<length), v: try whole.v.narrowed(axis: 1, 0..<length))
        let pairs = survivors.enumerated().map { (from: $1.slot, to: $0) }
        try KVMath.copyRows(keys, into: gathered.k, pairs: pairs)
        try KVMath.copyRows(values, into: gathered.v, pairs: pairs)
        try KVMath.copyRows(k, 0..<T, into: gathered.k, at: kept)
        try KVMath.copyRows(v, 0..<T, into: gathered.v, at: kept)
        // Every allocated row rotated (those past `length` are never read): the output's size then stays one per call
        // length, which the host buffer cache reuses, instead of one per kept count while the windows fill.
        let rotated = try KVMath.rotate(whole.k, rotation, Array(0..<rows)).narrowed(axis: 1, 0..<length)
        let o = try KVMath.attention(q: KVMath.rotate(q, rotation, Array(kept..<length)), k: rotated, v: gathered.v, options: options).o
        var writes: [(from: Int, to: Int)] = []
        for t in 0..<T {
            let i = n + t, slot: Int
            if i < sinks {
                slot = i
            } else if kinds[t] == .text {
                slot = sinks + textCount % textWindow
                textCount += 1
            } else {
                slot = sinks + textWindow + visionCount % visionWindow
                visionCount += 1
            }
            writes.append((t, slot))
            slotIndex[slot] = i
        }
        try KVMath.copyRows(k, into: keys, pairs: writes)
        try KVMath.copyRows(v, into: values, pairs: writes)
        tokensSeen = n + T
        lastAttended = survivors.map(\.index) + Array(n..<(n + T))
        return o
    }

    func attendedTokens(batch: Int, head: Int) -> [Int] { lastAttended }
}
