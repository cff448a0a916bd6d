import Foundation

/// Mamba-1's selective scan as an op family: `u, delta, A, B, C` and the optional `D, z, delta_bias, initial_state`
/// in, `o [B,D,L]` and `final_state [B,D,N]` out; `--set delta_softplus=1` applies softplus to `delta + delta_bias`.
/// Forms on either device: `scan` (the whole sequence, channels in parallel) and `step` (token by token, the state
/// carried as a decode carries it); the GPU's kernel holds N <= 64 states per channel.
public struct SelectiveScanFamily: OpFamily {
    /// The family. O(1).
    public init() {}

    public var name: String { "selective_scan" }
    public var summary: String { "Mamba-1's selective scan (mamba_ssm's selective_scan_fn): h = e^(dt A) h + dt B u, y = C h + D u, y silu(z)" }
    public var inputs: [OpInput] {
        ["u", "delta", "A", "B", "C"].map { OpInput($0) } + ["D", "z", "delta_bias", "initial_state"].map { OpInput($0, optional: true) }
    }
    public var outputs: [String] { ["o", "final_state"] }

    public func forms(on device: Device) -> [String] { ["scan", "step"] }

    /// The per-channel parameters and the state stay f32 (as mamba_ssm keeps them); the sequences take the compute dtype.
    public func inputDType(_ name: String, form: String, compute dtype: DType) -> DType {
        ["A", "D", "delta_bias", "initial_state"].contains(name) ? .float32 : dtype
    }

    public func check(form: String, options: OpOptions) throws {
        guard ["scan", "step", "reference"].contains(form) else {
            throw LineaError.invalidArgument(argument: "--form", expected: "scan, step or reference", actual: "'\(form)'")
        }
        for (key, value) in options.settings where key != "delta_softplus" || !(0...1).contains(value) {
            throw LineaError.invalidArgument(argument: "--set", expected: "delta_softplus=0 or 1", actual: "\(key)=\(value)")
        }
        if options.window != nil || options.normalize || options.useQKL2Norm {
            throw LineaError.invalidArgument(argument: "--window", expected: "no attention or linear-attention options for selective_scan",
                                             actual: "one given")
        }
    }

    private func softplus(_ o: OpOptions) -> Bool { o.settings["delta_softplus"] == 1 }

    public func checkValues(_ x: [String: Tensor], form: String, options: OpOptions) throws {
        _ = try SelectiveScan.shape(u: need(x, "u").shape, delta: need(x, "delta").shape, A: need(x, "A").shape, B: need(x, "B").shape,
                                    C: need(x, "C").shape, D: x["D"]?.shape, z: x["z"]?.shape, deltaBias: x["delta_bias"]?.shape,
                                    initialState: x["initial_state"]?.shape)
        if options.validate { try SelectiveScan.validate(x) }
    }

    public func reference(_ x: [String: Tensor], options: OpOptions) throws -> [String: Tensor] {
        let out = try SelectiveScan.reference(u: need(x, "u"), delta: need(x, "delta"), A: need(x, "A"), B: need(x, "B"), C: need(x, "C"),
                                              D: x["D"], z: x["z"], deltaBias: x["delta_bias"], deltaSoftplus: softplus(options),
                                              initialState: x["initial_state"])
        return ["o": out.o, "final_state": out.finalState]
    }

    public func run(_ form: String, _ x: [String: DeviceTensor], options: OpOptions) throws -> [String: DeviceTensor] {
        try check(form: form, options: options)
        let (u, delta, A, B, C) = (try need(x, "u"), try need(x, "delta"), try need(x, "A"), try need(x, "B"), try need(x, "C"))
        guard form == "step" else {
            let out = try SelectiveScan.forward(u: u, delta: delta, A: A, B: B, C: C, D: x["D"], z: x["z"], deltaBias: x["delta_bias"],
                                                deltaSoftplus: softplus(options), initialState: x["initial_state"], validate: options.validate)
            return ["o": out.o, "final_state": out.finalState]
        }
        // One token at a time: the L axis is the last of u, delta, z, B and C.
        func token(_ t: DeviceTensor?, _ i: Int) throws -> DeviceTensor? { try t?.narrowed(axis: t!.rank - 1, i..<(i + 1)).contiguous() }
        let o = try DeviceTensor.zeros(u.shape, on: u.device)
        var state = x["initial_state"]
        if u.shape[2] == 0 {
            let s = try SelectiveScan.shape(u: u.shape, delta: delta.shape, A: A.shape, B: B.shape, C: C.shape, D: nil, z: nil, deltaBias: nil,
                                            initialState: state?.shape)
            return ["o": o, "final_state": try state ?? DeviceTensor.zeros([s.batch, s.channels, s.state], on: u.device)]
        }
        for i in 0..<u.shape[2] {
            let out = try SelectiveScan.forward(u: token(u, i)!, delta: token(delta, i)!, A: A, B: token(B, i)!, C: token(C, i)!, D: x["D"],
                                                z: token(x["z"], i), deltaBias: x["delta_bias"], deltaSoftplus: softplus(options),
                                                initialState: state, validate: options.validate && i == 0)
            try o.narrowed(axis: 2, i..<(i + 1)).copy(from: out.o)
            state = out.finalState
        }
        return ["o": o, "final_state": state!]
    }

