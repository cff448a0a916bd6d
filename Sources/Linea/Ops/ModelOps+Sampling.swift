import Foundation

extension CPUOps {
    /// Softmax over the last axis of `x [rows, cols]` into `out` (max-subtracted). O(rows·cols).
    public static func softmax(x: UnsafeBufferPointer<Float>, out: UnsafeMutableBufferPointer<Float>,
                               rows: Int, cols: Int) throws {
        guard try checkRows(["x": x.count, "out": out.count], rows: rows, dim: cols) else { return }
        forRows(rows, width: cols) { range in
            for r in range { softmaxRow(x.baseAddress! + r * cols, out.baseAddress! + r * cols, count: cols) }
        }
    }

    /// One stable softmax row; `y` may alias `x`. O(count).
    static func softmaxRow(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        if count == 0 { return }
        let m = VectorMath.max(x, count: count)
        var total: Float = 0
        var i = 0
        while i + 8 <= count {
            let e = VectorMath.exp(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self) - m)
            UnsafeMutableRawPointer(y + i).storeBytes(of: e, as: SIMD8<Float>.self)
            total += e.sum()
            i += 8
        }
        while i < count { y[i] = VectorMath.exp(x[i] - m); total += y[i]; i += 1 }
        VectorMath.scale(y, count: count, by: 1 / total)
    }

    /// Mixture-of-experts routing (Qwen2-MoE / Qwen3-Next): softmax over `logits [rows, experts]`, the `k` largest
    /// probabilities per row in descending order (ties to the lower index) into `weights [rows, k]` and `indices
    /// [rows, k]`, renormalized to sum 1 when `normalize` (`norm_topk_prob`). O(rows·experts·k).
    public static func topKRouting(logits: UnsafeBufferPointer<Float>, weights: UnsafeMutableBufferPointer<Float>,
                                   indices: UnsafeMutableBufferPointer<Int32>, rows: Int, experts: Int, k: Int,
                                   normalize: Bool) throws {
        try checkRows(["logits": logits.count], rows: rows, dim: experts)
        try OpCheck.value("k", k >= 1 && k <= experts, "1...experts (\(experts))", "\(k)")
        try OpCheck.count("weights", weights.count, rows * k, "[rows, k] = [\(rows), \(k)]")
        try OpCheck.count("indices", indices.count, rows * k, "[rows, k] = [\(rows), \(k)]")
        forRows(rows, width: experts * k) { range in
            var p = [Float](repeating: 0, count: experts)
            for r in range {
                p.withUnsafeMutableBufferPointer { softmaxRow(logits.baseAddress! + r * experts, $0.baseAddress!, count: experts) }
                var total: Float = 0
                for slot in 0..<k {
                    var best = -1
                    // -1 marks a taken expert (probabilities are >= 0; NaN ones from non-finite logits stay pickable).
                    for e in 0..<experts where p[e] != -1 && (best < 0 || p[e] > p[best]) { best = e }
                    weights[r * k + slot] = p[best]
                    indices[r * k + slot] = Int32(best)
                    total += p[best]
                    p[best] = -1  // taken
                }
                if normalize { for slot in 0..<k { weights[r * k + slot] /= total } }
            }
        }
    }

    /// Index of the largest value of each row of `x [rows, cols]` into `out [rows]` (ties to the lower index).
    /// O(rows·cols).
    public static func argmax(x: UnsafeBufferPointer<Float>, out: UnsafeMutableBufferPointer<Int32>,
                              rows: Int, cols: Int) throws {
        try checkRows(["x": x.count], rows: rows, dim: cols)
        try OpCheck.value("cols", cols >= 1, ">= 1", "\(cols)")
        try OpCheck.count("out", out.count, rows, "[rows] = [\(rows)]")
        for r in 0..<rows { out[r] = Int32(argmaxRow(x.baseAddress! + r * cols, count: cols)) }
    }

    static func argmaxRow(_ x: UnsafePointer<Float>, count: Int) -> Int {
        var best = 0
        for i in 1..<max(count, 1) where x[i] > x[best] { best = i }
        return best
    }

    /// The distribution one row of `logits [vocab]` is sampled from, into `probabilities [vocab]` (zeros for the
    /// tokens cut), as Hugging Face's warpers: logits / `temperature`; keep the `topK` largest and any tied with the
    /// k-th (0 = all); softmax; keep the largest probabilities (descending, ties to the lower index) while the sum
    /// before each is < `topP`; renormalize. Temperature 0: all mass on the argmax. O(vocab·log vocab).
    public static func samplingProbabilities(logits: UnsafeBufferPointer<Float>,
                                             probabilities: UnsafeMutableBufferPointer<Float>,
                                             temperature: Float, topK: Int, topP: Float) throws {
        try OpCheck.sampling(temperature: Double(temperature), topK: topK, topP: Double(topP))
        try OpCheck.value("logits", !logits.isEmpty, "at least one token", "0")
        try OpCheck.count("probabilities", probabilities.count, logits.count, "[vocab] = [\(logits.count)]")
        let (n, p) = (logits.count, probabilities.baseAddress!)
        if temperature == 0 {
            p.initialize(repeating: 0, count: n)
            p[argmaxRow(logits.baseAddress!, count: n)] = 1
            return
        }
        for i in 0..<n { p[i] = logits[i] / temperature }
        if topK > 0 && topK < n {
            let kth = kthLargest(p, count: n, k: topK)
            for i in 0..<n where p[i] < kth { p[i] = -.infinity }
        }
        softmaxRow(p, p, count: n)
        guard topP < 1 else { return }
        // A token below `floor` comes after every token at or above it, so it is cut once their mass reaches topP (a
        // margin covers the float sums' order): try high floors first, so that usually only a few tokens are sorted.
        let maxP = VectorMath.max(p, count: n)
        var candidates: [Int] = []
        for floor in [maxP * 1e-3, maxP * 1e-6, 0] {
            var mass: Float = 0
            for i in 0..<n where p[i] >= floor { mass += p[i] }
            if floor == 0 || mass >= topP + 1e-4 {
                candidates = (0..<n).filter { p[$0] >= floor && p[$0] > 0 }
                break
            }
        }
        let order = candidates.sorted { p[$0] > p[$1] || (p[$0] == p[$1] && $0 < $1) }
        var before: Float = 0, cut = order.count
        for (rank, i) in order.enumerated() {
            if before >= topP { cut = rank; break }
            before += p[i]
        }
        let kept = order[..<cut].map { ($0, p[$0] / before) }
        p.initialize(repeating: 0, count: n)
        for (i, q) in kept { p[i] = q }
    }

    /// The k-th largest of `x[0..<count]` (1 <= k < count): a descending buffer of the largest seen, O(count) for
    /// most inputs and k <= 256 (O(count·k) at worst); larger k sorts. NaN is skipped.
    static func kthLargest(_ x: UnsafePointer<Float>, count n: Int, k: Int) -> Float {
        if k > 256 {
            let sorted = UnsafeBufferPointer(start: x, count: n).filter { !$0.isNaN }.sorted(by: >)
            return sorted.count >= k ? sorted[k - 1] : -.infinity
        }
        var top: [Float] = []
        top.reserveCapacity(k + 1)
        for i in 0..<n {
            let v = x[i]
            if top.count == k { if !(v > top[k - 1]) { continue }; top.removeLast() } else if v.isNaN { continue }
            var j = top.count
            top.append(v)
            while j > 0 && top[j - 1] < v { top[j] = top[j - 1]; j -= 1 }
            top[j] = v
        }
        return top.count == k ? top[k - 1] : -.infinity  // fewer than k non-NaN values: keep them all
    }

    /// The uniform draws `sample` reads, one per row from `random` (none at temperature 0), the same on every device. O(rows).
    public static func draws(rows: Int, temperature: Float, random: inout SeededRandom) -> [Float] {
        temperature == 0 ? [] : (0..<rows).map { _ in Float(random.nextUnit()) }
    }

    /// Samples one token per row of `logits [rows, vocab]` into `tokens [rows]` from `samplingProbabilities`, with
    /// the row's draw from `draws(rows:temperature:random:)` (none at temperature 0, which is argmax): the first token
    /// in index order whose cumulative probability exceeds it. The same seed gives the same tokens on every machine.
    /// O(rows·vocab·log vocab).
    public static func sample(logits: UnsafeBufferPointer<Float>, tokens: UnsafeMutableBufferPointer<Int32>,
                              rows: Int, vocab: Int, temperature: Float, topK: Int = 0, topP: Float = 1,
                              random: inout SeededRandom) throws {
        let uniforms = draws(rows: rows, temperature: temperature, random: &random)
        try uniforms.withUnsafeBufferPointer {
            try sample(logits: logits, tokens: tokens, rows: rows, vocab: vocab, temperature: temperature, topK: topK, topP: topP,
                       uniforms: temperature == 0 ? nil : $0)
        }
    }

    /// `sample` with the draws given: `uniforms [rows]` in [0, 1) (nil at temperature 0). O(rows·vocab·log vocab).
    public static func sample(logits: UnsafeBufferPointer<Float>, tokens: UnsafeMutableBufferPointer<Int32>,
                              rows: Int, vocab: Int, temperature: Float, topK: Int = 0, topP: Float = 1,
                              uniforms: UnsafeBufferPointer<Float>?) throws {
        try checkRows(["logits": logits.count], rows: rows, dim: vocab)
        try OpCheck.value("vocab", vocab >= 1, ">= 1", "\(vocab)")
        try OpCheck.count("tokens", tokens.count, rows, "[rows] = [\(rows)]")
        if temperature != 0 { try OpCheck.count("uniforms", uniforms?.count ?? 0, rows, "[rows] = [\(rows)] draws") }
        var p = [Float](repeating: 0, count: vocab)
        for r in 0..<rows {
            let row = UnsafeBufferPointer(rebasing: logits[r * vocab..<(r + 1) * vocab])
            if temperature == 0 {
                try OpCheck.sampling(temperature: 0, topK: topK, topP: Double(topP))
                tokens[r] = Int32(argmaxRow(row.baseAddress!, count: vocab))
                continue
            }
            try p.withUnsafeMutableBufferPointer { p in
                try samplingProbabilities(logits: row, probabilities: p, temperature: temperature, topK: topK, topP: topP)
            }
            let u = uniforms![r]
            var cumulative: Float = 0, token = 0
            for i in 0..<vocab where p[i] > 0 {
                cumulative += p[i]
                token = i
                if cumulative > u { break }
            }
            tokens[r] = Int32(token)
        }
    }
}
