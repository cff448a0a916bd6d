/// A model's recurrent decode without the rest of the model: `layers` layers of one mechanism's step on fp32 states
/// resident on their device, each layer with its own token inputs uploaded once. The workload of
/// `linea bench --decode` and of the decode package-benchmark.
public struct RecurrentDecodeWorkload: Sendable {
    /// The mechanism every layer steps.
    public let mechanism: RecurrentMechanism
    /// Sizes: batch, query/key heads, value heads, key and value dims.
    public let batch: Int, heads: Int, valueHeads: Int, keyDim: Int, valueDim: Int
    /// Per layer: the token's q, k `[B,H,K]`, v `[B,HV,V]`, g and beta `[B,HV]` (as the mechanism needs them).
    private let inputs: [(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, g: DeviceTensor?, beta: DeviceTensor?)]
    /// Per layer: the state `[B,HV,K,V]` f32 and the output `[B,HV,V]` f32, on the device.
    public let states: [DeviceTensor], outputs: [DeviceTensor]

    /// Builds `layers` layers on `device` with seeded inputs in `dtype` (unit keys, gates in [-1, -1e-4], beta in
    /// [0, 1]) and zero states. O(layers · B·HV·K·V) memory.
    public init(_ mechanism: RecurrentMechanism, layers: Int, batch: Int, heads: Int, valueHeads: Int? = nil, keyDim: Int,
                valueDim: Int, dtype: DType = .float32, device: Device = .cpu, seed: UInt64 = 1) throws {
        let hv = valueHeads ?? heads
        for (name, value) in [("layers", layers), ("batch", batch), ("heads", heads), ("valueHeads", hv), ("keyDim", keyDim), ("valueDim", valueDim)]
        where value < 1 {
            throw LineaError.invalidArgument(argument: name, expected: ">= 1", actual: "\(value)")
        }
        try MemoryBudget.check([.init("decode states", [layers, batch, hv, keyDim, valueDim])])
        (self.mechanism, self.batch, self.heads, self.valueHeads, self.keyDim, self.valueDim) = (mechanism, batch, heads, hv, keyDim, valueDim)
        var inputs: [(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, g: DeviceTensor?, beta: DeviceTensor?)] = []
        var (states, outputs): ([DeviceTensor], [DeviceTensor]) = ([], [])
        for layer in 0..<layers {
            let x = try RecurrenceInputs.random(mechanism, B: batch, T: 1, H: heads, HV: hv, K: keyDim, V: valueDim,
                                                seed: seed &+ UInt64(layer) &* 16, initialState: false).qkL2Normalized()
            // One token: [B,1,heads,...] read as [B,heads,...].
            func put(_ t: Tensor?) throws -> DeviceTensor? {
                try t.map { try DeviceTensor($0.reshaped([batch] + $0.shape.dropFirst(2)), dtype: dtype, on: device) }
            }
            inputs.append((try put(x.q)!, try put(x.k)!, try put(x.v)!, try put(x.g), try put(x.beta)))
            states.append(try DeviceTensor.zeros([batch, hv, keyDim, valueDim], on: device))
            outputs.append(try DeviceTensor.zeros([batch, hv, valueDim], on: device))
        }
        (self.inputs, self.states, self.outputs) = (inputs, states, outputs)
    }

    /// Number of layers.
    public var layers: Int { states.count }

    /// Bytes of one layer's state.
    public var stateBytesPerLayer: Int { batch * valueHeads * keyDim * valueDim * 4 }

    /// One token through every layer: each layer's step reads and writes its state in place (queued on a GPU;
    /// call the backend's `synchronize` to wait). O(layers · B·HV·K·V).
    public func step() throws {
        for layer in 0..<states.count {
            let x = inputs[layer]
            try Recurrence.step(mechanism, q: x.q, k: x.k, v: x.v, g: x.g, beta: x.beta, state: states[layer], o: outputs[layer])
        }
    }
}
