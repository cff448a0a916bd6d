import Foundation

/// Query-aware page selection at decode (Quest, Tang et al. 2024; TokenSelect's per-query top-k): every token kept
/// (keys rotated at their stream positions), the tokens after the first `sinks` cut into pages of `pageSize` with
/// each page's elementwise min and max key. A decode step reads the sinks, the last `window` tokens (from the end of
/// the last whole page before them) and the `pages` pages of largest upper bound `Σ_c max(q_c·min_c, q_c·max_c)`;
/// per key/value head the bound is the largest over its query heads (Quest is per head; a grouped head serves all of
/// its queries). A longer call (prefill) attends over every token, as Quest does. CPU only: selection runs on the host.
final class TopKPagesKVCache: KVCache {
    let config: KVCacheConfig
    let shape: KVShape, capacity: Int, pages: Int, pageSize: Int, sinks: Int, window: Int
    /// `[B, capacity, Hkv, D]` keys (rotated) and `[B, capacity, Hkv, Dv]` values, token `i` at row `i`.
    let keys: DeviceTensor, values: DeviceTensor
    /// Per page, `[B, pageCount, Hkv, D]`: the elementwise min and max of its keys.
    private var pageMin: [Float], pageMax: [Float]
    let pageCount: Int
    private(set) var tokensSeen = 0
    /// The last call's selected pages per `b·Hkv + h` (nil: it read every token), and where its recent run began.
    private var lastPages: [[Int]]?, lastRecent = 0

    var tokensKept: Int { tokensSeen }
    var boundTokens: Int { capacity }
    var boundBytes: Int { shape.bytes(tokens: capacity) + 2 * 4 * shape.B * pageCount * shape.Hkv * shape.D }

    /// Allocates keys, values and the page bounds; CPU only. O(capacity).
    init(_ shape: KVShape, capacity: Int, pages: Int, pageSize: Int, sinks: Int, window: Int) throws {
        guard shape.device == .cpu else {
            throw LineaError.unavailable(what: "the topk KV cache on \(shape.device)", reason: "it selects pages on the host (CPU only)")
        }
        (self.shape, self.capacity, self.pages, self.pageSize, self.sinks, self.window) = (shape, capacity, pages, pageSize, sinks, window)
        config = .topK(pages: pages, pageSize: pageSize, sinks: sinks, window: window)
        keys = try DeviceTensor.zeros([shape.B, capacity, shape.Hkv, shape.D])
        values = try DeviceTensor.zeros([shape.B, capacity, shape.Hkv, shape.Dv])
        pageCount = (max(0, capacity - sinks) + pageSize - 1) / pageSize
        let bounds = shape.B * pageCount * shape.Hkv * shape.D
        (pageMin, pageMax) = ([Float](repeating: .infinity, count: bounds), [Float](repeating: -.infinity, count: bounds))
    }

    func attend(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, kinds: [KVTokenKind]?, rotation: KVRotation?,
                options: AttentionOptions) throws -> DeviceTensor {
        let T = try shape.check(q: q, k: k, v: v, kinds: kinds, options: options)
        let n = tokensSeen, positions = try shape.positions(held: n, adding: T, capacity: capacity, cache: "topk")
        let qr = try KVMath.rotate(q, rotation, positions).contiguous()
        try store(KVMath.rotate(k, rotation, positions).contiguous(), v, n: n)
        let N = n + T
        // Whole pages before the recent window are the candidates; the rest of the last partial one joins the window.
        let candidates = (max(sinks, N - window) - sinks) / pageSize
        lastRecent = sinks + candidates * pageSize
        guard T == 1, candidates > pages else {
            lastPages = nil
            return try KVMath.attention(q: qr, k: keys.narrowed(axis: 1, 0..<N), v: values.narrowed(axis: 1, 0..<N), options: options).o
        }
        let selected = select(qr, candidates: candidates)
        let length = sinks + pages * pageSize + (N - lastRecent)
        let most = sinks + (pages + 1) * pageSize + window  // the longest read: the window starts at most a page early
        let gathered = (k: try KVMath.scratch(shape.B, rows: length, allocated: most, heads: shape.Hkv, width: shape.D, on: .cpu),
                        v: try KVMath.scratch(shape.B, rows: length, allocated: most, heads: shape.Hkv, width: shape.Dv, on: .cpu))
        for b in 0..<shape.B {
            for h in 0..<shape.Hkv {
                let tokens = Array(0..<sinks) + selected[b * shape.Hkv + h].flatMap { sinks + $0 * pageSize..<sinks + ($0 + 1) * pageSize }
                    + Array(lastRecent..<N)
                gather(tokens, b: b, h: h, from: keys, into: gathered.k, capacityRows: capacity)
                gather(tokens, b: b, h: h, from: values, into: gathered.v, capacityRows: capacity)
            }
        }
        lastPages = selected
        return try KVMath.attention(q: qr, k: gathered.k, v: gathered.v, options: options).o
    }

