import Foundation

extension CPUOps {
    /// Rotary embedding of `x [tokens, heads, headDim]` (`[B, T, H, D]` is `tokens = B·T`) at `positions [tokens]`
    /// into `out`: the first `rotaryDim` dims of each head rotate by `position · theta^(-2i/rotaryDim)` (angles in
    /// Float64, so large positions keep their precision), pairs per `layout`; the rest are copied.
    /// O(tokens·heads·headDim).
    public static func rotary(x: UnsafeBufferPointer<Float>, positions: UnsafeBufferPointer<Int>,
                              out: UnsafeMutableBufferPointer<Float>, tokens: Int, heads: Int, headDim: Int,
                              rotaryDim: Int, theta: Double, layout: RotaryLayout, scaling: RotaryScaling? = nil) throws {
        try OpCheck.rotary(positions: positions.count, tokens: tokens, heads: heads, headDim: headDim,
                           rotaryDim: rotaryDim, theta: theta)
        let shape = "[tokens, heads, headDim] = [\(tokens), \(heads), \(headDim)]"
        try OpCheck.count("x", x.count, tokens * heads * headDim, shape)
        try OpCheck.count("out", out.count, tokens * heads * headDim, shape)
        let half = rotaryDim / 2
        let frequencies = (0..<half).map { i in
            let plain = Foundation.pow(theta, -Double(2 * i) / Double(rotaryDim))
            return scaling?.scaled(plain) ?? plain
        }
        forRows(tokens, width: heads * headDim) { range in
            var cos = [Float](repeating: 0, count: half), sin = cos
            for t in range {
                for i in 0..<half {
                    let angle = Double(positions[t]) * frequencies[i]
                    cos[i] = Float(Foundation.cos(angle))
                    sin[i] = Float(Foundation.sin(angle))
                }
                for h in 0..<heads {
                    let base = (t * heads + h) * headDim
                    for i in 0..<half {
                        let (a, b) = layout == .halfSplit ? (base + i, base + i + half) : (base + 2 * i, base + 2 * i + 1)
                        let (xa, xb) = (x[a], x[b])
                        out[a] = xa * cos[i] - xb * sin[i]
                        out[b] = xb * cos[i] + xa * sin[i]
                    }
                    for c in rotaryDim..<headDim { out[base + c] = x[base + c] }
                }
            }
        }
    }

