import Foundation
import Linea
import Testing

/// A synthetic token stream for KV-cache tests: random q, k, v per token (before rotation), every k and v kept on
/// the host so that a test can rebuild exact attention over any set of tokens.
struct KVStream {
    let B: Int, Hq: Int, Hkv: Int, D: Int, Dv: Int
    var random: SeededRandom
    /// Per token, `[B, Hkv, D]` keys and `[B, Hkv, Dv]` values, and its kind.
    var keys: [[Float]] = [], values: [[Float]] = [], kinds: [KVTokenKind] = []

    init(B: Int = 2, Hq: Int = 4, Hkv: Int = 2, D: Int = 16, Dv: Int = 8, seed: UInt64 = 1) {
        (self.B, self.Hq, self.Hkv, self.D, self.Dv) = (B, Hq, Hkv, D, Dv)
        random = SeededRandom(seed: seed)
    }

    /// `T` new tokens: `q [B, T, Hq, D]`, `k [B, T, Hkv, D]`, `v [B, T, Hkv, Dv]`; kinds from `kind(index)`.
    mutating func next(_ T: Int, kind: (Int) -> KVTokenKind = { _ in .text }) throws -> (q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, kinds: [KVTokenKind]) {
        func normals(_ n: Int) -> [Float] { (0..<n).map { _ in Float(random.nextNormal()) } }
        let (q, k, v) = (normals(B * T * Hq * D), normals(B * T * Hkv * D), normals(B * T * Hkv * Dv))
        var newKinds: [KVTokenKind] = []
        for t in 0..<T {
            var (key, value): ([Float], [Float]) = ([], [])
            for b in 0..<B {
                let row = (b * T + t) * Hkv
                key += k[(row * D)..<((row + Hkv) * D)]
                value += v[(row * Dv)..<((row + Hkv) * Dv)]
            }
            keys.append(key)
            values.append(value)
            newKinds.append(kind(kinds.count))
            kinds.append(newKinds.last!)
        }
        return (try DeviceTensor(Tensor(shape: [B, T, Hq, D], scalars: q)), try DeviceTensor(Tensor(shape: [B, T, Hkv, D], scalars: k)),
                try DeviceTensor(Tensor(shape: [B, T, Hkv, Dv], scalars: v)), newKinds)
    }

    /// Rotary embedding as a model layer hands it to a cache (theta 10,000, half-split).
    static func rotation(_ x: DeviceTensor, _ positions: [Int]) throws -> DeviceTensor {
        let ids = Array((0..<x.shape[0]).map { _ in positions }.joined())
        return try Ops.rotary(x, positions: DeviceTensor(integers: ids, shape: [x.shape[0], positions.count], dtype: .int32))
    }

    /// Exact attention (Float64 reference) of query row `t` of `q` (heads of kv head `h`, sequence `b`) over `tokens`,
    /// keys rotated at `keyPositions` and the query at `queryPosition` (no rotation when nil), channels outside
    /// `channels(token)` zeroed: `[group, Dv]`. O(tokens·D).
    func reference(q: Tensor, t: Int, b: Int, h: Int, tokens: [Int], keyPositions: [Int]?, queryPosition: Int?,
                   channels: (Int) -> [Int]? = { _ in nil }) throws -> [Float] {
        let (T, group) = (q.shape[1], Hq / Hkv)
        var query = (0..<group).flatMap { g in (0..<D).map { Double(q.scalars[((b * T + t) * Hq + h * group + g) * D + $0]) } }
        var key = tokens.flatMap { i in (0..<D).map { Double(keys[i][(b * Hkv + h) * D + $0]) } }
        if let keyPositions, let queryPosition {
            query = try ReferenceOps.rotary(x: query, positions: [queryPosition], tokens: 1, heads: group, headDim: D, rotaryDim: D, theta: 10_000, layout: .halfSplit)
            key = try ReferenceOps.rotary(x: key, positions: keyPositions, tokens: tokens.count, heads: 1, headDim: D, rotaryDim: D, theta: 10_000, layout: .halfSplit)
        }
        for (j, i) in tokens.enumerated() {
            guard let kept = channels(i) else { continue }
            for c in 0..<D where !kept.contains(c) { key[j * D + c] = 0 }
        }
        let value = tokens.flatMap { i in values[i][((b * Hkv + h) * Dv)..<((b * Hkv + h + 1) * Dv)] }
        let out = try Attention.forward(q: Tensor(shape: [1, 1, group, D], scalars: query.map(Float.init)),
                                        k: Tensor(shape: [1, tokens.count, 1, D], scalars: key.map(Float.init)),
                                        v: Tensor(shape: [1, tokens.count, 1, Dv], scalars: value), form: .reference)
        return out.o.scalars
    }

