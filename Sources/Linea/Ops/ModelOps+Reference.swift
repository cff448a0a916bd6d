import Foundation

/// Llama 3's rotary frequency scaling (`rope_scaling` of type `llama3`): frequencies whose wavelength exceeds
/// `originalContext / lowFrequencyFactor` are divided by `factor`, those below `originalContext / highFrequencyFactor`
/// kept, and those between interpolated smoothly.
public struct RotaryScaling: Sendable, Equatable, Hashable {
    /// The slowdown of the low frequencies, and the two bounds (as fractions of the original context).
    public let factor: Double, lowFrequencyFactor: Double, highFrequencyFactor: Double
    /// The context length the model was first trained at.
    public let originalContext: Double

    /// A scaling; throws unless factor > 0 and high > low > 0 and the context > 0. O(1).
    public init(factor: Double, lowFrequencyFactor: Double, highFrequencyFactor: Double, originalContext: Double) throws {
        guard factor > 0, lowFrequencyFactor > 0, highFrequencyFactor > lowFrequencyFactor, originalContext > 0 else {
            throw LineaError.invalidArgument(argument: "rope scaling", expected: "factor > 0, high_freq_factor > low_freq_factor > 0, original context > 0",
                                             actual: "factor \(factor), low \(lowFrequencyFactor), high \(highFrequencyFactor), context \(originalContext)")
        }
        (self.factor, self.lowFrequencyFactor, self.highFrequencyFactor, self.originalContext) =
            (factor, lowFrequencyFactor, highFrequencyFactor, originalContext)
    }

    /// The scaled inverse frequency (radians per position) for the plain `frequency`. O(1).
    public func scaled(_ frequency: Double) -> Double {
        let wavelength = 2 * Double.pi / frequency
        if wavelength < originalContext / highFrequencyFactor { return frequency }
        if wavelength > originalContext / lowFrequencyFactor { return frequency / factor }
        let smooth = (originalContext / wavelength - lowFrequencyFactor) / (highFrequencyFactor - lowFrequencyFactor)
        return (1 - smooth) * frequency / factor + smooth * frequency
    }
}

/// How rotary embeddings pair the dimensions they rotate.
public enum RotaryLayout: String, Sendable, CaseIterable {
    /// Dimension `i` pairs with `i + rotaryDim/2` (Llama, Qwen: `rotate_half`).
    case halfSplit
    /// Dimension `2i` pairs with `2i + 1` (GPT-J, GLM: interleaved).
    case interleaved
}

/// Which GELU formula runs.
public enum GELUApproximation: String, Sendable, CaseIterable {
    /// `x/2 · (1 + erf(x/√2))` (torch `approximate="none"`).
    case none
    /// `x/2 · (1 + tanh(√(2/π)(x + 0.044715x³)))` (torch `approximate="tanh"`, `gelu_pytorch_tanh`).
    case tanh
}

