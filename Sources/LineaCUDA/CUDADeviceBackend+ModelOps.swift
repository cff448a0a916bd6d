import Linea

extension CUDADeviceBackend {
    /// The model-op kernels read one float dtype (f32, bf16, f16) for the float inputs of a call: others are converted
    /// to the primary input's dtype on the device first (a matmul's activations go to its weight's dtype), except a
    /// conv state, updated in place, and the weights the norm and conv kernels read in their own dtype. I32 positions
    /// for rotary, i32 or i64 ids. O(1).
    func modelOpSupport(_ c: ModelOpCall) -> Support {
        let x = c.primary.tensor
        if let state = c["state"], state.dtype != x.dtype {
            return .unsupported("state has dtype \(state.dtype.shortName), \(c.primary.name) \(x.dtype.shortName); the GPU conv updates its state in place in the input dtype")
        }
        guard CUDAUpload.inputTypes.contains(x.dtype) else { return .unsupported("dtype \(x.dtype.shortName); the GPU op kernels take f32, bf16, f16") }
        if c.kind == .indexAdd, c["rows"]!.dtype != .int32 {
            return .unsupported("rows are \(c["rows"]!.dtype.shortName); the GPU index-add kernel reads i32 rows")
        }
        if case .rotary = c.kind, c["positions"]!.dtype != .int32 {
            return .unsupported("positions are \(c["positions"]!.dtype.shortName); the GPU rotary kernel reads i32 positions")
        }
        if let out = c["out"], out.dtype != x.dtype, out.dtype.isFloatingPoint, c.kind != .cast {
            // A matmul writes f32 from any input; norms and SwiGLU round f32 rows once into a 16-bit matmul input.
            let narrowing: Bool = switch c.kind {
            case .rmsNorm, .rmsNormGated, .swigluHalves: x.dtype == .float32
            default: false
            }
            guard c.kind == .matmul && out.dtype == .float32 || narrowing else {
                return .unsupported("out has dtype \(out.dtype.shortName), x \(x.dtype.shortName); the GPU kernels write x's dtype (a matmul also f32, a norm or SwiGLU of f32 also bf16 or f16)")
            }
        }
        return .supported
    }