    /// Rows of `o [B, T, Hq, Dv]` for query row `t`, sequence `b`, the heads of kv head `h`. O(group·Dv).
    func rows(_ o: Tensor, t: Int, b: Int, h: Int) -> [Float] {
        let (T, group) = (o.shape[1], Hq / Hkv)
        let start = ((b * T + t) * Hq + h * group) * Dv
        return Array(o.scalars[start..<(start + group * Dv)])
    }
}

@Suite struct KVCacheTests {
    static let configs: [KVCacheConfig] = [
        .full, .sinkWindow(sinks: 3, window: 8), .sinkWindow(sinks: 0, window: 5), .streamingVLM(sinks: 2, textWindow: 6, visionWindow: 4),
        .think(pruneRatio: 0.5, recent: 4, observation: 3), .topK(pages: 2, pageSize: 4, sinks: 2, window: 5),
    ]

    /// Vision tokens in blocks of 5 after 3 text tokens (streaming-vlm's mixed stream); text for the others.
    static func kind(_ i: Int) -> KVTokenKind { i % 8 < 5 ? .vision : .text }

    /// The tokens a decode step after `n` tokens must read, from each policy's definition (independent of the caches).
    static func expectedTokens(_ config: KVCacheConfig, n: Int, kinds: [KVTokenKind]) -> [Int]? {
        switch config {
        case .full, .think: return Array(0..<n)
        case let .sinkWindow(s, w): return Array(0..<min(n, s)) + Array(max(s, n - w)..<max(s, n))
        case let .streamingVLM(s, t, v):
            let rest = Array(min(n, s)..<n)
            let text = rest.filter { kinds[$0] == .text }.suffix(t), vision = rest.filter { kinds[$0] == .vision }.suffix(v)
            return (Array(0..<min(n, s)) + text + vision).sorted()
        case .topK: return nil  // query-dependent: checked by `expectedPages`
        }
    }

