import Foundation

/// Block-sparse attention as an op family: attention's `q, k, v` and a block `mask [Bm,Hm,QB,KB]` (u8, non-zero
/// keeps; `--set block_rows=N,block_keys=N`, 64 by default), `o` and `lse` out. The fused form (CPU and GPU) skips
/// dropped blocks; `reference` is the Float64 oracle.
public struct BlockSparseFamily: OpFamily {
    /// The family. O(1).
    public init() {}

    public var name: String { "block_sparse" }
    public var summary: String { "attention over the kept blocks of a block mask (o = 0, lse = -inf where none)" }
    public var inputs: [OpInput] { [OpInput("q"), OpInput("k"), OpInput("v"), OpInput("mask")] }
    public var outputs: [String] { ["o", "lse"] }

    public func forms(on device: Device) -> [String] { ["fused"] }

    public func inputDType(_ name: String, form: String, compute dtype: DType) -> DType { name == "mask" ? .uint8 : dtype }

    public func check(form: String, options: OpOptions) throws {
        guard form == "fused" || form == "reference" else {
            throw LineaError.invalidArgument(argument: "--form", expected: "fused or reference", actual: "'\(form)'")
        }
        for key in options.settings.keys where key != "block_rows" && key != "block_keys" {
            throw LineaError.invalidArgument(argument: "--set", expected: "block_rows or block_keys", actual: "'\(key)'")
        }
        for (key, value) in options.settings where value < 1 {
            throw LineaError.invalidArgument(argument: "--set \(key)", expected: ">= 1", actual: "\(value)")
        }
        if options.window != nil {
            throw LineaError.invalidArgument(argument: "--window", expected: "none (fold a window into the block mask)", actual: "a window")
        }
    }

    private func blocks(_ o: OpOptions) -> (rows: Int, keys: Int) { (o.settings["block_rows"] ?? 64, o.settings["block_keys"] ?? 64) }

    public func checkValues(_ x: [String: Tensor], form: String, options: OpOptions) throws {
        try Attention.checkInputs(q: need(x, "q"), k: need(x, "k"), v: need(x, "v"), options: AttentionFamily.attentionOptions(options),
                                  form: .flash)
    }

    public func reference(_ x: [String: Tensor], options: OpOptions) throws -> [String: Tensor] {
        let b = blocks(options)
        let mask = try BlockMask(tensor: need(x, "mask"), blockRows: b.rows, blockKeys: b.keys)
        let out = try BlockSparseAttention.reference(q: need(x, "q"), k: need(x, "k"), v: need(x, "v"), mask: mask,
                                                     options: AttentionFamily.attentionOptions(options))
        return ["o": out.o, "lse": out.lse]
    }

    public func run(_ form: String, _ x: [String: DeviceTensor], options: OpOptions) throws -> [String: DeviceTensor] {
        try check(form: form, options: options)
        let b = blocks(options)
        if form == "reference" {  // the oracle on host copies, whatever the device
            var host: [String: Tensor] = [:]
            for (name, t) in x {
                host[name] = t.dtype.isFloatingPoint ? try t.host()
                    : try Tensor(shape: t.shape, scalars: t.hostIntegers().map { $0 != 0 ? 1 : 0 })
            }
            let out = try reference(host, options: options)
            let device = try need(x, "q").device
            return try out.mapValues { try DeviceTensor($0, on: device) }
        }
        let out = try BlockSparseAttention.forward(q: need(x, "q"), k: need(x, "k"), v: need(x, "v"), mask: need(x, "mask"),
                                                   blockRows: b.rows, blockKeys: b.keys, options: AttentionFamily.attentionOptions(options))
        return ["o": out.o, "lse": out.lse]
    }

    /// Masks per head and broadcast, densities 0.4 to 1, blocks of 16x48 to 128x256, T != S, a partial last block.
    public var cases: [OpCase] {
        // (B, T, S, Hq, Hkv, D, block rows, block keys, mask per (batch, head), density, causal)
        let grid: [(Int, Int, Int, Int, Int, Int, Int, Int, Bool, Float, Bool)] = [
            (1, 200, 200, 4, 2, 64, 64, 64, true, 0.5, true), (2, 130, 300, 2, 2, 128, 64, 64, true, 0.4, false),
            (1, 100, 100, 2, 1, 96, 16, 48, false, 0.5, true), (1, 64, 256, 2, 2, 64, 128, 128, false, 1.0, false),
            // D = 128 with blocks of 128 multiples: the sm_90 kernel's cases.
            (1, 400, 600, 4, 2, 128, 128, 256, true, 0.5, true), (2, 300, 300, 2, 1, 128, 128, 128, false, 0.6, false),
        ]
        return grid.map { c in
            let (B, T, S, Hq, Hkv, D, bm, bn, perHead, density, causal) = c
            var options = OpOptions()
            options.causal = causal
            options.settings = ["block_rows": bm, "block_keys": bn]
            let label = "B\(B) T\(T) S\(S) Hq\(Hq) Hkv\(Hkv) D\(D) blocks \(bm)x\(bn) density \(density)\(perHead ? " per head" : "") \(causal ? "causal" : "full")"
            return OpCase(label: label, options: options, flops: Double(density) * Attention.flops(B: B, T: T, S: S, H: Hq, D: D, causal: causal)) { seed in
                let mask = try BlockMask.random(B: perHead ? B : 1, H: perHead ? Hq : 1, T: T, S: S, blockRows: bm, blockKeys: bn,
                                                density: density, seed: seed &+ 3)
                return ["q": try Tensor.randomNormal([B, T, Hq, D], seed: seed), "k": try Tensor.randomNormal([B, S, Hkv, D], seed: seed &+ 1),
                        "v": try Tensor.randomNormal([B, S, Hkv, D], seed: seed &+ 2),
                        "mask": try Tensor(shape: mask.shape, scalars: mask.values.map(Float.init))]
            }
        }
    }

    public func benchLengths(on device: Device) -> [Int] { device == .cpu ? [256, 1024, 4096] : [2048, 8192, 32768] }

    /// Causal with a random mask keeping `s.density` (default half) of the blocks of `s.blockSize` (default 64) squared.
    public func benchCase(_ s: BenchSize, form: String, dtype: DType) throws -> OpCase {
        var options = OpOptions()
        let block = s.blockSize ?? 64
        options.settings = ["block_rows": block, "block_keys": block]
        let density = s.density ?? 0.5
        return OpCase(label: "B\(s.B) T\(s.T) H\(s.H) D\(s.D) density \(density) blocks \(block)", options: options,
                      flops: Double(density) * Attention.flops(B: s.B, T: s.T, S: s.T, H: s.H, D: s.D, causal: true)) { seed in
            let mask = try BlockMask.random(B: 1, H: 1, T: s.T, S: s.T, blockRows: block, blockKeys: block, density: density, seed: seed &+ 3)
            return ["q": try Tensor.randomNormal([s.B, s.T, s.H, s.D], seed: seed), "k": try Tensor.randomNormal([s.B, s.T, s.H, s.D], seed: seed &+ 1),
                    "v": try Tensor.randomNormal([s.B, s.T, s.H, s.D], seed: seed &+ 2),
                    "mask": try Tensor(shape: mask.shape, scalars: mask.values.map(Float.init))]
        }
    }
}