    /// Runs a model op with `CUDAModelOps` / cuBLAS on the tensors' device buffers (queued; the embedding waits to
    /// check its ids). O(1) launches.
    func modelOp(_ c: ModelOpCall) throws {
        let x = c.primary.tensor
        let (dtype, width) = (x.dtype, x.shape.last ?? 1)
        let rows = x.count / max(width, 1)
        let out = c["out"].map { buffer($0) }
        // Float inputs in another dtype than x, converted on the device (freed in stream order after the op); a norm's
        // or conv's weight (and a conv's bias in the weight's dtype) is read as stored.
        let weightDType: DType? = switch c.kind {
        case .rmsNorm, .rmsNormGated: c["weight"]?.dtype
        case .causalConv1d where c["bias"] == nil || c["bias"]!.dtype == c["weight"]!.dtype: c["weight"]!.dtype
        default: nil
        }
        func cast(_ t: DeviceTensor?, to target: DType) throws -> DeviceTensor? {
            guard let t, t.dtype != target else { return t }
            let copy = try DeviceTensor.uninitialized(t.shape, dtype: target, on: device)
            try CUDAModelOps.convert(x: buffer(t), from: t.dtype, out: buffer(copy), to: target, count: t.count)
            return copy
        }
        var converted: [String: DeviceTensor] = [:]
        for (name, t) in c.inputs where t.dtype.isFloatingPoint && t.dtype != dtype && !["uniforms", "state"].contains(name)
            && !(c.kind == .matmul && ["weight", "bias"].contains(name)) && !(weightDType != nil && ["weight", "bias"].contains(name)) {
            converted[name] = try cast(t, to: dtype)
        }
        defer { withExtendedLifetime(converted) {} }
        func input(_ name: String) -> CUDABuffer? { (converted[name] ?? c[name]).map { buffer($0) } }
        switch c.kind {
        case .matmul:
            // Activations in the weight's dtype, the bias in the output's; both freed in stream order after the product.
            let (weight, outputDType) = (c["weight"]!, c["out"]!.dtype)
            let (activations, bias) = (try cast(x, to: weight.dtype)!, try cast(c["bias"], to: outputDType))
            try CUDAModelOps.matmul(x: buffer(activations), weight: buffer(weight), bias: bias.map { buffer($0) }, out: out!, m: rows,
                                    n: weight.shape[0], k: width, dtype: weight.dtype, outputDType: outputDType)
            withExtendedLifetime((activations, bias)) {}
        case .embedding:
            let (ids, table) = (c["ids"]!, c["table"]!)
            try CUDAModelOps.embedding(ids: buffer(ids), idType: ids.dtype == .int32 ? .int32 : .int64, table: buffer(table), out: out!,
                                       count: ids.count, vocab: table.shape[0], dim: table.shape[1], dtype: dtype)
        case let .rmsNorm(eps, zeroCentered):
            try CUDAModelOps.rmsNorm(x: buffer(x), weight: input("weight")!, out: out!, rows: rows, dim: width, eps: eps,
                                     zeroCentered: zeroCentered, dtype: dtype, weightDType: weightDType, outputDType: c["out"]!.dtype)
        case let .rmsNormGated(eps):
            try CUDAModelOps.rmsNormGated(x: buffer(x), gate: input("gate")!, weight: input("weight")!, out: out!, rows: rows, dim: width,
                                          eps: eps, dtype: dtype, weightDType: weightDType, outputDType: c["out"]!.dtype)
        case let .l2Norm(eps): try CUDAModelOps.l2Norm(x: buffer(x), out: out!, rows: rows, dim: width, eps: eps, dtype: dtype)
        case .silu: try CUDAModelOps.silu(x: buffer(x), out: out!, count: x.count, dtype: dtype)
        case .sigmoid: try CUDAModelOps.sigmoid(x: buffer(x), out: out!, count: x.count, dtype: dtype)
        case .softplus: try CUDAModelOps.softplus(x: buffer(x), out: out!, count: x.count, dtype: dtype)
        case .exp: try CUDAModelOps.unary(6, x: buffer(x), out: out!, count: x.count, dtype: dtype)
        case let .gelu(approximate): try CUDAModelOps.gelu(x: buffer(x), out: out!, count: x.count, approximate: approximate, dtype: dtype)
        case .softmax: try CUDAModelOps.softmax(x: buffer(x), out: out!, rows: rows, cols: width, dtype: dtype)
        case .swiglu: try CUDAModelOps.swiglu(gate: buffer(x), up: input("up")!, out: out!, count: x.count, dtype: dtype)
        case .swigluHalves:
            try CUDAModelOps.swiglu(halves: buffer(x), out: out!, rows: rows, width: width / 2, dtype: dtype, outputDType: c["out"]!.dtype)
        case .add, .mul, .div:
            let b = c["b"]!
            try CUDAModelOps.binary(c.kind == .add ? 1 : c.kind == .mul ? 2 : 3, ("a", "b"), a: buffer(x), b: input("b")!, out: out!, count: x.count,
                                    repeating: b.count, inner: Ops.broadcastInner(x.shape, b.shape) ?? 1, dtype: dtype)
        case .indexAdd:
            let target = c["out"]!
            try CUDAModelOps.indexAdd(values: buffer(x), rows: input("rows")!, weights: input("weights"), target: out!, count: c["rows"]!.count,
                                      dim: target.shape[1], targetRows: target.shape[0])
        case .transposeLastTwo:
            let r = x.shape[x.rank - 2]
            try CUDAModelOps.transposeLastTwo(x: buffer(x), out: out!, batches: x.count / max(r * width, 1), rows: r, cols: width, dtype: dtype)
        case .cast: try CUDAModelOps.convert(x: buffer(x), from: dtype, out: out!, to: c["out"]!.dtype, count: x.count)
        case let .clamp(low, high): try CUDAModelOps.clamp(x: buffer(x), out: out!, count: x.count, low: low, high: high, dtype: dtype)
        case let .rotary(theta, rotaryDim, layout, scaling):
            let tokens = c["positions"]!.count
            try CUDAModelOps.rotary(x: buffer(x), positions: input("positions")!, out: out!, tokens: tokens, heads: x.shape[x.rank - 2],
                                    headDim: width, rotaryDim: rotaryDim, theta: theta, layout: layout, scaling: scaling, dtype: dtype)
        case let .causalConv1d(silu, parts):
            try CUDAModelOps.causalConv1d(x: buffer(x), weight: input("weight")!, bias: input("bias"), state: input("state"), out: out!,
                                          batch: x.shape[0], length: x.shape[1], channels: x.shape[2], width: c["weight"]!.shape[1],
                                          silu: silu, parts: parts, dtype: dtype, weightDType: weightDType)
        case let .topKRouting(k, normalize):
            try CUDAModelOps.topKRouting(logits: buffer(x), weights: buffer(c["weights"]!), indices: buffer(c["indices"]!), rows: rows,
                                         experts: width, k: k, normalize: normalize, dtype: dtype)
        case .argmax: try CUDAModelOps.argmax(x: buffer(x), out: out!, rows: rows, cols: width, dtype: dtype)
        case let .sample(temperature, topK, topP):
            try CUDAModelOps.sample(logits: buffer(x), uniforms: input("uniforms"), tokens: out!, rows: rows, vocab: width,
                                    temperature: temperature, topK: topK, topP: topP, dtype: dtype)
        }
    }
}