/// Size checks shared by every op form (the CUDA launchers too): each failure names the argument.
package enum OpCheck {
    /// Throws `shapeMismatch` unless `count == expected`; `shape` describes the expected shape in words.
    package static func count(_ argument: String, _ count: Int, _ expected: Int, _ shape: @autoclosure () -> String) throws {
        if count != expected {
            throw LineaError.shapeMismatch(argument: argument, expected: "\(shape()) (\(expected) elements)",
                                           actual: "\(count) elements")
        }
    }

    /// Throws `invalidArgument` unless `ok`.
    package static func value(_ argument: String, _ ok: Bool, _ expected: @autoclosure () -> String,
                      _ actual: @autoclosure () -> String) throws {
        if !ok { throw LineaError.invalidArgument(argument: argument, expected: expected(), actual: actual()) }
    }

    /// Throws unless every size is >= 0; returns their product (throwing on overflow).
    @discardableResult
    package static func sizes(_ pairs: KeyValuePairs<String, Int>) throws -> Int {
        var product = 1
        for (name, n) in pairs {
            try value(name, n >= 0, ">= 0", "\(n)")
            let (p, overflow) = product.multipliedReportingOverflow(by: n)
            try value(name, !overflow, "a size whose element count fits in Int", "\(n)")
            product = p
        }
        return product
    }

    /// The rotary checks: `rotaryDim` even, in `2...headDim`, `theta > 0`, one position per token.
    package static func rotary(positions: Int, tokens: Int, heads: Int, headDim: Int, rotaryDim: Int, theta: Double) throws {
        try sizes(["tokens": tokens, "heads": heads, "headDim": headDim])
        try value("rotaryDim", rotaryDim >= 2 && rotaryDim <= headDim && rotaryDim % 2 == 0,
                  "an even number in 2...headDim (\(headDim))", "\(rotaryDim)")
        try value("theta", theta > 0 && theta.isFinite, "a finite base > 0", "\(theta)")
        try count("positions", positions, tokens, "[tokens] = [\(tokens)]")
    }

    /// The sampling checks: temperature >= 0, topK >= 0 (0 = off), topP in (0, 1].
    package static func sampling(temperature: Double, topK: Int, topP: Double) throws {
        try value("temperature", temperature >= 0 && temperature.isFinite, "a finite value >= 0", "\(temperature)")
        try value("topK", topK >= 0, ">= 0 (0 keeps every token)", "\(topK)")
        try value("topP", topP > 0 && topP <= 1, "a value in (0, 1]", "\(topP)")
    }
}

