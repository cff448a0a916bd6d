import Foundation

/// ThinK's query-driven pruning of key channels (Xu et al. 2024, SalesforceAIResearch/ThinK): per sequence and
/// key/value head, channel `c` scores `mean(q[:, c]²) · mean(k[:, c]²)` over the first call's last `observation`
/// queries (those of the head's query group) and all its keys, as `key_pruner_query_driven` computes
/// `|Q[:, c]|·|K[:, c]|`; the `⌊pruneRatio·D⌋` lowest-scoring channels are dropped. A call attends over the older keys
/// through their kept channels (`q` cut to them, the scale still `1/sqrt(D)`) and over the last `recent` keys and
/// its own whole, one softmax over both (split-KV's merge).
///
/// One departure, for a bound fixed at creation: ThinK prunes the prompt's keys and keeps generated ones whole; here
/// every key is pruned once `recent` newer ones have arrived, so generated tokens save memory too.
final class ThinKKVCache: KVCache {
    let config: KVCacheConfig
    let shape: KVShape, capacity: Int, recent: Int, observation: Int
    /// Key channels kept per head: `D - ⌊pruneRatio·D⌋`.
    let keptWidth: Int
    /// `[B, capacity, Hkv, keptWidth]`: token `i`'s kept channels once it is older than the last `recent`.
    let pruned: DeviceTensor
    /// `[B, recent, Hkv, D]`: the last `recent` keys whole, token `i` at row `i % recent`.
    let recentKeys: DeviceTensor
    /// `[B, capacity, Hkv, Dv]`: every token's values, token `i` at row `i`.
    let values: DeviceTensor
    /// Kept channels (ascending) per `b·Hkv + h`; empty before the first call.
    private(set) var channels: [[Int]] = []
    private(set) var tokensSeen = 0
    /// Tokens the last call read through their kept channels only.
    private var lastPruned = 0

    var tokensKept: Int { tokensSeen }
    var boundTokens: Int { capacity }
    var boundBytes: Int { shape.bytes(tokens: capacity, keyWidth: keptWidth) + 4 * shape.B * recent * shape.Hkv * shape.D }

    /// Allocates the pruned keys, the recent ring and the values; CPU only (channels are gathered on the host). O(bound).
    init(_ shape: KVShape, capacity: Int, pruneRatio: Double, recent: Int, observation: Int) throws {
        guard shape.device == .cpu else {
            throw LineaError.unavailable(what: "the think KV cache on \(shape.device)", reason: "it gathers key channels on the host (CPU only)")
        }
        keptWidth = shape.D - Int(Double(shape.D) * pruneRatio)  // >= 1: the ratio is below 1
        (self.shape, self.capacity, self.recent, self.observation) = (shape, capacity, recent, observation)
        config = .think(pruneRatio: pruneRatio, recent: recent, observation: observation)
        pruned = try DeviceTensor.zeros([shape.B, capacity, shape.Hkv, keptWidth])
        recentKeys = try DeviceTensor.zeros([shape.B, recent, shape.Hkv, shape.D])
        values = try DeviceTensor.zeros([shape.B, capacity, shape.Hkv, shape.Dv])
    }

    func attend(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, kinds: [KVTokenKind]?, rotation: KVRotation?,
                options: AttentionOptions) throws -> DeviceTensor {
        let T = try shape.check(q: q, k: k, v: v, kinds: kinds, options: options)
        let n = tokensSeen, positions = try shape.positions(held: n, adding: T, capacity: capacity, cache: "think")
        let (qr, kr) = (try KVMath.rotate(q, rotation, positions).contiguous(), try KVMath.rotate(k, rotation, positions).contiguous())
        if channels.isEmpty { channels = select(q: qr, k: kr) }
        try values.narrowed(axis: 1, n..<(n + T)).copy(from: v)
        let whole = min(recent, n), old = n - whole
        let gathered = try KVMath.scratch(shape.B, rows: whole + T, allocated: recent + T, heads: shape.Hkv, width: shape.D, on: .cpu)
        try KVMath.copyRows(recentKeys, into: gathered, pairs: (old..<n).map { (from: $0 % recent, to: $0 - old) })
        try KVMath.copyRows(kr, 0..<T, into: gathered, at: whole)
        let scale = options.scale ?? 1 / Float(shape.D).squareRoot()
        var scaled = options
        scaled.scale = scale
        let near = try KVMath.attention(q: qr, k: gathered, v: values.narrowed(axis: 1, old..<(n + T)), options: scaled)
        var o = near.o
        if old > 0 {
            // Every new query sees every older token: no mask over them.
            var far = scaled
            far.causal = false
            let farPart = try KVMath.attention(q: keptChannels(of: qr), k: pruned.narrowed(axis: 1, 0..<old),
                                               v: values.narrowed(axis: 1, 0..<old), options: far)
            o = try KVMath.merge(farPart, near)
        }
        try store(kr, n: n)
        lastPruned = old
        return o
    }