    /// Causal depthwise conv1d, channels-last: `out[b,t,c] = act(bias[c] + Σ_j w[c,j] · x[b, t-(width-1)+j, c])`
    /// with `x, out [batch, length, channels]`, `weight [channels, width]`, width 2...4, SiLU when `silu`. Inputs
    /// before t = 0 come from `state [batch, channels, width-1]` (zeros when nil), which is then replaced by the last
    /// `width-1` inputs, oldest first (causal-conv1d's initial/final states; one token is `causal_conv1d_update`).
    /// `out` must not alias `x`. With `parts` (widths summing to `channels`), `out` holds the channels split in order
    /// into packed `[batch, length, parts[i]]` blocks one after another. O(batch·length·channels·width).
    public static func causalConv1d(x: UnsafeBufferPointer<Float>, weight: UnsafeBufferPointer<Float>,
                                    bias: UnsafeBufferPointer<Float>? = nil, state: UnsafeMutableBufferPointer<Float>?,
                                    out: UnsafeMutableBufferPointer<Float>, batch: Int, length: Int, channels: Int,
                                    width: Int, silu: Bool, parts: [Int]? = nil) throws {
        try OpCheck.sizes(["batch": batch, "length": length, "channels": channels])
        try OpCheck.value("width", (2...4).contains(width), "2...4", "\(width)")
        let shape = "[batch, length, channels] = [\(batch), \(length), \(channels)]"
        try OpCheck.count("x", x.count, batch * length * channels, shape)
        try OpCheck.count("out", out.count, batch * length * channels, shape)
        try OpCheck.count("weight", weight.count, channels * width, "[channels, width] = [\(channels), \(width)]")
        if let bias { try OpCheck.count("bias", bias.count, channels, "[channels] = [\(channels)]") }
        let s = width - 1
        if let state {
            try OpCheck.count("state", state.count, batch * channels * s,
                              "[batch, channels, width-1] = [\(batch), \(channels), \(s)]")
        }
        let parts = parts ?? [channels]
        try OpCheck.value("parts", parts.allSatisfy { $0 >= 0 } && parts.reduce(0, +) == channels, "widths >= 0 summing to \(channels)", "\(parts)")
        if batch == 0 || channels == 0 { return }
        // Each part: its first channel, its width and where its block starts in `out`.
        var blocks: [(first: Int, width: Int, base: Int)] = [], first = 0
        for w in parts { blocks.append((first, w, batch * length * first)); first += w }
        if length == 1 {
            singleTokenConv(x: x, weight: weight, bias: bias, state: state, out: out, batch: batch, channels: channels,
                            width: width, silu: silu, blocks: blocks)
            return
        }
        // Taps as [width, channels], so the inner loop runs over contiguous channels.
        var taps = [Float](repeating: 0, count: width * channels)
        for c in 0..<channels { for j in 0..<width { taps[j * channels + c] = weight[c * width + j] } }
        taps.withUnsafeBufferPointer { taps in
            let (xs, tap, biases) = (x.baseAddress!, taps.baseAddress!, bias?.baseAddress)
            forRows(batch * length, width: channels * width) { range in
                for row in range {
                    let (b, t) = (row / length, row % length)
                    // Rows from t = width-1 on read x only: the window's first input, then one row further per tap.
                    let window = t >= s ? xs + (row - s) * channels : nil
                    for block in blocks {
                        // Channel c of this part lands at y + c.
                        let y = out.baseAddress! + block.base + row * block.width - block.first
                        // Channels c ..< c + n of the part.
                        forVectors(block.width) { offset, n in
                            let c = block.first + offset
                            var acc = biases.map { load8($0 + c, n) } ?? SIMD8<Float>()
                            if let window {
                                for j in 0..<width { acc.addProduct(load8(tap + j * channels + c, n), load8(window + j * channels + c, n)) }
                            } else {
                                for j in 0..<width {
                                    let time = t - s + j
                                    var input = SIMD8<Float>()
                                    if time >= 0 {
                                        input = load8(xs + (b * length + time) * channels + c, n)
                                    } else if let state {
                                        for l in 0..<n { input[l] = state[(b * channels + c + l) * s + s + time] }
                                    }
                                    acc.addProduct(load8(tap + j * channels + c, n), input)
                                }
                            }
                            store8(silu ? acc * sigmoid8(acc) : acc, y + c, n)
                        }
                    }
                }
            }
        }
        // The new state: the last s inputs of [state, x]. Ascending j reads old entries at or after j, so in place.
        guard let state else { return }
        for b in 0..<batch {
            for c in 0..<channels {
                for j in 0..<s {
                    let time = length - s + j
                    state[(b * channels + c) * s + j] = time >= 0
                        ? x[(b * length + time) * channels + c] : state[(b * channels + c) * s + s + time]
                }
            }
        }
    }

    /// `causalConv1d` for one token per sequence (a decode step): each channel's window is its state row, then its
    /// input, read where they lie (the general form transposes the taps and gathers the state across channels, which
    /// cost more than the step's arithmetic); the state shifts by one in place. O(batch·channels·width).
    private static func singleTokenConv(x: UnsafeBufferPointer<Float>, weight: UnsafeBufferPointer<Float>,
                                        bias: UnsafeBufferPointer<Float>?, state: UnsafeMutableBufferPointer<Float>?,
                                        out: UnsafeMutableBufferPointer<Float>, batch: Int, channels: Int, width: Int, silu: Bool,
                                        blocks: [(first: Int, width: Int, base: Int)]) {
        let s = width - 1
        forRows(batch, width: channels * width) { range in
            for b in range {
                for block in blocks {
                    let y = out.baseAddress! + block.base + b * block.width - block.first
                    for c in stride(from: block.first, to: block.first + block.width, by: 8) {
                        let n = min(8, block.first + block.width - c)
                        var acc = SIMD8<Float>()
                        for l in 0..<n {
                            let (channel, taps) = (c + l, weight.baseAddress! + (c + l) * width)
                            let input = x[b * channels + channel]
                            var sum = bias?[channel] ?? 0
                            if let state {
                                let row = state.baseAddress! + (b * channels + channel) * s
                                for j in 0..<s { sum.addProduct(taps[j], row[j]) }
                                for j in 0..<(s - 1) { row[j] = row[j + 1] }
                                row[s - 1] = input
                            }
                            sum.addProduct(taps[s], input)
                            acc[l] = sum
                        }
                        store8(silu ? acc * sigmoid8(acc) : acc, y + c, n)
                    }
                }
            }
        }
    }
}
