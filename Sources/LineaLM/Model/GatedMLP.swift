import Linea

/// A SwiGLU MLP without biases, `down(silu(gate(x)) · up(x))`: fla's GatedMLP, the Qwen and Kimi-Linear dense MLPs,
/// their experts and shared experts.
struct GatedMLP {
    let gate: DeviceTensor, up: DeviceTensor, down: DeviceTensor

    /// The three projections as given (views of stacked experts, or Moonshot's w1 / w3 / w2). O(1).
    init(gate: DeviceTensor, up: DeviceTensor, down: DeviceTensor) {
        (self.gate, self.up, self.down) = (gate, up, down)
    }

    /// Takes `gate_proj`, `up_proj`, `down_proj` under `p`. O(weights).
    init(_ w: Weights, _ p: String, hidden: Int, width: Int) throws {
        gate = try w.take(p + "gate_proj.weight", [width, hidden])
        up = try w.take(p + "up_proj.weight", [width, hidden])
        down = try w.take(p + "down_proj.weight", [hidden, width])
    }

    /// `x [..., hidden]` through the MLP. O(rows · hidden · width).
    func callAsFunction(_ x: DeviceTensor) throws -> DeviceTensor {
        try Ops.matmul(Ops.swiglu(gate: Ops.matmul(x, weight: gate), up: Ops.matmul(x, weight: up)), weight: down)
    }

    /// Experts stacked as transformers 5 holds them under `p`: `gate_up_proj [E, 2I, H]` (gate rows, then up rows) and
    /// `down_proj [E, H, I]`, each expert reading views of them; nil when `p` has no `gate_up_proj`. O(weights).
    static func stacked(_ w: Weights, _ p: String, count: Int, hidden: Int, width: Int) throws -> [GatedMLP]? {
        guard w.has(p + "gate_up_proj") else { return nil }
        let gateUp = try w.take(p + "gate_up_proj", [count, 2 * width, hidden])
        let down = try w.take(p + "down_proj", [count, hidden, width])
        return try (0..<count).map { e in
            let both = try gateUp.narrowed(axis: 0, e..<(e + 1)).reshaped([2 * width, hidden])
            return GatedMLP(gate: try both.narrowed(axis: 0, 0..<width), up: try both.narrowed(axis: 0, width..<(2 * width)),
                            down: try down.narrowed(axis: 0, e..<(e + 1)).reshaped([hidden, width]))
        }
    }

    /// The routed experts' sum `[rows, hidden]` for `flat [rows, hidden]`: slot `s` of `indices [rows · topK]` sends row
    /// `s / topK` to expert `indices[s]`, weighted by `slotWeights [rows · topK, 1]`; each expert runs once on the rows
    /// routed to it (gathered) and adds into them (`Ops.indexAdd`). O(rows · topK · hidden · width).
    static func routed(_ experts: [GatedMLP], flat: DeviceTensor, indices: [Int], slotWeights: DeviceTensor, topK: Int) throws -> DeviceTensor {
        let (rows, device) = (flat.shape[0], flat.device)
        let sum = try DeviceTensor.zeros([rows, flat.shape[1]], on: device)
        for (e, expert) in experts.enumerated() {
            let slots = indices.indices.filter { indices[$0] == e }
            guard !slots.isEmpty else { continue }
            let picked = try DeviceTensor(integers: slots.map { $0 / topK }, shape: [slots.count], dtype: .int32, on: device)
            let weights = try Ops.embedding(ids: DeviceTensor(integers: slots, shape: [slots.count], dtype: .int32, on: device), table: slotWeights)
            try Ops.indexAdd(sum, rows: picked, values: expert(Ops.embedding(ids: picked, table: flat)), weights: weights.reshaped([slots.count]))
        }
        return sum
    }
}
