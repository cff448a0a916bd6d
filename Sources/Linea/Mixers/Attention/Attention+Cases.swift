import Foundation

/// Exact softmax attention as an op family: `q [B,T,Hq,D]`, `k [B,S,Hkv,D]`, `v [B,S,Hkv,Dv]` in, `o` and `lse`
/// out; forms `flash` and `split_kv[:N]` on both devices, `reference` on the CPU.
public struct AttentionFamily: OpFamily {
    /// The family. O(1).
    public init() {}

    public var name: String { "attention" }
    public var summary: String { "exact softmax attention (causal, window, GQA); flash is O(T) memory" }
    public var inputs: [OpInput] { [OpInput("q"), OpInput("k"), OpInput("v")] }
    public var outputs: [String] { ["o", "lse"] }

    /// CPU: flash and split-KV over 4 partitions (the merge runs even on 2 cores); GPU: flash, and split-KV on the
    /// cases that fit it (a few queries, no window).
    public func forms(on device: Device) -> [String] { device == .cpu ? ["flash", "split_kv:4"] : ["flash"] }

    public func inputDType(_ name: String, form: String, compute dtype: DType) -> DType { dtype }

    public func check(form: String, options: OpOptions) throws {
        guard let parsed = AttentionForm(name: form) else {
            throw LineaError.invalidArgument(argument: "--form", expected: "one of reference, flash, split_kv, split_kv:N", actual: "'\(form)'")
        }
        if case .splitKV(let n?) = parsed, n < 1 {
            throw LineaError.invalidArgument(argument: "--form", expected: "split_kv:N with N >= 1 partitions", actual: "'\(form)'")
        }
        if let window = options.window {
            guard window >= 1 else { throw LineaError.invalidArgument(argument: "--window", expected: ">= 1", actual: "\(window)") }
            guard options.causal else {
                throw LineaError.invalidArgument(argument: "--window", expected: "a causal mask (a sliding window is causal)", actual: "--no-causal")
            }
        }
    }

    static func attentionOptions(_ o: OpOptions) -> AttentionOptions {
        AttentionOptions(scale: o.scale, causal: o.causal, window: o.window, allowNonFiniteOutputs: o.allowNonFiniteOutputs)
    }

    public func checkValues(_ x: [String: Tensor], form: String, options: OpOptions) throws {
        try Attention.checkInputs(q: need(x, "q"), k: need(x, "k"), v: need(x, "v"), options: Self.attentionOptions(options),
                                  form: AttentionForm(name: form) ?? .flash)
    }

    public func reference(_ x: [String: Tensor], options: OpOptions) throws -> [String: Tensor] {
        let out = try Attention.forward(q: need(x, "q"), k: need(x, "k"), v: need(x, "v"), options: Self.attentionOptions(options), form: .reference)
        return ["o": out.o, "lse": out.lse]
    }

    public func run(_ form: String, _ x: [String: DeviceTensor], options: OpOptions) throws -> [String: DeviceTensor] {
        try check(form: form, options: options)
        let out = try Attention.forward(q: need(x, "q"), k: need(x, "k"), v: need(x, "v"), options: Self.attentionOptions(options),
                                        form: AttentionForm(name: form), outputDType: options.outputDType)
        return ["o": out.o, "lse": out.lse]
    }

