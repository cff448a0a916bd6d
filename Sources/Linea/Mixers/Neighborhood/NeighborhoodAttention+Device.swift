/// Neighborhood attention as a backend receives it: `q [B,*spatial,Hq,D]`, `k [B,*spatial,Hkv,D]`, `v [B,*spatial,Hkv,Dv]`,
/// `o [B,*spatial,Hq,Dv]` and `lse [B,*spatial,Hq]` (f32) preallocated on the inputs' device.
public struct NeighborhoodCall: OpCall {
    /// Inputs.
    public let q: DeviceTensor, k: DeviceTensor, v: DeviceTensor
    /// Outputs, written whole by the call.
    public let o: DeviceTensor, lse: DeviceTensor
    /// Kernel, stride, dilation, causal axes, scale.
    public let options: NeighborhoodOptions
    /// The form asked for.
    public let form: NeighborhoodForm

    public var name: String { "neighborhood \(form.rawValue)" }
    public func forEachTensor(_ body: (_ name: String, _ tensor: DeviceTensor) throws -> Void) rethrows {
        try body("q", q)
        try body("k", k)
        try body("v", v)
        try body("o", o)
        try body("lse", lse)
    }

    /// Runs on the CPU: the fused form on packed f32 inputs reads them and writes o and lse in place; the reference form,
    /// other dtypes or layouts, and inputs that fail the finiteness check (that path names them) go through host
    /// tensors. O(the form).
    func runOnCPU() throws {
        let p = try NeighborhoodProblem(q: q.shape, k: k.shape, v: v.shape, options: options)
        let packed = [q, k, v, o, lse].allSatisfy { $0.device == .cpu && $0.dtype == .float32 && $0.isContiguous }
        if form == .fused, packed, p.B * p.N * p.Hq > 0, let maxQ = Tensor.finiteMaxMagnitude(q.floats),
           let maxK = Tensor.finiteMaxMagnitude(k.floats), let maxV = Tensor.finiteMaxMagnitude(v.floats) {
            try Attention.checkFloat32Range(maxQ: maxQ, maxK: maxK, maxV: maxV, D: p.D, S: options.kernelSize.reduce(1, *),
                                            scale: p.scale, form: .flash)
            try NeighborhoodAttention.fused(p, AttentionPointers(q.floats, k.floats, v.floats), o: o.mutableFloats.baseAddress!,
                                            lse: lse.mutableFloats.baseAddress!)
            if !options.allowNonFiniteOutputs && !(RecurrenceSIMD.allFinite(o.floats) && RecurrenceSIMD.allFinite(lse.floats)) {
                try o.host().checkFiniteOutput("o", hint: NeighborhoodAttention.nonFiniteHint)
                try lse.host().checkFiniteOutput("lse", hint: NeighborhoodAttention.nonFiniteHint)
            }
            return
        }
        let out = try NeighborhoodAttention.forward(q: q.host(), k: k.host(), v: v.host(), options: options, form: form)
        try o.copy(from: out.o)
        try lse.copy(from: out.lse)
    }
}

extension NeighborhoodAttention {
    /// Neighborhood attention where the inputs live (all on one device): shapes and rules as `forward(q:k:v:options:form:)`
    /// on host tensors; returns `o [B,*spatial,Hq,Dv]` and `lse [B,*spatial,Hq]`, f32, on that device. The CPU runs both
    /// forms; a CUDA GPU runs the fused one (LineaCUDA's kernel). O(B·Hq·N·kernel volume·D) fused.
    public static func forward(q: DeviceTensor, k: DeviceTensor, v: DeviceTensor, options: NeighborhoodOptions,
                               form: NeighborhoodForm = .fused) throws -> (o: DeviceTensor, lse: DeviceTensor) {
        let p = try NeighborhoodProblem(q: q.shape, k: k.shape, v: v.shape, options: options)
        try MemoryBudget.check([.init("o", [p.B, p.N, p.Hq, p.Dv]), .init("lse", [p.B, p.N, p.Hq])])
        let o = try DeviceTensor.uninitialized([p.B] + p.spatial + [p.Hq, p.Dv], on: q.device)
        let lse = try DeviceTensor.uninitialized([p.B] + p.spatial + [p.Hq], on: q.device)
        try Backends.run(NeighborhoodCall(q: q, k: k, v: v, o: o, lse: lse, options: options, form: form))
        return (o, lse)
    }
}
