import Linea

/// A SwiGLU MLP, `down(silu(gate(x)) · up(x))`: fla's GatedMLP, the Qwen and Kimi-Linear dense MLPs, their experts
/// and shared experts, and Llama's MLP (with its optional biases).
struct GatedMLP {
    /// The gate and up projections stacked by rows (`[2 · width, hidden]`: one matmul for both), or each on its own
    /// with optional biases.
    enum Projections {
        case stacked(DeviceTensor)
        case separate(gate: DeviceTensor, up: DeviceTensor, gateBias: DeviceTensor? = nil, upBias: DeviceTensor? = nil)
    }
    let projections: Projections, down: DeviceTensor, downBias: DeviceTensor?

    /// The projections as given (views of stacked experts, or Moonshot's w1 / w3 / w2). O(1).
    init(_ projections: Projections, down: DeviceTensor, downBias: DeviceTensor? = nil) {
        (self.projections, self.down, self.downBias) = (projections, down, downBias)
    }

    /// Takes `gate_proj`, `up_proj`, `down_proj` under `p` (with their `.bias` when `bias`); gate and up as one
    /// stacked tensor when the checkpoint stores them back to back (never with biases, which sit between them in name
    /// order). O(weights).
    init(_ w: Weights, _ p: String, hidden: Int, width: Int, bias: Bool = false) throws {
        let (gate, up) = (p + "gate_proj.weight", p + "up_proj.weight")
        func biasOf(_ name: String, _ n: Int) throws -> DeviceTensor? { bias ? try w.take(p + name + ".bias", [n]) : nil }
        if !bias, let both = try w.takeRows([(gate, [width, hidden]), (up, [width, hidden])]) {
            projections = .stacked(both)
        } else {
            projections = .separate(gate: try w.take(gate, [width, hidden]), up: try w.take(up, [width, hidden]),
                                    gateBias: try biasOf("gate_proj", width), upBias: try biasOf("up_proj", width))
        }
        (down, downBias) = (try w.take(p + "down_proj.weight", [hidden, width]), try biasOf("down_proj", hidden))
    }

    /// `x [..., hidden]` (f32, or already in the weights' 16-bit dtype) through the MLP, f32 out. O(rows · hidden · width).
    func callAsFunction(_ x: DeviceTensor) throws -> DeviceTensor {
        let middle: DeviceTensor
        switch projections {
        case let .stacked(both):
            middle = try Ops.swiglu(halves: Ops.matmul(x, weight: both, outputDType: .float32), outputDType: ModelMath.matmulInput(down))
        case let .separate(gate, up, gateBias, upBias):
            middle = try Ops.swiglu(gate: Ops.matmul(x, weight: gate, bias: gateBias, outputDType: .float32),
                                    up: Ops.matmul(x, weight: up, bias: upBias, outputDType: .float32))
        }
        return try Ops.matmul(middle, weight: down, bias: downBias, outputDType: .float32)
    }

    /// Experts stacked as transformers 5 holds them under `p`: `gate_up_proj [E, 2I, H]` (gate rows, then up rows) and
    /// `down_proj [E, H, I]`, each expert reading views of them; nil when `p` has no `gate_up_proj`. O(weights).
    static func stacked(_ w: Weights, _ p: String, count: Int, hidden: Int, width: Int) throws -> [GatedMLP]? {
        guard w.has(p + "gate_up_proj") else { return nil }
        let gateUp = try w.take(p + "gate_up_proj", [count, 2 * width, hidden])
        let down = try w.take(p + "down_proj", [count, hidden, width])
        return try (0..<count).map { e in
            let both = try gateUp.narrowed(axis: 0, e..<(e + 1)).reshaped([2 * width, hidden])
            return GatedMLP(.stacked(both), down: try down.narrowed(axis: 0, e..<(e + 1)).reshaped([hidden, width]))
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