    /// Inputs of one case: A = -e^(normal) (as Mamba's A_log gives), delta around 0 with softplus or in (0, 1] without.
    static func inputs(B: Int, D: Int, L: Int, N: Int, groups: Int?, softplus: Bool, optional: Bool, seed: UInt64) throws -> [String: Tensor] {
        let bc = groups.map { [B, $0, N, L] } ?? [B, N, L]
        var x: [String: Tensor] = [
            "u": try Tensor.randomNormal([B, D, L], seed: seed),
            "delta": softplus ? try Tensor.randomNormal([B, D, L], seed: seed &+ 1, scale: 0.5)
                : try Tensor.randomUniform([B, D, L], seed: seed &+ 1, in: 0.01...1),
            "A": try Tensor(shape: [D, N], scalars: Tensor.randomNormal([D, N], seed: seed &+ 2, scale: 0.5).scalars.map { -Foundation.exp($0) }),
            "B": try Tensor.randomNormal(bc, seed: seed &+ 3), "C": try Tensor.randomNormal(bc, seed: seed &+ 4),
        ]
        if optional {
            x["D"] = try Tensor.randomNormal([D], seed: seed &+ 5)
            x["z"] = try Tensor.randomNormal([B, D, L], seed: seed &+ 6)
            x["delta_bias"] = try Tensor.randomNormal([D], seed: seed &+ 7, scale: 0.3)
            x["initial_state"] = try Tensor.randomNormal([B, D, N], seed: seed &+ 8)
        }
        return x
    }

    static func flops(B: Int, D: Int, L: Int, N: Int) -> Double { 7 * Double(B) * Double(D) * Double(L) * Double(N) }

    /// One token, grouped and plain B/C, every optional input, softplus on and off, N below, at and above 8 lanes and
    /// past the GPU's 32 lanes (two states a lane), channel counts that split into odd blocks.
    public var cases: [OpCase] {
        // (B, D, L, N, groups, softplus, optional inputs)
        let grid: [(Int, Int, Int, Int, Int?, Bool, Bool)] = [
            (1, 4, 1, 16, nil, false, false), (2, 6, 37, 5, 2, true, true), (1, 3, 130, 16, nil, true, false),
            (2, 8, 64, 8, 4, false, true), (1, 5, 200, 20, 1, true, true), (1, 40, 70, 40, nil, true, true),
        ]
        return grid.map { c in
            let (B, D, L, N, groups, softplus, optional) = c
            var options = OpOptions()
            options.settings = ["delta_softplus": softplus ? 1 : 0]
            let label = "B\(B) D\(D) L\(L) N\(N)" + (groups.map { " G\($0)" } ?? "") + (softplus ? " softplus" : "")
                + (optional ? " D z delta_bias initial_state" : "")
            return OpCase(label: label, options: options, flops: Self.flops(B: B, D: D, L: L, N: N)) { seed in
                try Self.inputs(B: B, D: D, L: L, N: N, groups: groups, softplus: softplus, optional: optional, seed: seed)
            }
        }
    }

    public func benchLengths(on device: Device) -> [Int] { [1024, 4096, 16384, 65536] }

    /// D = H·D channels (Mamba's d_inner), N = 16, softplus, every optional input.
    public func benchCase(_ s: BenchSize, form: String, dtype: DType) throws -> OpCase {
        var options = OpOptions()
        options.settings = ["delta_softplus": 1]
        options.validate = false
        let channels = s.H * s.D
        return OpCase(label: "B\(s.B) D\(channels) L\(s.T) N16", options: options, flops: Self.flops(B: s.B, D: channels, L: s.T, N: 16)) { seed in
            try Self.inputs(B: s.B, D: channels, L: s.T, N: 16, groups: nil, softplus: true, optional: true, seed: seed)
        }
    }
}
