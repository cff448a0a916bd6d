import Foundation
import Linea

/// Neighborhood attention (NATTEN's na1d/na2d/na3d, `NeighborhoodOptions`' rules) on the GPU: tiles of up to 64
/// neighboring queries of one dilation group against the box of keys their windows cover, staged 32 keys at a time,
/// online softmax; never a score matrix.
package enum CUDANeighborhood {
    /// The largest q/k head dim D and value head dim Dv the kernel takes.
    package static let maxHeadDim = 256

    /// Which kernel runs: `tensorCore` (mma.sync, bf16/f16 inputs, D = Dv in {64, 128}, scale > 0, sm_80+), `portable`
    /// (fp32 CUDA cores, any input type, D, Dv <= 256), or `auto`: tensor cores where they fit, else portable.
    package enum Kernel: String, Sendable, CaseIterable {
        case auto, tensorCore = "tensor_core", portable
    }

    /// The dispatch's choice: `LINEA_NATTEN_KERNEL` (auto, tensor_core or portable; to compare the two or to step
    /// around one), else auto.
    package static let dispatchKernel = Kernel(rawValue: ProcessInfo.processInfo.environment["LINEA_NATTEN_KERNEL"] ?? "") ?? .auto

    /// Device-buffer form (queues one kernel): q `[B,*spatial,Hq,D]`, k `[B,*spatial,Hkv,D]`, v `[B,*spatial,Hkv,Dv]`
    /// hold `dtype` elements (f32, bf16, f16; Hkv divides Hq, D and Dv <= 256); o `[B,*spatial,Hq,Dv]` holds
    /// `outputDType`; lse (optional) fp32 `[B,*spatial,Hq]`, natural log. Throws for invalid settings, shapes or buffers.
    /// O(B·Hq·N·box·D) for N tokens, box the keys a 64-query tile's windows span (about (tile side + kernel - 1)^rank).
    package static func forward(
        q: CUDABuffer, k: CUDABuffer, v: CUDABuffer, o: CUDABuffer, lse: CUDABuffer?, batch B: Int, spatial: [Int],
        queryHeads Hq: Int, kvHeads Hkv: Int, headDim D: Int, valueDim Dv: Int, options: NeighborhoodOptions,
        dtype: DType = .bfloat16, outputDType: DType = .float32, kernel: Kernel = .auto
    ) throws {
        try options.validate(spatial: spatial)
        guard B >= 0, Hq >= 0 else {
            throw LineaError.invalidArgument(argument: "batch, queryHeads", expected: ">= 0", actual: "\(B), \(Hq)")
        }
        guard Hkv > 0, Hq % Hkv == 0 else {
            throw LineaError.invalidArgument(argument: "kvHeads", expected: "a divisor of the \(Hq) query heads", actual: "\(Hkv)")
        }
        for (name, n) in [("headDim", D), ("valueDim", Dv)] where n < 1 || n > maxHeadDim {
            throw LineaError.invalidArgument(argument: name, expected: "1 to \(maxHeadDim)", actual: "\(n)")
        }
        // Grid limits: y holds the heads, z the batch (65535 each); token offsets are 32-bit in the kernel.
        let N = spatial.reduce(1, *)
        guard Hq <= 65535, B <= 65535, N < Int(Int32.max) else {
            throw LineaError.invalidArgument(argument: "q", expected: "<= 65535 heads and batches, < 2^31 tokens", actual: "\(Hq) heads, batch \(B), \(N) tokens")
        }
        let scale = options.scale ?? 1 / Float(D).squareRoot()
        guard scale.isFinite, scale != 0 else {
            throw LineaError.invalidArgument(argument: "scale", expected: "a finite non-zero number", actual: "\(scale)")
        }
        let inKind = try CUDAUpload.typeCode(dtype)
        let outKind = try CUDAUpload.typeCode(outputDType, argument: "outputDType")
        let rows = B * N * Hq
        for (name, buffer, bytes) in [("q", q, rows * D * dtype.byteCount), ("k", k, B * N * Hkv * D * dtype.byteCount),
                                      ("v", v, B * N * Hkv * Dv * dtype.byteCount), ("o", o, rows * Dv * outputDType.byteCount),
                                      ("lse", lse, rows * 4)] where buffer != nil && buffer!.byteCount < bytes {
            throw LineaError.shapeMismatch(argument: name, expected: ">= \(bytes) bytes", actual: "\(buffer!.byteCount) bytes")
        }
        if rows == 0 { return }

        // Three axes, padded in front with length-1 axes (kernel 1: each query sees its one key there).
        let (r, pad) = (options.rank, 3 - options.rank)
        let ones = [Int](repeating: 1, count: pad)
        let L: [Int] = ones + spatial
        let kernelSize: [Int] = ones + options.kernelSize
        let stride: [Int] = ones + (options.stride ?? [Int](repeating: 1, count: r))
        let dilation: [Int] = ones + (options.dilation ?? [Int](repeating: 1, count: r))
        let causal: [Bool] = [Bool](repeating: false, count: pad) + (options.causal ?? [Bool](repeating: false, count: r))
        var causalBits = 0
        for a in 0..<3 where causal[a] { causalBits |= 1 << a }
        let groupLengths: [Int] = (0..<3).map { a in (L[a] + dilation[a] - 1) / dilation[a] }
        let tile = tileShape(groupLengths: groupLengths)
        let tilesPerGroup: [Int] = (0..<3).map { a in (groupLengths[a] + tile[a] - 1) / tile[a] }
        var blocks = 1
        for a in 0..<3 { blocks *= dilation[a] * tilesPerGroup[a] }
        guard blocks < Int(Int32.max) else {
            throw LineaError.invalidArgument(argument: "q", expected: "< 2^31 query tiles", actual: "\(blocks)")
        }

        let ctx = q.context
        let half = dtype == .bfloat16 || dtype == .float16
        let fitsTensorCores = half && D == Dv && (D == 64 || D == 128) && scale > 0 && ctx.computeCapability.major >= 8
        if kernel == .tensorCore && !fitsTensorCores {
            throw LineaError.invalidArgument(argument: "kernel", expected: "tensor_core with bf16/f16 inputs, D = Dv in {64, 128}, scale > 0, sm_80+",
                                             actual: "\(dtype), D \(D), Dv \(Dv), scale \(scale), \(ctx.architecture)")
        }
        var ints: [Int] = L + kernelSize + stride + dilation
        ints += [causalBits] + tile + tilesPerGroup
        let rest: [CUDAKernelArgument] = ints.map { .int32(Int32($0)) } + [.float(scale * 1.4426950408889634)]
        if fitsTensorCores && kernel != .portable {
            let entry = "linea_natten_mma_\(dtype == .bfloat16 ? "bf16" : "f16")_d\(D)"
            let f = try ctx.entry(entry, of: CUDAKernels.attentionNeighborhood)
            // Qs[64] + Ks[2][64] + Vs[2][64] rows of D + 8 16-bit elements, Win[64][6] + Tok[64] + KY[2][64][4] ints.
            let smem = 320 * (D + 8) * 2 + (64 * 6 + 64 + 2 * 64 * 4) * 4
            let head: [CUDAKernelArgument] = [.pointer(q.address), .pointer(k.address), .pointer(v.address), .pointer(o.address),
                                              .pointer(lse?.address ?? 0), .int32(outKind), .int32(Int32(Hq)), .int32(Int32(Hkv))]
            try ctx.launch(f, grid: (blocks, Hq, B), block: (128, 1, 1), sharedBytes: smem, arguments: head + rest)
            return
        }
        let entry = "linea_natten_d\(Dv <= 64 ? 64 : Dv <= 128 ? 128 : 256)"
        let f = try ctx.entry(entry, of: CUDAKernels.attentionNeighborhood)
        let d4 = (D + 3) / 4 * 4
        // Qs[64][D4] + Kt[D4][33] + Vs[32][Dv] + Ps[64][32] floats, Win[64][6] + Tok[64] + KTok[32] ints (the kernel's layout).
        let smem = (64 * d4 + 33 * d4 + 32 * Dv + 64 * 32 + 64 * 6 + 64 + 32) * 4
        let head: [CUDAKernelArgument] = [.pointer(q.address), .pointer(k.address), .pointer(v.address), .int32(inKind),
                                          .pointer(o.address), .pointer(lse?.address ?? 0), .int32(outKind), .int32(Int32(Hq)),
                                          .int32(Int32(Hkv)), .int32(Int32(D)), .int32(Int32(Dv))]
        try ctx.launch(f, grid: (blocks, Hq, B), block: (256, 1, 1), sharedBytes: smem, arguments: head + rest)
    }

    /// The query tile (per axis, padded to three) for dilation groups at most `groupLengths` long: up to 64 queries,
    /// grown by doubling one axis at a time from the last, each capped at its group length, so that a 2-D grid gets
    /// 8 x 8 and a 3-D grid 4 x 4 x 4 (the key box per query is smallest near a cube). O(1).
    package static func tileShape(groupLengths n: [Int]) -> [Int] {
        var t = [1, 1, 1]
        var grew = true
        while grew {
            grew = false
            for a in stride(from: 2, through: 0, by: -1) where t.reduce(1, *) * 2 <= 64 && t[a] < n[a] {
                t[a] = min(2 * t[a], n[a])
                grew = true
            }
        }
        return t
    }
}
