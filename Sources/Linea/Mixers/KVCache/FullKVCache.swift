import Foundation

/// Every token up to a capacity, preallocated: keys rotated at their original positions, exact attention over all of
/// them (a model's sliding window, if any, applied by the mask).
final class FullKVCache: KVCache {
    let config = KVCacheConfig.full
    let shape: KVShape, capacity: Int
    /// `[B, capacity, Hkv, D]` keys (rotated) and `[B, capacity, Hkv, Dv]` values; rows `0..<tokensSeen` hold tokens.
    let keys: DeviceTensor, values: DeviceTensor
    private(set) var tokensSeen = 0
    /// The last call's sliding window, if any (what its last query read).
    private var window: Int?

    var tokensKept: Int { tokensSeen }
    var boundTokens: Int { capacity }
    var boundBytes: Int { shape.bytes(tokens: capacity) }

    /// Allocates `capacity` rows of keys and values. O(capacity).
    init(_ shape: KVShape, capacity: Int) throws {
        (self.shape, self.capacity) = (shape, capacity)
        keys = try DeviceTensor.zeros([shape.B, capacity, shape.Hkv, shape.D], dtype: shape.dtype, on: shape.device)
        values = try DeviceTensor.zeros([shape.B, capacity, shape.Hkv, shape.Dv], dtype: shape.dtype, on: shape.device)
    }

    func attend(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, kinds: [KVTokenKind]?, rotation: KVRotation?,
                options: AttentionOptions) throws -> DeviceTensor {
        let T = try shape.check(q: q, k: k, v: v, kinds: kinds, options: options, allowsWindow: true)
        let n = tokensSeen, positions = try shape.positions(held: n, adding: T, capacity: capacity, cache: "full")
        // Rotated in q's dtype, then rounded once to the cache's; o comes back in q's dtype.
        func held(_ x: DeviceTensor) throws -> DeviceTensor { x.dtype == keys.dtype ? x : try Ops.cast(x, to: keys.dtype) }
        try keys.narrowed(axis: 1, n..<(n + T)).copy(from: held(KVMath.rotate(k, rotation, positions)))
        try values.narrowed(axis: 1, n..<(n + T)).copy(from: held(v))
        (tokensSeen, window) = (n + T, options.window)
        return try KVMath.attention(q: held(KVMath.rotate(q, rotation, positions)), k: keys.narrowed(axis: 1, 0..<(n + T)),
                                    v: values.narrowed(axis: 1, 0..<(n + T)), options: options, outputDType: q.dtype).o
    }

    func attendedTokens(batch: Int, head: Int) -> [Int] { Array(max(0, tokensSeen - (window ?? tokensSeen))..<tokensSeen) }
}
