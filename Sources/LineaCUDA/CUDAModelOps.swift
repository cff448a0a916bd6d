import Foundation
import Linea

/// The model ops on device buffers (model_ops.cu; `CPUOps` semantics): each queues kernels on the buffers' context
/// stream without transfers (except where said), checks sizes against the buffers' byte counts and throws
/// `LineaError` naming the argument. Float tensors of one call share `dtype` (f32, bf16 or f16), fp32 compute.
package enum CUDAModelOps {
    /// Token id element types.
    public enum IDType: Sendable {
        /// 32-bit ids (`torch.int32`).
        case int32
        /// 64-bit ids (`torch.long`, what tokenizers hand to PyTorch).
        case int64
    }

    static let threads = 256

    /// Throws unless `buffer` holds at least `bytes` bytes.
    static func expect(_ name: String, _ buffer: CUDABuffer, bytes: Int) throws {
        if buffer.byteCount < bytes {
            throw LineaError.shapeMismatch(argument: name, expected: ">= \(bytes) bytes", actual: "\(buffer.byteCount) bytes")
        }
    }

    /// Throws unless every count fits the kernels' 32-bit int arguments.
    static func int32(_ pairs: KeyValuePairs<String, Int>) throws {
        for (name, v) in pairs { try OpCheck.value(name, v >= 0 && v <= Int(Int32.max), "0...\(Int32.max)", "\(v)") }
    }

    /// Queues `name`'s suffixed entry (`<name>_<f32|bf16|f16>`) of model_ops.cu.
    static func launch(_ name: String, _ dtype: DType, on context: CUDAContext, grid: Int, gridY: Int = 1,
                       block: Int = threads, sharedBytes: Int = 0, _ arguments: [CUDAKernelArgument]) throws {
        let entry = "\(name)_\(try CUDAUpload.suffix(dtype))"
        let f = try context.function(source: CUDAKernels.modelOps, name: entry)
        try context.launch(f, grid: (grid, gridY, 1), block: (block, 1, 1), sharedBytes: sharedBytes, arguments: arguments)
    }

    /// Blocks for a grid-stride loop over `n` elements.
    static func blocks(_ n: Int) -> Int { min((n + threads - 1) / threads, 8192) }

    static func address(_ b: CUDABuffer?) -> CUDAKernelArgument { .pointer(b?.address ?? 0) }

    // MARK: matmul, embedding

    /// `out[m, n] = x[m, k] · weight[n, k]^T + bias[n]` through cuBLAS (`CUBLAS.linear`), x and weight in `dtype`,
    /// out and bias in `outputDType`, fp32 accumulation. O(m·n·k) on the device.
    public static func matmul(x: CUDABuffer, weight: CUDABuffer, bias: CUDABuffer? = nil, out: CUDABuffer,
                              m: Int, n: Int, k: Int, dtype: DType, outputDType: DType = .float32) throws {
        try int32(["m": m, "n": n, "k": k, "out": m * n])
        if let bias { try expect("bias", bias, bytes: n * outputDType.byteCount) }
        if let bias, m > 0, n > 0 {
            // out = bias first, then the product added in fp32 by cuBLAS's epilogue: one rounding of x·W + b into a 16-bit
            // out, as the CPU rounds (adding the bias to a rounded product rounded twice: 3e-3 rel-RMS in bf16).
            try expect("out", out, bytes: m * n * outputDType.byteCount)
            try out.fill(byte: 0)
            try launch("linea_add_bias", outputDType, on: out.context, grid: blocks(m * n),
                       [.pointer(out.address), .pointer(bias.address), .int32(Int32(m)), .int32(Int32(n))])
        }
        try CUBLAS.linear(x: x, weight: weight, out: out, m: m, n: n, k: k, dtype: dtype, outputDType: outputDType, accumulate: bias != nil)
    }

    /// `out [count]` in `to` = `x [count]` in `from` (f32, bf16, f16; rounded to nearest even), e.g. f32
    /// activations to bf16 for a bf16 `matmul`; the same type is a device copy. O(count).
    public static func convert(x: CUDABuffer, from: DType, out: CUDABuffer, to: DType, count: Int) throws {
        let (source, target) = (try CUDAUpload.suffix(from, argument: "from"), try CUDAUpload.suffix(to, argument: "to"))
        try int32(["count": count])
        try expect("x", x, bytes: count * from.byteCount)
        try expect("out", out, bytes: count * to.byteCount)
        if from == to { return try out.copy(from: x, byteCount: count * from.byteCount) }
        let f = try out.context.function(source: CUDAKernels.modelOps, name: "linea_cast_\(source)_\(target)")
        try out.context.launch(f, grid: (blocks(count), 1, 1), block: (threads, 1, 1),
                               arguments: [.pointer(x.address), .pointer(out.address), .int32(Int32(count))])
    }

    /// Rows `table[ids[i]]` of `table [vocab, dim]` into `out [count, dim]` (both `dtype`), ids `[count]` of
    /// `idType`. With `check` (default) it waits for the kernel and throws for an id outside `0..<vocab`, naming
    /// `ids`, the value and its index (as `CPUOps.embedding`); without, such rows are zeros and nothing waits.
    /// O(count·dim).
    public static func embedding(ids: CUDABuffer, idType: IDType, table: CUDABuffer, out: CUDABuffer, count: Int,
                                 vocab: Int, dim: Int, dtype: DType, check: Bool = true) throws {
        try int32(["count": count, "vocab": vocab, "dim": dim, "out": count * dim])
        let idBytes = idType == .int32 ? 4 : 8
        try expect("ids", ids, bytes: count * idBytes)
        try expect("table", table, bytes: vocab * dim * dtype.byteCount)
        try expect("out", out, bytes: count * dim * dtype.byteCount)
        let ctx = out.context
        let bad = check ? try CUDABuffer(context: ctx, copying: [Int32.max]) : nil
        try launch(idType == .int32 ? "linea_embed_i32" : "linea_embed_i64", dtype, on: ctx, grid: blocks(count * dim),
                   [.pointer(ids.address), .pointer(table.address), .pointer(out.address), .int32(Int32(count)),
                    .int32(Int32(vocab)), .int32(Int32(dim)), address(bad)])
        guard let bad else { return }
        let index = Int(try bad.download(Int32.self, count: 1)[0])
        guard index != Int(Int32.max) else { return }
        let value = idType == .int32 ? Int(try ids.download(Int32.self, count: index + 1)[index])
            : Int(try ids.download(Int64.self, count: index + 1)[index])
        throw LineaError.invalidArgument(argument: "ids", expected: "token ids in 0..<\(vocab)", actual: "\(value) at index \(index)")
    }

    /// `target[rows[i]] += weights[i] · values[i]` over `values [n, dim]` (f32; int32 rows; weights nil: 1), in place on
    /// `target [targetRows, dim]`; waits and throws for a row outside the target, naming it. O(n·dim).
    public static func indexAdd(values: CUDABuffer, rows: CUDABuffer, weights: CUDABuffer?, target: CUDABuffer, count: Int, dim: Int,
                                targetRows: Int) throws {
        try int32(["count": count, "dim": dim, "values": count * dim, "target": targetRows * dim])
        try expect("values", values, bytes: count * dim * 4)
        try expect("rows", rows, bytes: count * 4)
        if let weights { try expect("weights", weights, bytes: count * 4) }
        try expect("target", target, bytes: targetRows * dim * 4)
        let ctx = target.context
        let bad = try CUDABuffer(context: ctx, copying: [Int32.max])
        let f = try ctx.function(source: CUDAKernels.modelOps, name: "linea_index_add_f32")
        try ctx.launch(f, grid: (blocks(count * dim), 1, 1), block: (threads, 1, 1), arguments: [
            .pointer(values.address), .pointer(rows.address), address(weights), .pointer(target.address), .int32(Int32(count)),
            .int32(Int32(dim)), .int32(Int32(targetRows)), .pointer(bad.address)])
        let index = Int(try bad.download(Int32.self, count: 1)[0])
        guard index != Int(Int32.max) else { return }
        let value = Int(try rows.download(Int32.self, count: index + 1)[index])
        throw LineaError.invalidArgument(argument: "rows", expected: "row ids in 0..<\(targetRows)", actual: "\(value) at index \(index)")
    }

    // MARK: norms

    static func norm(_ mode: Int32, x: CUDABuffer, gate: CUDABuffer?, weight: CUDABuffer?, out: CUDABuffer,
                     rows: Int, dim: Int, eps: Float, dtype: DType, weightDType: DType? = nil, outputDType: DType? = nil) throws {
        try int32(["rows": rows, "dim": dim])
        let bytes = rows * dim * dtype.byteCount, weightDType = weightDType ?? dtype
        let (to, outType) = try narrowing(from: dtype, to: outputDType)
        try expect("x", x, bytes: bytes)
        try expect("out", out, bytes: rows * dim * outType.byteCount)
        if let gate { try expect("gate", gate, bytes: bytes) }
        if let weight { try expect("weight", weight, bytes: dim * weightDType.byteCount) }
        let head: [CUDAKernelArgument] = [.pointer(x.address), address(gate), address(weight),
                                          .int32(try CUDAUpload.typeCode(weightDType, argument: "weight")), .pointer(out.address)]
        // Rows of up to 1024 take a warp each (8 per block), longer ones a block of 256 threads.
        if dim <= 1024 {
            let perBlock = threads / 32
            try launch("linea_norm_warp" + to, outType, on: out.context, grid: (rows + perBlock - 1) / perBlock,
                       head + [.int32(Int32(rows)), .int32(Int32(dim)), .float(eps), .int32(mode)])
        } else {
            try launch("linea_norm" + to, outType, on: out.context, grid: rows, head + [.int32(Int32(dim)), .float(eps), .int32(mode)])
        }
    }

    /// How an entry reading `dtype` and writing `outputDType` is named: `NAME_SUF` when they match, else
    /// `NAME_f32_to_SUF` with the 16-bit output's suffix (the only pair of types these entries mix).
    static func narrowing(from dtype: DType, to outputDType: DType?) throws -> (infix: String, suffix: DType) {
        guard let outputDType, outputDType != dtype else { return ("", dtype) }
        try OpCheck.value("outputDType", dtype == .float32 && [.bfloat16, .float16].contains(outputDType),
                          "the input's dtype, or bf16 or f16 from f32", "\(outputDType.shortName) from \(dtype.shortName)")
        return ("_f32_to", outputDType)
    }

    /// RMSNorm of `x [rows, dim]`: `x / sqrt(mean(x²) + eps) · w`, or `· (1 + w)` when `zeroCentered`; `weight` in
    /// `weightDType` (default `dtype`); out in `outputDType` (default `dtype`; bf16 or f16 from f32). O(rows·dim).
    public static func rmsNorm(x: CUDABuffer, weight: CUDABuffer, out: CUDABuffer, rows: Int, dim: Int, eps: Float,
                               zeroCentered: Bool = false, dtype: DType, weightDType: DType? = nil, outputDType: DType? = nil) throws {
        try norm(zeroCentered ? 1 : 0, x: x, gate: nil, weight: weight, out: out, rows: rows, dim: dim, eps: eps, dtype: dtype,
                 weightDType: weightDType, outputDType: outputDType)
    }

    /// Gated RMSNorm: `x / sqrt(mean(x²) + eps) · w · silu(gate)`, all `[rows, dim]`; `weight` in `weightDType`
    /// (default `dtype`). O(rows·dim).
    public static func rmsNormGated(x: CUDABuffer, gate: CUDABuffer, weight: CUDABuffer, out: CUDABuffer, rows: Int,
                                    dim: Int, eps: Float, dtype: DType, weightDType: DType? = nil, outputDType: DType? = nil) throws {
        try norm(2, x: x, gate: gate, weight: weight, out: out, rows: rows, dim: dim, eps: eps, dtype: dtype, weightDType: weightDType,
                 outputDType: outputDType)
    }

    /// L2 norm of each row (fla's `l2norm`): `x / sqrt(Σ x² + eps)`. O(rows·dim).
    public static func l2Norm(x: CUDABuffer, out: CUDABuffer, rows: Int, dim: Int, eps: Float = 1e-6, dtype: DType) throws {
        try norm(3, x: x, gate: nil, weight: nil, out: out, rows: rows, dim: dim, eps: eps, dtype: dtype)
    }

    /// Bytes from the first to the last element of a box `shape` walked at `strides` (>= 0, in elements). O(rank).
    static func stridedBytes(shape: [Int], strides: [Int], elementBytes: Int) -> Int {
        (zip(shape, strides).reduce(0) { $0 + ($1.0 - 1) * $1.1 } + 1) * elementBytes
    }

    /// Copies the box `shape` (rank <= 6) of `elementBytes`-byte elements from `x` at `sourceStrides` to `out` at
    /// `targetStrides` (in elements, from each buffer's start): a strided view packed, or packed into one, in one
    /// launch (one block per row when the last axis is packed on both sides). O(elements).
    public static func copyStrided(x: CUDABuffer, out: CUDABuffer, shape: [Int], sourceStrides: [Int], targetStrides: [Int],
                                   elementBytes: Int) throws {
        try OpCheck.value("shape", shape.count <= 6, "rank <= 6", "\(shape)")
        try OpCheck.value("elementBytes", [1, 2, 4, 8].contains(elementBytes), "1, 2, 4 or 8", "\(elementBytes)")
        let count = shape.reduce(1, *)
        try int32(["count": count])
        guard count > 0 else { return }
        let pad = 6 - shape.count
        let (n, a, b) = ([Int](repeating: 1, count: pad) + shape, [Int](repeating: 0, count: pad) + sourceStrides,
                         [Int](repeating: 0, count: pad) + targetStrides)
        for (name, strides, buffer) in [("x", a, x), ("out", b, out)] {
            for (axis, stride) in strides.enumerated() {
                try OpCheck.value("\(name) stride \(axis)", stride >= 0 && stride <= Int(Int32.max), "0...\(Int32.max)", "\(stride)")
            }
            try expect(name, buffer, bytes: stridedBytes(shape: n, strides: strides, elementBytes: elementBytes))
        }
        if n[5] > 1, a[5] == 1, b[5] == 1 {
            // The last axis packed on both sides: whole rows, in the widest unit every row start is aligned to.
            let rowBytes = n[5] * elementBytes
            let unit = [16, 8, 4, 2, 1].first { u in
                ([rowBytes, Int(x.address), Int(out.address)] + (a + b).dropLast().map { $0 * elementBytes }).allSatisfy { $0 % u == 0 }
            }!
            let rows = n.dropLast().reduce(1, *)
            let f = try out.context.function(source: CUDAKernels.modelOps, name: "linea_copy_rows_u\(unit)")
            return try out.context.launch(f, grid: (min(rows, 65535), 1, 1), block: (min(threads, max(32, rowBytes / unit)), 1, 1),
                                          arguments: [.pointer(x.address), .pointer(out.address), .int32(Int32(rows)), .int32(Int32(rowBytes / unit))]
                                              + n.dropFirst().dropLast().map { .int32(Int32($0)) }
                                              + (a.dropLast() + b.dropLast()).map { .int32(Int32($0 * elementBytes / unit)) })
        }
        let f = try out.context.function(source: CUDAKernels.modelOps, name: "linea_copy_strided_e\(elementBytes)")
        try out.context.launch(f, grid: (blocks(count), 1, 1), block: (threads, 1, 1),
                               arguments: [.pointer(x.address), .pointer(out.address), .int32(Int32(count))]
                                   + n.dropFirst().map { .int32(Int32($0)) } + (a + b).map { .int32(Int32($0)) })
    }

    // MARK: elementwise

    static func unary(_ op: Int32, x: CUDABuffer, out: CUDABuffer, count: Int, low: Float = 0, high: Float = 0, dtype: DType) throws {
        try int32(["count": count])
        try expect("x", x, bytes: count * dtype.byteCount)
        try expect("out", out, bytes: count * dtype.byteCount)
        try launch("linea_unary", dtype, on: out.context, grid: blocks(count),
                   [.pointer(x.address), .pointer(out.address), .int32(Int32(count)), .int32(op), .float(low), .float(high)])
    }

    /// `out[i] = a[i] op b[(i / inner) % repeating]` (b broadcast; `repeating` nil: b as long as a). O(count).
    static func binary(_ op: Int32, _ names: (String, String), a: CUDABuffer, b: CUDABuffer, out: CUDABuffer,
                       count: Int, repeating: Int? = nil, inner: Int = 1, dtype: DType) throws {
        let bCount = repeating ?? count
        try int32(["count": count])
        try OpCheck.value(names.1, inner >= 1 && bCount >= 1 && count % (inner * bCount) == 0,
                          "runs that tile \(names.0) (\(count) elements, runs of \(inner))", "\(bCount) elements")
        try expect(names.0, a, bytes: count * dtype.byteCount)
        try expect(names.1, b, bytes: bCount * dtype.byteCount)
        try expect("out", out, bytes: count * dtype.byteCount)
        try launch("linea_binary", dtype, on: out.context, grid: blocks(count),
                   [.pointer(a.address), .pointer(b.address), .pointer(out.address), .int32(Int32(count)), .int32(op),
                    .int32(Int32(bCount)), .int32(Int32(inner))])
    }

    /// `out = min(max(x, low), high)`. O(count).
    public static func clamp(x: CUDABuffer, out: CUDABuffer, count: Int, low: Float, high: Float, dtype: DType) throws {
        try unary(5, x: x, out: out, count: count, low: low, high: high, dtype: dtype)
    }

    /// `out [batches, cols, rows]` = `x [batches, rows, cols]` (the last two axes swapped) through 32 x 32 shared-memory
    /// tiles. O(batches·rows·cols).
    public static func transposeLastTwo(x: CUDABuffer, out: CUDABuffer, batches: Int, rows: Int, cols: Int, dtype: DType) throws {
        try int32(["batches": batches, "rows": rows, "cols": cols, "count": batches * rows * cols])
        try expect("x", x, bytes: batches * rows * cols * dtype.byteCount)
        try expect("out", out, bytes: batches * rows * cols * dtype.byteCount)
        guard batches * rows * cols > 0 else { return }
        let f = try out.context.function(source: CUDAKernels.modelOps, name: "linea_transpose_\(try CUDAUpload.suffix(dtype))")
        try out.context.launch(f, grid: ((cols + 31) / 32, (rows + 31) / 32, batches), block: (32, 8, 1),
                               arguments: [.pointer(x.address), .pointer(out.address), .int32(Int32(rows)), .int32(Int32(cols))])
    }

    /// `out [n, rows, cols]` = `x [n, xRows, xCols]` where both have the element, zeros elsewhere: pads (or crops) the
    /// last two axes, e.g. a head dimension to the width a kernel takes. O(n·rows·cols).
    public static func pad2d(x: CUDABuffer, out: CUDABuffer, n: Int, xRows: Int, xCols: Int, rows: Int, cols: Int, dtype: DType) throws {
        try int32(["n": n, "xRows": xRows, "xCols": xCols, "rows": rows, "cols": cols, "count": n * max(rows * cols, xRows * xCols)])
        try expect("x", x, bytes: n * xRows * xCols * dtype.byteCount)
        try expect("out", out, bytes: n * rows * cols * dtype.byteCount)
        guard n * rows * cols > 0 else { return }
        try launch("linea_pad2d", dtype, on: out.context, grid: blocks(n * rows * cols), [
            .pointer(x.address), .pointer(out.address), .int32(Int32(n)), .int32(Int32(xRows)), .int32(Int32(xCols)),
            .int32(Int32(rows)), .int32(Int32(cols)),
        ])
    }

    /// `out = x · sigmoid(x)` over `count` elements. O(count).
    public static func silu(x: CUDABuffer, out: CUDABuffer, count: Int, dtype: DType) throws {
        try unary(0, x: x, out: out, count: count, dtype: dtype)
    }
    /// `out = 1 / (1 + e^-x)`. O(count).
    public static func sigmoid(x: CUDABuffer, out: CUDABuffer, count: Int, dtype: DType) throws {
        try unary(1, x: x, out: out, count: count, dtype: dtype)
    }
    /// GELU, exact (erf) or the tanh approximation. O(count).
    public static func gelu(x: CUDABuffer, out: CUDABuffer, count: Int, approximate: GELUApproximation = .none, dtype: DType) throws {
        try unary(approximate == .none ? 2 : 3, x: x, out: out, count: count, dtype: dtype)
    }
    /// torch's softplus (threshold 20). O(count).
    public static func softplus(x: CUDABuffer, out: CUDABuffer, count: Int, dtype: DType) throws {
        try unary(4, x: x, out: out, count: count, dtype: dtype)
    }
    /// `out = silu(gate) · up` (SwiGLU). O(count).
    public static func swiglu(gate: CUDABuffer, up: CUDABuffer, out: CUDABuffer, count: Int, dtype: DType) throws {
        try binary(0, ("gate", "up"), a: gate, b: up, out: out, count: count, dtype: dtype)
    }
    /// `out [rows, width] = silu(x[:, :width]) · x[:, width:]` for `x [rows, 2 · width]`. O(rows·width).
    public static func swiglu(halves x: CUDABuffer, out: CUDABuffer, rows: Int, width: Int, dtype: DType, outputDType: DType? = nil) throws {
        try int32(["rows": rows, "width": width, "x": rows * 2 * width])
        let (to, outType) = try narrowing(from: dtype, to: outputDType)
        try expect("x", x, bytes: rows * 2 * width * dtype.byteCount)
        try expect("out", out, bytes: rows * width * outType.byteCount)
        try launch("linea_swiglu_halves" + to, outType, on: out.context, grid: blocks(rows * width),
                   [.pointer(x.address), .pointer(out.address), .int32(Int32(rows)), .int32(Int32(width))])
    }
    /// `out = a + b` (residual add). O(count).
    public static func add(_ a: CUDABuffer, _ b: CUDABuffer, out: CUDABuffer, count: Int, dtype: DType) throws {
        try binary(1, ("a", "b"), a: a, b: b, out: out, count: count, dtype: dtype)
    }
    /// `out = a · b`. O(count).
    public static func mul(_ a: CUDABuffer, _ b: CUDABuffer, out: CUDABuffer, count: Int, dtype: DType) throws {
        try binary(2, ("a", "b"), a: a, b: b, out: out, count: count, dtype: dtype)
    }

    // MARK: rotary, conv1d

    /// Rotary embedding of `x [tokens, heads, headDim]` at int32 `positions [tokens]` (angles in fp64), the first
    /// `rotaryDim` dims rotating per `layout` (frequencies scaled as Llama 3 when `scaling`), the rest copied; `out` must
    /// not alias `x`. O(tokens·heads·headDim).
    public static func rotary(x: CUDABuffer, positions: CUDABuffer, out: CUDABuffer, tokens: Int, heads: Int,
                              headDim: Int, rotaryDim: Int, theta: Float, layout: RotaryLayout, scaling: RotaryScaling? = nil,
                              dtype: DType) throws {
        try OpCheck.rotary(positions: tokens, tokens: tokens, heads: heads, headDim: headDim, rotaryDim: rotaryDim,
                           theta: Double(theta))
        let n = tokens * heads * headDim
        try int32(["tokens": tokens, "x": n])
        try expect("positions", positions, bytes: tokens * 4)
        try expect("x", x, bytes: n * dtype.byteCount)
        try expect("out", out, bytes: n * dtype.byteCount)
        try OpCheck.value("out", out.address != x.address || n == 0, "a buffer other than x", "x itself")
        try launch("linea_rotary", dtype, on: out.context, grid: blocks(n), [
            .pointer(x.address), .pointer(positions.address), .pointer(out.address), .int32(Int32(tokens)),
            .int32(Int32(heads)), .int32(Int32(headDim)), .int32(Int32(rotaryDim)), .float(theta),
            .int32(layout == .halfSplit ? 0 : 1), .float(Float(scaling?.factor ?? 0)), .float(Float(scaling?.lowFrequencyFactor ?? 0)),
            .float(Float(scaling?.highFrequencyFactor ?? 0)), .float(Float(scaling?.originalContext ?? 0))])
    }

    /// Causal depthwise conv1d, channels-last (`CPUOps.causalConv1d`): x, out `[batch, length, channels]`, weight
    /// `[channels, width]` (2...4), bias `[channels]`, state `[batch, channels, width-1]` read then replaced by the
    /// last `width-1` inputs (all `dtype`; weight and bias in `weightDType`, default `dtype`). With `parts` (1 to 3
    /// widths summing to `channels`), out holds the channels split in order into packed `[batch, length, parts[i]]`
    /// blocks one after another. O(batch·length·channels·width).
    public static func causalConv1d(x: CUDABuffer, weight: CUDABuffer, bias: CUDABuffer? = nil, state: CUDABuffer?,
                                    out: CUDABuffer, batch: Int, length: Int, channels: Int, width: Int, silu: Bool,
                                    parts: [Int]? = nil, dtype: DType, weightDType: DType? = nil) throws {
        try OpCheck.value("width", (2...4).contains(width), "2...4", "\(width)")
        let parts = parts ?? [channels]
        try OpCheck.value("parts", (1...3).contains(parts.count) && parts.allSatisfy { $0 >= 0 } && parts.reduce(0, +) == channels,
                          "1 to 3 widths >= 0 summing to \(channels)", "\(parts)")
        let p1 = parts.count > 1 ? parts[0] : channels, p2 = parts.count > 2 ? parts[0] + parts[1] : channels
        let e = dtype.byteCount, n = batch * length * channels
        try int32(["batch": batch, "length": length, "channels": channels, "x": n])
        try OpCheck.value("length", length <= 65535 * 64, "<= \(65535 * 64) (65535 chunks of 64 steps)", "\(length)")
        try expect("x", x, bytes: n * e)
        try expect("out", out, bytes: n * e)
        let we = (weightDType ?? dtype).byteCount
        try expect("weight", weight, bytes: channels * width * we)
        if let bias { try expect("bias", bias, bytes: channels * we) }
        if let state { try expect("state", state, bytes: batch * channels * (width - 1) * e) }
        try launch("linea_conv1d", dtype, on: out.context, grid: (batch * channels + threads - 1) / threads,
                   gridY: max(1, (length + 63) / 64), [
            .pointer(x.address), .pointer(weight.address), address(bias), .int32(try CUDAUpload.typeCode(weightDType ?? dtype, argument: "weight")),
            address(state), .pointer(out.address),
            .int32(Int32(batch)), .int32(Int32(length)), .int32(Int32(channels)), .int32(Int32(width)), .int32(silu ? 1 : 0),
            .int32(Int32(p1)), .int32(Int32(p2))])
    }

    // MARK: softmax, routing, argmax, sampling

    static func rowsCols(_ name: String, _ x: CUDABuffer, rows: Int, cols: Int, dtype: DType) throws {
        try int32(["rows": rows, "cols": cols])
        try OpCheck.value("cols", cols >= 1, ">= 1", "\(cols)")
        try expect(name, x, bytes: rows * cols * dtype.byteCount)
    }

    /// Softmax over the last axis of `x [rows, cols]` into `out`. O(rows·cols).
    public static func softmax(x: CUDABuffer, out: CUDABuffer, rows: Int, cols: Int, dtype: DType) throws {
        try rowsCols("x", x, rows: rows, cols: cols, dtype: dtype)
        try expect("out", out, bytes: rows * cols * dtype.byteCount)
        try launch("linea_softmax", dtype, on: out.context, grid: rows, [.pointer(x.address), .pointer(out.address), .int32(Int32(cols))])
    }

    /// MoE routing (`CPUOps.topKRouting`): softmax of `logits [rows, experts]` (`dtype`), top `k` (ties to the lower
    /// index) into f32 `weights [rows, k]` and int32 `indices [rows, k]`, renormalized when `normalize`.
    /// O(rows·experts·k).
    public static func topKRouting(logits: CUDABuffer, weights: CUDABuffer, indices: CUDABuffer, rows: Int, experts: Int,
                                   k: Int, normalize: Bool, dtype: DType) throws {
        try rowsCols("logits", logits, rows: rows, cols: experts, dtype: dtype)
        try OpCheck.value("k", k >= 1 && k <= experts, "1...experts (\(experts))", "\(k)")
        try expect("weights", weights, bytes: rows * k * 4)
        try expect("indices", indices, bytes: rows * k * 4)
        try launch("linea_route", dtype, on: weights.context, grid: rows, sharedBytes: experts * 4, [
            .pointer(logits.address), .pointer(weights.address), .pointer(indices.address), .int32(Int32(experts)),
            .int32(Int32(k)), .int32(normalize ? 1 : 0)])
    }

    /// Index of each row's largest value of `x [rows, cols]` (ties to the lower index) into int32 `out [rows]`.
    /// O(rows·cols).
    public static func argmax(x: CUDABuffer, out: CUDABuffer, rows: Int, cols: Int, dtype: DType) throws {
        try rowsCols("x", x, rows: rows, cols: cols, dtype: dtype)
        try expect("out", out, bytes: rows * 4)
        try launch("linea_argmax", dtype, on: out.context, grid: rows, [.pointer(x.address), .pointer(out.address), .int32(Int32(cols))])
    }

    /// Samples one token per row of `logits [rows, vocab]` into int32 `tokens [rows]` as `CPUOps.sample`
    /// (temperature, top-k keeping ties with the k-th, top-p, renormalized), with `uniforms [rows]` f32 from
    /// `CPUOps.draws` (nil at temperature 0: argmax). O(rows·vocab·32) (bisections for the top-k and top-p thresholds).
    public static func sample(logits: CUDABuffer, uniforms: CUDABuffer?, tokens: CUDABuffer, rows: Int, vocab: Int,
                              temperature: Float, topK: Int = 0, topP: Float = 1, dtype: DType) throws {
        try OpCheck.sampling(temperature: Double(temperature), topK: topK, topP: Double(topP))
        try rowsCols("logits", logits, rows: rows, cols: vocab, dtype: dtype)
        try expect("tokens", tokens, bytes: rows * 4)
        if temperature != 0 {
            guard let uniforms else {
                throw LineaError.invalidArgument(argument: "uniforms", expected: "[\(rows)] draws for temperature \(temperature)", actual: "nil")
            }
            try expect("uniforms", uniforms, bytes: rows * 4)
        }
        try launch("linea_sample", dtype, on: tokens.context, grid: rows, [
            .pointer(logits.address), address(uniforms), .pointer(tokens.address), .int32(Int32(vocab)),
            .float(temperature), .int32(Int32(min(topK, Int(Int32.max)))), .float(topP)])
    }
}