/// Float64 oracles for the model ops, written for clarity (plain loops, one formula each); the CPU and CUDA forms
/// are tested against them. Arrays are row-major with the sizes given.
public enum ReferenceOps {
    /// `y[m, n] = Σ_k x[m, k] · w[n, k] + bias[n]` (nn.Linear: `w` is `[n, k]`). O(m·n·k).
    public static func matmul(x: [Double], weight: [Double], bias: [Double]? = nil, m: Int, n: Int, k: Int) throws -> [Double] {
        try OpCheck.sizes(["m": m, "n": n, "k": k])
        try OpCheck.count("x", x.count, m * k, "[m, k] = [\(m), \(k)]")
        try OpCheck.count("weight", weight.count, n * k, "[n, k] = [\(n), \(k)]")
        if let bias { try OpCheck.count("bias", bias.count, n, "[n] = [\(n)]") }
        var y = [Double](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var sum = bias?[j] ?? 0
                for p in 0..<k { sum += x[i * k + p] * weight[j * k + p] }
                y[i * n + j] = sum
            }
        }
        return y
    }

    /// Rows `table[ids[i]]` of a `[vocab, dim]` table: `[ids.count, dim]`. O(ids.count·dim).
    public static func embedding(ids: [Int], table: [Double], vocab: Int, dim: Int) throws -> [Double] {
        try OpCheck.sizes(["vocab": vocab, "dim": dim])
        try OpCheck.count("table", table.count, vocab * dim, "[vocab, dim] = [\(vocab), \(dim)]")
        var out: [Double] = []
        out.reserveCapacity(ids.count * dim)
        for (i, id) in ids.enumerated() {
            try OpCheck.value("ids", id >= 0 && id < vocab, "token ids in 0..<\(vocab)", "\(id) at index \(i)")
            out += table[id * dim..<(id + 1) * dim]
        }
        return out
    }

    /// RMSNorm over the last axis of `x [rows, dim]`: `x / sqrt(mean(x²) + eps) · w` (LlamaRMSNorm), or `· (1 + w)`
    /// when `zeroCentered` (Qwen3NextRMSNorm, Gemma). O(rows·dim).
    public static func rmsNorm(x: [Double], weight: [Double], rows: Int, dim: Int, eps: Double,
                               zeroCentered: Bool = false) throws -> [Double] {
        try OpCheck.sizes(["rows": rows, "dim": dim])
        try OpCheck.count("x", x.count, rows * dim, "[rows, dim] = [\(rows), \(dim)]")
        try OpCheck.count("weight", weight.count, dim, "[dim] = [\(dim)]")
        var y = x
        for r in 0..<rows {
            let row = x[r * dim..<(r + 1) * dim]
            let inv = 1 / (row.reduce(0) { $0 + $1 * $1 } / Double(dim) + eps).squareRoot()
            for c in 0..<dim { y[r * dim + c] = x[r * dim + c] * inv * (zeroCentered ? 1 + weight[c] : weight[c]) }
        }
        return y
    }

    /// Gated RMSNorm (Qwen3NextRMSNormGated, fla's FusedRMSNormGated): `rmsNorm(x) · w · silu(gate)`, all `[rows, dim]`.
    /// O(rows·dim).
    public static func rmsNormGated(x: [Double], gate: [Double], weight: [Double], rows: Int, dim: Int,
                                    eps: Double) throws -> [Double] {
        try OpCheck.count("gate", gate.count, rows * dim, "[rows, dim] = [\(rows), \(dim)]")
        let normed = try rmsNorm(x: x, weight: weight, rows: rows, dim: dim, eps: eps)
        return zip(normed, gate).map { $0 * silu($1) }
    }

    /// L2 norm over the last axis (fla's `l2norm`): `x / sqrt(Σ x² + eps)`, eps inside the root. O(rows·dim).
    public static func l2Norm(x: [Double], rows: Int, dim: Int, eps: Double = 1e-6) throws -> [Double] {
        try OpCheck.sizes(["rows": rows, "dim": dim])
        try OpCheck.count("x", x.count, rows * dim, "[rows, dim] = [\(rows), \(dim)]")
        var y = x
        for r in 0..<rows {
            let inv = 1 / (x[r * dim..<(r + 1) * dim].reduce(0) { $0 + $1 * $1 } + eps).squareRoot()
            for c in 0..<dim { y[r * dim + c] *= inv }
        }
        return y
    }

    /// `1 / (1 + e^-x)`. O(1).
    public static func sigmoid(_ x: Double) -> Double { 1 / (1 + Foundation.exp(-x)) }
    /// `x · sigmoid(x)`. O(1).
    public static func silu(_ x: Double) -> Double { x * sigmoid(x) }
    /// GELU, exact (erf) or the tanh approximation, in forms without cancellation for negative x:
    /// `x/2 · (1 + erf(x/√2)) = x/2 · erfc(-x/√2)`, `x/2 · (1 + tanh(u)) = x · sigmoid(2u)`. O(1).
    public static func gelu(_ x: Double, approximate: GELUApproximation = .none) -> Double {
        switch approximate {
        case .none: return 0.5 * x * Foundation.erfc(-x / 2.0.squareRoot())
        case .tanh: return x * sigmoid(2 * (2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x))
        }
    }
    /// torch's softplus (beta 1, threshold 20): `x` above 20, else `log(1 + e^x)`. O(1).
    public static func softplus(_ x: Double) -> Double { x > 20 ? x : Foundation.log1p(Foundation.exp(x)) }

    /// SwiGLU `silu(gate) · up`, elementwise over equal-length arrays. O(n).
    public static func swiglu(gate: [Double], up: [Double]) throws -> [Double] {
        try OpCheck.count("up", up.count, gate.count, "the shape of gate")
        return zip(gate, up).map { silu($0) * $1 }
    }

    /// Residual add `a + b`, elementwise. O(n).
    public static func add(_ a: [Double], _ b: [Double]) throws -> [Double] {
        try OpCheck.count("b", b.count, a.count, "the shape of a")
        return zip(a, b).map { $0 + $1 }
    }

    /// Rotary embedding of `x [tokens, heads, headDim]` (a `[B, T, H, D]` tensor is `tokens = B·T`) at `positions
    /// [tokens]`: the first `rotaryDim` dims of each head rotate by `position · theta^(-2i/rotaryDim)`, the rest are
    /// copied (HF `partial_rotary_factor`). O(tokens·heads·headDim).
    public static func rotary(x: [Double], positions: [Int], tokens: Int, heads: Int, headDim: Int, rotaryDim: Int,
                              theta: Double, layout: RotaryLayout, scaling: RotaryScaling? = nil) throws -> [Double] {
        try OpCheck.rotary(positions: positions.count, tokens: tokens, heads: heads, headDim: headDim,
                           rotaryDim: rotaryDim, theta: theta)
        try OpCheck.count("x", x.count, tokens * heads * headDim, "[tokens, heads, headDim] = [\(tokens), \(heads), \(headDim)]")
        var y = x
        let half = rotaryDim / 2
        for t in 0..<tokens {
            for h in 0..<heads {
                let base = (t * heads + h) * headDim
                for i in 0..<half {
                    let plain = Foundation.pow(theta, -Double(2 * i) / Double(rotaryDim))
                    let angle = Double(positions[t]) * (scaling?.scaled(plain) ?? plain)
                    let (a, b) = layout == .halfSplit ? (base + i, base + i + half) : (base + 2 * i, base + 2 * i + 1)
                    y[a] = x[a] * Foundation.cos(angle) - x[b] * Foundation.sin(angle)
                    y[b] = x[b] * Foundation.cos(angle) + x[a] * Foundation.sin(angle)
                }
            }
        }
        return y
    }

    /// Causal depthwise conv1d, channels-last (causal-conv1d's `causal_conv1d_fn` with `initial_states` and
    /// `return_final_states`): `y[b,t,c] = bias[c] + Σ_j w[c,j] · x[b, t-(width-1)+j, c]`, where inputs before t = 0
    /// come from `state [batch, channels, width-1]` (zeros when nil); optional SiLU. Returns `y [batch, length,
    /// channels]` and the new state: the last `width-1` inputs, oldest first. O(batch·length·channels·width).
    public static func causalConv1d(x: [Double], weight: [Double], bias: [Double]?, state: [Double]?, batch: Int,
                                    length: Int, channels: Int, width: Int,
                                    silu applySiLU: Bool) throws -> (y: [Double], state: [Double]) {
        try OpCheck.sizes(["batch": batch, "length": length, "channels": channels])
        try OpCheck.value("width", (2...4).contains(width), "2...4", "\(width)")
        try OpCheck.count("x", x.count, batch * length * channels, "[batch, length, channels] = [\(batch), \(length), \(channels)]")
        try OpCheck.count("weight", weight.count, channels * width, "[channels, width] = [\(channels), \(width)]")
        if let bias { try OpCheck.count("bias", bias.count, channels, "[channels] = [\(channels)]") }
        let s = width - 1
        if let state { try OpCheck.count("state", state.count, batch * channels * s, "[batch, channels, width-1] = [\(batch), \(channels), \(s)]") }
        var y = [Double](repeating: 0, count: x.count)
        var newState = [Double](repeating: 0, count: batch * channels * s)
        for b in 0..<batch {
            for c in 0..<channels {
                // The channel's input with the carried state in front: [s + length].
                let history = (0..<s).map { state?[(b * channels + c) * s + $0] ?? 0 }
                let seq = history + (0..<length).map { x[(b * length + $0) * channels + c] }
                for t in 0..<length {
                    var sum = bias?[c] ?? 0
                    for j in 0..<width { sum += weight[c * width + j] * seq[t + j] }
                    y[(b * length + t) * channels + c] = applySiLU ? silu(sum) : sum
                }
                for j in 0..<s { newState[(b * channels + c) * s + j] = seq[length + j] }
            }
        }
        return (y, newState)
    }

    /// Softmax over the last axis of `x [rows, cols]`, max-subtracted. O(rows·cols).
    public static func softmax(x: [Double], rows: Int, cols: Int) throws -> [Double] {
        try OpCheck.sizes(["rows": rows, "cols": cols])
        try OpCheck.count("x", x.count, rows * cols, "[rows, cols] = [\(rows), \(cols)]")
        var y = x
        for r in 0..<rows {
            let row = x[r * cols..<(r + 1) * cols]
            let m = row.max() ?? 0
            let total = row.reduce(0) { $0 + Foundation.exp($1 - m) }
            for c in 0..<cols { y[r * cols + c] = Foundation.exp(x[r * cols + c] - m) / total }
        }
        return y
    }

    /// Mixture-of-experts routing (Qwen2-MoE / Qwen3-Next): softmax over `logits [rows, experts]`, the `k` largest
    /// probabilities per row (ties to the lower index, in descending order), renormalized to sum 1 when
    /// `normalize` (`norm_topk_prob`). Returns `weights [rows, k]`, `indices [rows, k]`. O(rows·experts·k).
    public static func topKRouting(logits: [Double], rows: Int, experts: Int, k: Int,
                                   normalize: Bool) throws -> (weights: [Double], indices: [Int]) {
        try OpCheck.value("k", k >= 1 && k <= experts, "1...experts (\(experts))", "\(k)")
        let p = try softmax(x: logits, rows: rows, cols: experts)
        var weights: [Double] = [], indices: [Int] = []
        for r in 0..<rows {
            let order = (0..<experts).sorted { (p[r * experts + $0], -$0) > (p[r * experts + $1], -$1) }
            let chosen = Array(order.prefix(k))
            let total = normalize ? chosen.reduce(0) { $0 + p[r * experts + $1] } : 1
            indices += chosen
            weights += chosen.map { p[r * experts + $0] / total }
        }
        return (weights, indices)
    }

    /// Index of the largest value of each row of `x [rows, cols]` (ties to the lower index). O(rows·cols).
    public static func argmax(x: [Double], rows: Int, cols: Int) throws -> [Int] {
        try OpCheck.sizes(["rows": rows, "cols": cols])
        try OpCheck.value("cols", cols >= 1, ">= 1", "\(cols)")
        try OpCheck.count("x", x.count, rows * cols, "[rows, cols] = [\(rows), \(cols)]")
        return (0..<rows).map { r in (0..<cols).reduce(0) { x[r * cols + $1] > x[r * cols + $0] ? $1 : $0 } }
    }

    /// The distribution sampling draws from, one row of `logits [vocab]`, as Hugging Face's warpers: divide by
    /// `temperature`; keep the `topK` largest logits and any tied with the k-th (0 = all); softmax; keep the
    /// largest probabilities, in descending order (ties to the lower index), while the sum before each is < `topP`
    /// (at least one); renormalize. Temperature 0 puts all mass on the argmax. O(vocab·log vocab).
    public static func samplingDistribution(logits: [Double], temperature: Double, topK: Int,
                                            topP: Double) throws -> [Double] {
        try OpCheck.sampling(temperature: temperature, topK: topK, topP: topP)
        try OpCheck.value("logits", !logits.isEmpty, "at least one token", "0")
        var p = [Double](repeating: 0, count: logits.count)
        if temperature == 0 {
            p[try argmax(x: logits, rows: 1, cols: logits.count)[0]] = 1
            return p
        }
        var scaled = logits.map { $0 / temperature }
        if topK > 0 && topK < logits.count {
            let kth = scaled.sorted(by: >)[topK - 1]
            scaled = scaled.map { $0 < kth ? -.infinity : $0 }
        }
        let probs = try softmax(x: scaled, rows: 1, cols: scaled.count)
        let order = probs.indices.sorted { (probs[$0], -$0) > (probs[$1], -$1) }
        var before = 0.0, kept = 0.0
        for i in order where probs[i] > 0 && before < topP {
            p[i] = probs[i]
            before += probs[i]
            kept += probs[i]
        }
        return p.map { $0 / kept }
    }

    /// The token a uniform draw `u` in [0, 1) picks from `distribution`: the first index whose cumulative sum,
    /// in index order, exceeds `u · Σ distribution`. O(n).
    public static func sample(distribution: [Double], u: Double) -> Int {
        let target = u * distribution.reduce(0, +)
        var cumulative = 0.0
        var last = 0
        for (i, p) in distribution.enumerated() where p > 0 {
            cumulative += p
            last = i
            if cumulative > target { return i }
        }
        return last
    }
}
