extension CPUBackend {
    /// Runs a model op with `CPUOps`: float inputs read as Float32 (bf16 weights of a matmul or an embedding read
    /// in place), outputs computed in Float32 and stored in their dtype. O(inputs) conversions plus the op.
    func modelOp(_ c: ModelOpCall) throws {
        // Packed f32 host tensors (activations, f32 weights) are read in place; others are converted once.
        func withFloats<R>(_ name: String, _ body: (UnsafeBufferPointer<Float>) throws -> R) throws -> R {
            let t = c[name]!
            if t.device == .cpu, t.dtype == .float32, t.isContiguous { return try body(t.floats) }
            return try t.host().scalars.withUnsafeBufferPointer(body)
        }
        let out = c["out"]
        let x = c.primary.tensor
        let width = x.shape.last ?? 1, rows = x.count / max(width, 1)
        // A packed f32 output is written in place; others through a Float32 buffer stored in their dtype after.
        let direct = out.map { $0.device == .cpu && $0.dtype == .float32 && $0.isContiguous } ?? false
        var result = [Float](repeating: 0, count: direct ? 0 : out?.count ?? 0)
        try result.withUnsafeMutableBufferPointer { buffer in
            let o = direct ? out!.mutableFloats : buffer
            switch c.kind {
            case .matmul:
                let (w, n) = (c["weight"]!, c["weight"]!.shape[0])
                let bias = try c["bias"].map { try $0.host().scalars }
                try withFloats("x") { xp in try withOptional(bias) { bp in
                    if let bits = packedBF16(w) {
                        try CPUOps.matmul(x: xp, weightBF16: bits, bias: bp, out: o, m: rows, n: n, k: width)
                    } else {
                        try withFloats("weight") { try CPUOps.matmul(x: xp, weight: $0, bias: bp, out: o, m: rows, n: n, k: width) }
                    }
                } }
            case .embedding:
                let table = c["table"]!
                let ids = try c["ids"]!.hostIntegers()
                try ids.withUnsafeBufferPointer { ip in
                    if let bits = packedBF16(table) {
                        try CPUOps.embedding(ids: ip, tableBF16: bits, out: o, vocab: table.shape[0], dim: table.shape[1])
                    } else {
                        try withFloats("table") {
                            try CPUOps.embedding(ids: ip, table: $0, out: o, vocab: table.shape[0], dim: table.shape[1])
                        }
                    }
                }
            case let .rmsNorm(eps, zeroCentered):
                try withFloats("x") { xp in try withFloats("weight") {
                    try CPUOps.rmsNorm(x: xp, weight: $0, out: o, rows: rows, dim: width, eps: eps, zeroCentered: zeroCentered)
                } }
            case let .rmsNormGated(eps):
                try withFloats("x") { xp in try withFloats("gate") { gp in
                    try withFloats("weight") {
                        try CPUOps.rmsNormGated(x: xp, gate: gp, weight: $0, out: o, rows: rows, dim: width, eps: eps)
                    }
                } }
            case let .l2Norm(eps):
                try withFloats("x") { try CPUOps.l2Norm(x: $0, out: o, rows: rows, dim: width, eps: eps) }
            case .silu: try withFloats("x") { try CPUOps.silu(x: $0, out: o) }
            case .sigmoid: try withFloats("x") { try CPUOps.sigmoid(x: $0, out: o) }
            case .softplus: try withFloats("x") { try CPUOps.softplus(x: $0, out: o) }
            case let .gelu(approximate): try withFloats("x") { try CPUOps.gelu(x: $0, out: o, approximate: approximate) }
            case .softmax: try withFloats("x") { try CPUOps.softmax(x: $0, out: o, rows: rows, cols: width) }
            case .swiglu:
                try withFloats("gate") { g in try withFloats("up") { try CPUOps.swiglu(gate: g, up: $0, out: o) } }
            case .swigluHalves:
                try withFloats("x") { try CPUOps.swiglu(halves: $0, out: o, rows: rows, width: width / 2) }
            case .add, .mul, .div:
                let inner = Ops.broadcastInner(x.shape, c["b"]!.shape) ?? 1
                try withFloats("a") { a in try withFloats("b") {
                    switch c.kind {
                    case .add: try CPUOps.add(a, $0, out: o, inner: inner)
                    case .mul: try CPUOps.mul(a, $0, out: o, inner: inner)
                    default: try CPUOps.div(a, $0, out: o, inner: inner)
                    }
                } }
            case .exp: try withFloats("x") { try CPUOps.exp(x: $0, out: o) }
            case .cast: try withFloats("x") { if let source = $0.baseAddress { o.baseAddress!.update(from: source, count: $0.count) } }
            case .indexAdd:
                // `o` is the target itself (packed f32, checked by Ops.indexAdd): added to in place.
                let (ids, scale) = (try c["rows"]!.hostIntegers(), try c["weights"].map { try $0.host().scalars })
                try withFloats("values") { try CPUOps.indexAdd(into: o, rows: ids, values: $0, weights: scale) }
            case let .clamp(low, high): try withFloats("x") { try CPUOps.clamp(x: $0, out: o, low: low, high: high) }
            case .transposeLastTwo:
                let (r, cols) = (x.shape[x.rank - 2], width)
                try withFloats("x") { try CPUOps.transposeLastTwo(x: $0, out: o, batches: x.count / max(r * cols, 1), rows: r, cols: cols) }
            case let .rotary(theta, rotaryDim, layout, scaling):
                let (heads, headDim) = (x.shape[x.rank - 2], width)
                try c["positions"]!.hostIntegers().withUnsafeBufferPointer { pp in try withFloats("x") {
                    try CPUOps.rotary(x: $0, positions: pp, out: o, tokens: pp.count, heads: heads, headDim: headDim,
                                      rotaryDim: rotaryDim, theta: Double(theta), layout: layout, scaling: scaling)
                } }
            case let .causalConv1d(silu, parts):
                let (w, stateTensor) = (c["weight"]!, c["state"])
                // A packed f32 host state (a decode cache's) is updated in place; others through a host copy.
                let inPlace = stateTensor.map { $0.device == .cpu && $0.dtype == .float32 && $0.isContiguous } ?? false
                var state = inPlace ? nil : try stateTensor?.host().scalars
                let bias = try c["bias"].map { try $0.host().scalars }
                try withFloats("x") { xp in try withFloats("weight") { wp in try withOptional(bias) { bp in
                    try withOptionalMutable(&state) { sp in
                        try CPUOps.causalConv1d(x: xp, weight: wp, bias: bp, state: inPlace ? stateTensor!.mutableFloats : sp, out: o,
                                                batch: x.shape[0], length: x.shape[1], channels: x.shape[2], width: w.shape[1], silu: silu, parts: parts)
                    }
                } } }
                if let stateTensor, let state { try stateTensor.copy(from: Tensor(uncheckedShape: stateTensor.shape, scalars: state)) }
            case let .topKRouting(k, normalize):
                let (weights, indices) = (c["weights"]!, c["indices"]!)
                var picked = [Int32](repeating: 0, count: indices.count), scores = [Float](repeating: 0, count: weights.count)
                try withFloats("x") { lp in try scores.withUnsafeMutableBufferPointer { wp in try picked.withUnsafeMutableBufferPointer {
                    try CPUOps.topKRouting(logits: lp, weights: wp, indices: $0, rows: rows, experts: width, k: k, normalize: normalize)
                } } }
                try weights.copy(from: Tensor(uncheckedShape: weights.shape, scalars: scores))
                try store(picked, into: indices)
            case .argmax:
                var picked = [Int32](repeating: 0, count: rows)
                try withFloats("x") { xp in try picked.withUnsafeMutableBufferPointer {
                    try CPUOps.argmax(x: xp, out: $0, rows: rows, cols: width)
                } }
                try store(picked, into: out!)
            case let .sample(temperature, topK, topP):
                var picked = [Int32](repeating: 0, count: rows)
                let uniforms = try c["uniforms"].map { try $0.host().scalars }
                try withFloats("x") { xp in try picked.withUnsafeMutableBufferPointer { tp in try withOptional(uniforms) {
                    try CPUOps.sample(logits: xp, tokens: tp, rows: rows, vocab: width, temperature: temperature, topK: topK, topP: topP, uniforms: $0)
                } } }
                try store(picked, into: out!)
            }
        }
        if let out, out.dtype.isFloatingPoint, !direct {
            try out.copy(from: Tensor(uncheckedShape: out.shape, scalars: result))
        }
    }