    func attendedTokens(batch: Int, head: Int) -> [Int] {
        guard let pages = lastPages?[batch * shape.Hkv + head] else { return Array(0..<tokensSeen) }
        return Array(0..<sinks) + pages.flatMap { sinks + $0 * pageSize..<sinks + ($0 + 1) * pageSize } + Array(lastRecent..<tokensSeen)
    }

    /// Writes keys and values at rows `n...` and widens their pages' min and max. O(T·Hkv·D).
    private func store(_ k: DeviceTensor, _ v: DeviceTensor, n: Int) throws {
        let T = k.shape[1], (Hkv, D) = (shape.Hkv, shape.D)
        try keys.narrowed(axis: 1, n..<(n + T)).copy(from: k)
        try values.narrowed(axis: 1, n..<(n + T)).copy(from: v)
        let source = k.floats
        for b in 0..<shape.B {
            for t in 0..<T where n + t >= sinks {
                let page = (n + t - sinks) / pageSize
                for h in 0..<Hkv {
                    let (row, bound) = (((b * T + t) * Hkv + h) * D, ((b * pageCount + page) * Hkv + h) * D)
                    for c in 0..<D {
                        pageMin[bound + c] = min(pageMin[bound + c], source[row + c])
                        pageMax[bound + c] = max(pageMax[bound + c], source[row + c])
                    }
                }
            }
        }
        tokensSeen = n + T
    }

    /// Per (b, kv head) the `pages` candidate pages of largest bound (ties to the earlier page), ascending, for the one
    /// query per head of `q [B, 1, Hq, D]`. O(B·Hq·candidates·D).
    private func select(_ q: DeviceTensor, candidates: Int) -> [[Int]] {
        let (Hq, Hkv, D) = (q.shape[2], shape.Hkv, shape.D), group = Hq / Hkv, qs = q.floats
        var result: [[Int]] = []
        for b in 0..<shape.B {
            for h in 0..<Hkv {
                var score = [Float](repeating: -.infinity, count: candidates)
                for g in 0..<group {
                    let query = (b * Hq + h * group + g) * D
                    for page in 0..<candidates {
                        let bound = ((b * pageCount + page) * Hkv + h) * D
                        var sum: Float = 0
                        for c in 0..<D { sum += max(qs[query + c] * pageMin[bound + c], qs[query + c] * pageMax[bound + c]) }
                        score[page] = max(score[page], sum)
                    }
                }
                let order = (0..<candidates).sorted { score[$0] > score[$1] || (score[$0] == score[$1] && $0 < $1) }
                result.append(Array(order.prefix(pages)).sorted())
            }
        }
        return result
    }

    /// Copies the rows `tokens` of head `h` of sequence `b` of `source [B, capacityRows, Hkv, W]` into rows 0... of
    /// `destination [B, tokens.count, Hkv, W]` (a view: rows of a larger buffer). O(tokens·W).
    private func gather(_ tokens: [Int], b: Int, h: Int, from source: DeviceTensor, into destination: DeviceTensor, capacityRows: Int) {
        let (Hkv, W, strides) = (shape.Hkv, source.shape[3], destination.strides)
        let (src, dst) = (source.floats.baseAddress!, UnsafeMutablePointer<Float>(bitPattern: destination.address)!)
        for (j, i) in tokens.enumerated() {
            (dst + b * strides[0] + j * strides[1] + h * strides[2]).update(from: src + ((b * capacityRows + i) * Hkv + h) * W, count: W)
        }
    }
}