    /// Awkward lengths (1, 63, 65, 1000), GQA and MQA, D != Dv, decode against a long KV, T != S, windows, D of 40
    /// to 256; the GPU kernels take head dims <= 256 (D != Dv by zero padding), and split-KV a few queries without a window.
    public var cases: [OpCase] {
        // (B, T, S, Hq, Hkv, D, Dv, causal, window, split-KV partitions on the GPU: nil none, 0 automatic)
        let grid: [(Int, Int, Int, Int, Int, Int, Int, Bool, Int?, Int?)] = [
            (1, 1, 1, 2, 2, 64, 64, true, nil, 0), (1, 63, 63, 2, 1, 60, 60, true, nil, 0), (2, 63, 63, 4, 4, 64, 64, true, nil, nil),
            (2, 64, 64, 4, 4, 64, 32, false, nil, nil), (1, 65, 65, 4, 2, 128, 128, true, nil, nil), (2, 65, 65, 4, 4, 128, 128, false, nil, nil),
            (2, 200, 200, 6, 2, 64, 64, false, nil, nil), (1, 1, 200, 4, 1, 128, 128, true, nil, 0), (1, 200, 200, 2, 1, 128, 128, true, 37, nil),
            (1, 100, 60, 2, 2, 64, 64, true, nil, nil), (1, 63, 150, 2, 2, 64, 64, true, 50, nil), (1, 300, 120, 2, 2, 32, 48, true, nil, nil),
            (1, 65, 90, 3, 1, 128, 128, false, nil, nil), (1, 65, 65, 2, 2, 96, 96, false, nil, nil), (1, 70, 70, 2, 1, 40, 40, true, nil, nil),
            (2, 257, 400, 2, 1, 128, 128, true, nil, nil), (1, 500, 500, 2, 2, 128, 128, true, 150, nil), (1, 130, 300, 2, 2, 128, 128, false, nil, nil),
            (1, 1000, 1000, 4, 2, 128, 128, true, nil, nil), (1, 1000, 1000, 2, 2, 64, 64, true, 129, nil), (3, 4, 1000, 8, 2, 128, 128, true, nil, 0),
            // Split-KV decode shapes: partitions automatic, 7, 1, 3; D up to 256; T > S (rows that see no key).
            (2, 1, 1000, 8, 2, 128, 128, true, nil, 0), (1, 4, 3000, 8, 1, 64, 64, true, nil, 7), (1, 16, 513, 4, 4, 128, 128, true, nil, 0),
            (1, 3, 200, 6, 2, 96, 96, false, nil, 1), (2, 1, 77, 2, 2, 256, 256, true, nil, 3), (1, 8, 5, 2, 1, 64, 64, true, nil, 0),
        ]
        return grid.map { c in
            let (B, T, S, Hq, Hkv, D, Dv, causal, window, partitions) = c
            var options = OpOptions()
            (options.causal, options.window) = (causal, window)
            let label = "B\(B) T\(T) S\(S) Hq\(Hq) Hkv\(Hkv) D\(D)\(Dv == D ? "" : " Dv\(Dv)") \(causal ? "causal" : "full")"
                + (window.map { " W\($0)" } ?? "")
            var gpu = max(D, Dv) <= 256 ? ["flash"] : []
            if let partitions, !gpu.isEmpty { gpu.append(partitions == 0 ? "split_kv" : "split_kv:\(partitions)") }
            return OpCase(label: label, options: options, gpuForms: gpu,
                          flops: Attention.flops(B: B, T: T, S: S, H: Hq, D: D, causal: causal, window: window)) { seed in
                ["q": try Tensor.randomNormal([B, T, Hq, D], seed: seed), "k": try Tensor.randomNormal([B, S, Hkv, D], seed: seed &+ 1),
                 "v": try Tensor.randomNormal([B, S, Hkv, Dv], seed: seed &+ 2)]
            }
        }
    }

    public func benchLengths(on device: Device) -> [Int] { device == .cpu ? [64, 256, 1024, 4096, 16384] : [2048, 8192, 32768] }

    /// Causal, H heads of D; split-KV is timed as decode: one query per sequence against T keys. o in the input dtype.
    public func benchCase(_ s: BenchSize, form: String, dtype: DType) throws -> OpCase {
        try check(form: form, options: OpOptions())
        let queries = if case .splitKV? = AttentionForm(name: form) { 1 } else { s.T }
        var options = OpOptions()
        options.outputDType = dtype
        return OpCase(label: "B\(s.B) T\(queries) S\(s.T) H\(s.H) D\(s.D)", options: options,
                      flops: Attention.flops(B: s.B, T: queries, S: s.T, H: s.H, D: s.D, causal: true)) { seed in
            ["q": try Tensor.randomNormal([s.B, queries, s.H, s.D], seed: seed), "k": try Tensor.randomNormal([s.B, s.T, s.H, s.D], seed: seed &+ 1),
             "v": try Tensor.randomNormal([s.B, s.T, s.H, s.D], seed: seed &+ 2)]
        }
    }
}