    func attendedTokens(batch: Int, head: Int) -> [Int] { Array(0..<tokensSeen) }

    func attendedChannels(batch: Int, head: Int, token: Int) -> [Int]? {
        token < lastPruned ? channels[batch * shape.Hkv + head] : nil
    }

    /// Per (b, kv head) the `keptWidth` channels of largest `mean(q²)·mean(k²)` (ties to the lower channel),
    /// ascending, from the last `observation` queries of `q [B, T, Hq, D]` and all of `k [B, T, Hkv, D]`.
    /// O(B·T·Hq·D + B·Hkv·D log D).
    private func select(q: DeviceTensor, k: DeviceTensor) -> [[Int]] {
        let (B, T, Hq, Hkv, D) = (shape.B, q.shape[1], q.shape[2], shape.Hkv, shape.D)
        let group = Hq / Hkv, (qs, ks) = (q.floats, k.floats)
        var result: [[Int]] = []
        for b in 0..<B {
            for h in 0..<Hkv {
                var score = [Double](repeating: 0, count: D), keyScore = score
                for t in max(0, T - observation)..<T {
                    for g in 0..<group {
                        let base = ((b * T + t) * Hq + h * group + g) * D
                        for c in 0..<D { score[c] += Double(qs[base + c]) * Double(qs[base + c]) }
                    }
                }
                for t in 0..<T {
                    let base = ((b * T + t) * Hkv + h) * D
                    for c in 0..<D { keyScore[c] += Double(ks[base + c]) * Double(ks[base + c]) }
                }
                // Means over the same counts for every channel: the products rank as the means' do.
                for c in 0..<D { score[c] *= keyScore[c] }
                let order = (0..<D).sorted { score[$0] > score[$1] || (score[$0] == score[$1] && $0 < $1) }
                result.append(Array(order.prefix(keptWidth)).sorted())
            }
        }
        return result
    }

    /// `q [B, T, Hq, D]` cut to each query head's kv head's kept channels: `[B, T, Hq, keptWidth]`. O(q).
    private func keptChannels(of q: DeviceTensor) throws -> DeviceTensor {
        let (B, T, Hq) = (q.shape[0], q.shape[1], q.shape[2]), group = Hq / shape.Hkv
        let out = try DeviceTensor.uninitialized([B, T, Hq, keptWidth])
        let (src, dst) = (q.floats, out.mutableFloats)
        for b in 0..<B {
            for t in 0..<T {
                for hq in 0..<Hq {
                    let kept = channels[b * shape.Hkv + hq / group], row = (b * T + t) * Hq + hq
                    for (j, c) in kept.enumerated() { dst[row * keptWidth + j] = src[row * shape.D + c] }
                }
            }
        }
        return out
    }

    /// Prunes the keys this call pushes out of the recent window (from the ring or straight from `k`), then writes the
    /// new keys that stay recent into the ring. O(T·Hkv·D).
    private func store(_ k: DeviceTensor, n: Int) throws {
        let T = k.shape[1], (B, Hkv, D, W) = (shape.B, shape.Hkv, shape.D, keptWidth)
        let (ring, fresh, out) = (recentKeys.floats, k.floats, pruned.mutableFloats)
        for i in max(0, n - recent)..<max(0, n + T - recent) {
            for b in 0..<B {
                for h in 0..<Hkv {
                    let source = i < n ? ring.baseAddress! + ((b * recent + i % recent) * Hkv + h) * D
                        : fresh.baseAddress! + ((b * T + i - n) * Hkv + h) * D
                    let kept = channels[b * Hkv + h], row = ((b * capacity + i) * Hkv + h) * W
                    for (j, c) in kept.enumerated() { out[row + j] = source[c] }
                }
            }
        }
        tokensSeen = n + T
        guard recent > 0 else { return }
        try KVMath.copyRows(k, into: recentKeys, pairs: (max(0, T - recent)..<T).map { (from: $0, to: (n + $0) % recent) })
    }
}