    /// The bf16 bits of a packed bf16 tensor in host memory, read in place; nil for other tensors. O(1).
    private func packedBF16(_ x: DeviceTensor) -> UnsafeBufferPointer<UInt16>? {
        guard x.dtype == .bfloat16, x.isContiguous, let p = UnsafePointer<UInt16>(bitPattern: x.address) else { return nil }
        return UnsafeBufferPointer(start: p, count: x.count)
    }

    /// Writes i32 values into a packed i32 host tensor.
    private func store(_ values: [Int32], into target: DeviceTensor) throws {
        let host = try DeviceTensor.zeros(target.shape, dtype: .int32)
        values.withUnsafeBytes { bytes in
            if let base = bytes.baseAddress { host.storage.hostPointer!.copyMemory(from: base, byteCount: bytes.count) }
        }
        try target.copy(from: host)
    }
}

/// Calls `body` with a buffer over `values`, or nil when there are none.
private func withOptional<R>(_ values: [Float]?, _ body: (UnsafeBufferPointer<Float>?) throws -> R) rethrows -> R {
    guard let values else { return try body(nil) }
    return try values.withUnsafeBufferPointer { try body($0) }
}

/// Calls `body` with a mutable buffer over `values`, or nil when there are none.
private func withOptionalMutable<R>(_ values: inout [Float]?, _ body: (UnsafeMutableBufferPointer<Float>?) throws -> R) rethrows -> R {
    guard values != nil else { return try body(nil) }
    return try values!.withUnsafeMutableBufferPointer { try body($0) }
}