    /// Decode through each cache (a 12-token prefill, then 40 one-token steps, keys and queries rotated) equals exact
    /// Float64 attention over exactly the tokens it kept, at the positions its policy gives them (stream positions;
    /// cache slots for sink-window and streaming-vlm), through the channels it kept (think): rel-RMS <= 1e-5.
    @Test(arguments: configs)
    func decodeEqualsExactAttentionOverWhatItKept(_ config: KVCacheConfig) throws {
        var stream = KVStream()
        let cache = try config.make(batch: stream.B, capacity: 60, kvHeads: stream.Hkv, headDim: stream.D, valueDim: stream.Dv)
        var firstCall: (q: Tensor, k: Tensor)?
        for T in [12] + Array(repeating: 1, count: 40) {
            let x = try stream.next(T, kind: Self.kind)
            let o = try cache.attend(q: x.q, k: x.k, v: x.v, kinds: x.kinds, rotation: KVStream.rotation).host()
            let n = stream.keys.count
            if firstCall == nil { firstCall = (try KVStream.rotation(x.q, Array(0..<T)).host(), try KVStream.rotation(x.k, Array(0..<T)).host()) }
            for b in 0..<stream.B {
                for h in 0..<stream.Hkv {
                    let tokens = cache.attendedTokens(batch: b, head: h)
                    if T == 1, let expected = Self.expectedTokens(config, n: n, kinds: stream.kinds) {
                        #expect(tokens == expected, "\(config) after \(n) tokens")
                    }
                    if T == 1, case let .topK(pages, size, sinks, window) = config {
                        #expect(tokens == Self.expectedPages(stream, q: x.q, b: b, h: h, n: n, pages: pages, pageSize: size, sinks: sinks, window: window),
                                "\(config) after \(n) tokens")
                    }
                    if case .think = config, T == 1 {
                        let kept = try #require(cache.attendedChannels(batch: b, head: h, token: 0))
                        #expect(kept == Self.expectedChannels(firstCall!.q, firstCall!.k, stream, b: b, h: h, keep: stream.D / 2, observation: 3))
                    }
                    let slots = config.positionSpan != nil
                    let want = try stream.reference(q: x.q.host(), t: T - 1, b: b, h: h, tokens: tokens,
                                                    keyPositions: slots ? Array(0..<tokens.count) : tokens,
                                                    queryPosition: slots ? tokens.count - 1 : n - 1,
                                                    channels: { cache.attendedChannels(batch: b, head: h, token: $0) })
                    let error = ErrorStats(stream.rows(o, t: T - 1, b: b, h: h), want)
                    #expect(error.relativeRMS <= 1e-5, "\(config) after \(n) tokens, b \(b) h \(h): \(error)")
                }
            }
        }
    }

    /// Calls of several lengths (longer and shorter than the windows) through sink-window and streaming-vlm: every
    /// query of a call equals exact attention over the tokens kept before it plus the call's tokens up to itself, at
    /// contiguous positions (StreamingLLM's `evict_for_space`, StreamingVLM's shrink mode).
    @Test(arguments: [KVCacheConfig.sinkWindow(sinks: 2, window: 6), .streamingVLM(sinks: 2, textWindow: 5, visionWindow: 3)])
    func piecesEqualExactAttention(_ config: KVCacheConfig) throws {
        var stream = KVStream(B: 1, seed: 3)
        let cache = try config.make(batch: 1, capacity: 1, kvHeads: stream.Hkv, headDim: stream.D, valueDim: stream.Dv)
        for T in [3, 1, 4, 9, 1, 2, 5, 1, 1, 7] {
            let x = try stream.next(T, kind: Self.kind)
            let o = try cache.attend(q: x.q, k: x.k, v: x.v, kinds: x.kinds, rotation: KVStream.rotation).host()
            let n = stream.keys.count
            for h in 0..<stream.Hkv {
                let all = cache.attendedTokens(batch: 0, head: h)
                #expect(all == Self.expectedPiece(config, n: n - T, T: T, kinds: stream.kinds), "\(config) call of \(T) ending at \(n)")
                for t in 0..<T {
                    let tokens = Array(all.dropLast(T - 1 - t))
                    let want = try stream.reference(q: x.q.host(), t: t, b: 0, h: h, tokens: tokens, keyPositions: Array(0..<tokens.count),
                                                    queryPosition: tokens.count - 1)
                    let error = ErrorStats(stream.rows(o, t: t, b: 0, h: h), want)
                    #expect(error.relativeRMS <= 1e-5, "\(config) call of \(T) ending at \(n), query \(t): \(error)")
                }
            }
        }
    }

    /// Ten times more tokens than the bound, in calls of mixed lengths: the evicting caches never hold more than their
    /// bound; the others refuse the token past their capacity, naming it.
    @Test(arguments: configs)
    func boundsHold(_ config: KVCacheConfig) throws {
        var stream = KVStream(B: 1, Hq: 2, Hkv: 1, D: 8, Dv: 4, seed: 7)
        let capacity = 40
        let cache = try config.make(batch: 1, capacity: capacity, kvHeads: 1, headDim: 8, valueDim: 4)
        let bytes = cache.boundBytes
        if config.positionSpan == nil {
            var seen = 0
            while seen < capacity {
                let x = try stream.next(min(7, capacity - seen))
                _ = try cache.attend(q: x.q, k: x.k, v: x.v)
                seen = cache.tokensSeen
                #expect(cache.tokensKept <= cache.boundTokens && cache.boundBytes == bytes)
            }
            let x = try stream.next(1)
            #expect(throws: LineaError.self) { _ = try cache.attend(q: x.q, k: x.k, v: x.v) }
            do { _ = try cache.attend(q: x.q, k: x.k, v: x.v) } catch { #expect("\(error)".contains("capacity"), "\(error)") }
            return
        }
        var seen = 0
        for T in Array(repeating: [1, 5, 1, 1, 13, 2], count: 12).joined() {
            let x = try stream.next(T, kind: Self.kind)
            _ = try cache.attend(q: x.q, k: x.k, v: x.v, kinds: x.kinds)
            seen += T
            #expect(cache.tokensSeen == seen)
            #expect(cache.tokensKept <= cache.boundTokens && cache.boundBytes == bytes, "\(config) after \(seen)")
            if T == 1 { #expect(cache.attendedTokens(batch: 0, head: 0).count <= cache.boundTokens) }
        }
        #expect(seen >= 10 * cache.boundTokens)
        #expect(cache.tokensKept == cache.boundTokens)
    }

    /// A sink-window or streaming-vlm cache larger than the stream keeps everything: its outputs equal the full
    /// cache's (the sinks re-rotated by nothing, positions the stream's), call by call.
    @Test func cachesLargerThanTheStreamEqualFull() throws {
        var stream = KVStream(seed: 11)
        let make = { (c: KVCacheConfig) in try c.make(batch: 2, capacity: 64, kvHeads: 2, headDim: 16, valueDim: 8) }
        let (full, sink, vlm) = (try make(.full), try make(.sinkWindow(sinks: 4, window: 64)), try make(.streamingVLM(sinks: 4, textWindow: 64, visionWindow: 64)))
        for T in [9, 1, 1, 5, 1, 20, 1] {
            let x = try stream.next(T, kind: Self.kind)
            let want = try full.attend(q: x.q, k: x.k, v: x.v, kinds: x.kinds, rotation: KVStream.rotation).host()
            for cache in [sink, vlm] {
                let got = try cache.attend(q: x.q, k: x.k, v: x.v, kinds: x.kinds, rotation: KVStream.rotation).host()
                #expect(ErrorStats(got, want).relativeRMS <= 1e-6, "\(cache.config) at \(stream.keys.count)")
            }
        }
        #expect(sink.attendedTokens(batch: 1, head: 1) == Array(0..<38))
    }

    /// A full cache of bf16 keys and values (a 16-bit model's on a GPU) holds half the bytes, returns o in q's dtype,
    /// and agrees with the f32 cache to bf16 rounding, call by call; an integer dtype is refused, naming it.
    @Test func bf16FullCacheAgreesWithF32ToRounding() throws {
        var stream = KVStream(seed: 12)
        let make = { (d: DType) in try KVCacheConfig.full.make(batch: 2, capacity: 64, kvHeads: 2, headDim: 16, valueDim: 8, dtype: d) }
        let (wide, narrow) = (try make(.float32), try make(.bfloat16))
        #expect(narrow.boundBytes * 2 == wide.boundBytes)
        for T in [9, 1, 1, 5, 1] {
            let x = try stream.next(T, kind: Self.kind)
            let want = try wide.attend(q: x.q, k: x.k, v: x.v, kinds: x.kinds, rotation: KVStream.rotation)
            let got = try narrow.attend(q: x.q, k: x.k, v: x.v, kinds: x.kinds, rotation: KVStream.rotation)
            #expect(got.dtype == .float32)
            let error = ErrorStats(try got.host(), try want.host()).relativeRMS
            #expect(error > 0 && error <= 1e-2, "T = \(T): rel-RMS \(error)")
        }
        #expect(throws: LineaError.self) { _ = try make(.int32) }
    }

    /// Bad sizes and inputs are errors naming the argument: a window smaller than the sinks, negative sizes, a prune
    /// ratio outside [0, 1), no pages, an unknown name, a mismatched k, kinds of the wrong count, a non-causal call.
    @Test func badInputIsNamed() throws {
        func argument(_ body: () throws -> Void) -> String? {
            do { try body() } catch let LineaError.invalidArgument(argument, _, _) { return argument }
            catch let LineaError.shapeMismatch(argument, _, _) { return argument } catch { return "\(error)" }
            return nil
        }
        func make(_ c: KVCacheConfig) throws { _ = try c.make(batch: 1, capacity: 8, kvHeads: 1, headDim: 4, valueDim: 4) }
        #expect(argument { try make(.sinkWindow(sinks: 4, window: 2)) } == "window")
        #expect(argument { _ = try KVCacheConfig(name: "sink-window", sinks: 8, window: 4) } == "window")
        #expect(argument { try make(.sinkWindow(sinks: -1, window: 4)) } == "sinks")
        #expect(argument { try make(.sinkWindow(sinks: 0, window: 0)) } == "window")
        #expect(argument { try make(.streamingVLM(sinks: 4, textWindow: 3, visionWindow: 8)) } == "window")
        #expect(argument { try make(.streamingVLM(sinks: 4, textWindow: 8, visionWindow: -2)) } == "vision window")
        #expect(argument { try make(.think(pruneRatio: 1, recent: 4, observation: 4)) } == "prune ratio")
        #expect(argument { try make(.think(pruneRatio: 0.5, recent: -1, observation: 4)) } == "window")
        #expect(argument { try make(.topK(pages: 0, pageSize: 4, sinks: 0, window: 4)) } == "pages")
        #expect(argument { try make(.topK(pages: 2, pageSize: 0, sinks: 0, window: 4)) } == "page size")
        #expect(argument { try make(.topK(pages: 2, pageSize: 4, sinks: 5, window: 4)) } == "window")
        #expect(argument { _ = try KVCacheConfig(name: "lru") } == "kv cache")
        #expect(argument { _ = try KVCacheConfig.full.make(batch: 1, capacity: 0, kvHeads: 1, headDim: 4, valueDim: 4) } == "capacity")
        var stream = KVStream(B: 1, Hq: 2, Hkv: 1, D: 4, Dv: 4)
        let x = try stream.next(2), cache = try KVCacheConfig.sinkWindow(sinks: 1, window: 4).make(batch: 1, capacity: 1, kvHeads: 1, headDim: 4, valueDim: 4)
        #expect(argument { _ = try cache.attend(q: x.q, k: x.v.narrowed(axis: 1, 0..<1), v: x.v) } == "k")
        #expect(argument { _ = try cache.attend(q: x.q, k: x.k, v: x.v, kinds: [.text]) } == "kinds")
        #expect(argument { _ = try cache.attend(q: x.q, k: x.k, v: x.v, options: AttentionOptions(causal: false)) } == "causal")
        #expect(argument { _ = try cache.attend(q: x.q, k: x.k, v: x.v, options: AttentionOptions(window: 2)) } == "window")
        #expect(cache.tokensSeen == 0)
    }

    /// What a call of `T` tokens after `n` reads, by the policy's definition: the sinks, the tokens of each window
    /// that survive the call (the last `window - new tokens of its kind`), then the call's own tokens.
    static func expectedPiece(_ config: KVCacheConfig, n: Int, T: Int, kinds: [KVTokenKind]) -> [Int] {
        let (sinks, windows): (Int, [(KVTokenKind?, Int)]) = switch config {
        case let .sinkWindow(s, w): (s, [(nil, w)])
        case let .streamingVLM(s, t, v): (s, [(.text, t), (.vision, v)])
        default: (0, [])
        }
        var kept = Array(0..<min(n, sinks))
        for (kind, window) in windows {
            let new = (n..<(n + T)).filter { $0 >= sinks && (kind == nil || kinds[$0] == kind) }.count
            kept += Array(min(n, sinks)..<n).filter { kind == nil || kinds[$0] == kind }.suffix(max(0, window - new))
        }
        return kept.sorted() + Array(n..<(n + T))
    }

    /// ThinK's channels from the first call's rotated `q [B, T, Hq, D]`, `k [B, T, Hkv, D]`: per kv head, the `keep`
    /// channels of largest `Σ q² (last observation queries of its group) · Σ k² (all keys)`, ascending.
    static func expectedChannels(_ q: Tensor, _ k: Tensor, _ s: KVStream, b: Int, h: Int, keep: Int, observation: Int) -> [Int] {
        let T = q.shape[1], group = s.Hq / s.Hkv
        let score = (0..<s.D).map { c -> Double in
            var qs = 0.0, ks = 0.0
            for t in max(0, T - observation)..<T {
                for g in 0..<group { qs += pow(Double(q.scalars[((b * T + t) * s.Hq + h * group + g) * s.D + c]), 2) }
            }
            for t in 0..<T { ks += pow(Double(k.scalars[((b * T + t) * s.Hkv + h) * s.D + c]), 2) }
            return qs * ks
        }
        return Array((0..<s.D).sorted { score[$0] > score[$1] }.prefix(keep)).sorted()
    }

    /// Quest's selection for the decode query of sequence `b` after `n` tokens, from the stream's keys rotated at
    /// their positions: the sinks, the `pages` whole pages before the window with the largest `Σ max(q·min, q·max)`
    /// (largest over kv head `h`'s query heads), and the rest.
    static func expectedPages(_ s: KVStream, q: DeviceTensor, b: Int, h: Int, n: Int, pages: Int, pageSize: Int, sinks: Int,
                              window: Int) -> [Int] {
        let candidates = (max(sinks, n - window) - sinks) / pageSize
        let recent = sinks + candidates * pageSize
        guard candidates > pages else { return Array(0..<n) }
        let group = s.Hq / s.Hkv
        var rows: [Float] = []
        for i in 0..<n { rows += s.keys[i][((b * s.Hkv + h) * s.D)..<((b * s.Hkv + h + 1) * s.D)] }
        let keys = try! KVStream.rotation(DeviceTensor(Tensor(shape: [1, n, 1, s.D], scalars: rows)), Array(0..<n)).host().scalars
        let query = try! KVStream.rotation(q, [n - 1]).host().scalars
        var score = [Double](repeating: -.infinity, count: candidates)
        for page in 0..<candidates {
            for g in 0..<group {
                var sum = 0.0
                for c in 0..<s.D {
                    var (low, high) = (Double.infinity, -Double.infinity)
                    for i in (sinks + page * pageSize)..<(sinks + (page + 1) * pageSize) {
                        (low, high) = (min(low, Double(keys[i * s.D + c])), max(high, Double(keys[i * s.D + c])))
                    }
                    let x = Double(query[(b * s.Hq + h * group + g) * s.D + c])
                    sum += max(x * low, x * high)
                }
                score[page] = max(score[page], sum)
            }
        }
        let chosen = Array((0..<candidates).sorted { score[$0] > score[$1] }.prefix(pages)).sorted()
        return Array(0..<sinks) + chosen.flatMap { sinks + $0 * pageSize..<sinks + ($0 + 1) * pageSize } + Array(recent..<n)
    }
}
