/// The long convolution as a backend receives it: `u [B,H,L]`, `k [H,Lk]`, optional `D [H]`, and `o [B,H,L]` (f32)
/// preallocated on the inputs' device.
public struct LongConvCall: OpCall {
    /// Inputs.
    public let u: DeviceTensor, k: DeviceTensor, D: DeviceTensor?
    /// The output, written whole by the call.
    public let o: DeviceTensor
    /// The form asked for.
    public let form: LongConvForm
    /// Check the inputs finite first.
    public let validate: Bool
    /// Write NaN or infinite outputs instead of throwing.
    public let allowNonFiniteOutputs: Bool

    public var name: String { "long_conv \(form.rawValue)" }
    public func forEachTensor(_ body: (_ name: String, _ tensor: DeviceTensor) throws -> Void) rethrows {
        try body("u", u)
        try body("k", k)
        if let D { try body("D", D) }
        try body("o", o)
    }

    /// Runs on the CPU: packed f32 inputs read in place (others converted once), o written in place; inputs checked
    /// finite when `validate`, and the output unless `allowNonFiniteOutputs` (products of huge inputs overflow). O(the form).
    func runOnCPU() throws {
        let s = try LongConv.shape(u: u.shape, k: k.shape, D: D?.shape)
        var converted: [DeviceTensor] = []
        func packed(_ t: DeviceTensor?, _ name: String) throws -> UnsafeBufferPointer<Float>? {
            guard let t else { return nil }
            let inPlace = t.device == .cpu && t.dtype == .float32 && t.isContiguous
            let p = inPlace ? t : try DeviceTensor(t.host())
            if !inPlace { converted.append(p) }
            if validate, Tensor.finiteMaxMagnitude(p.floats) == nil { try p.host().expectFinite(name) }
            return p.floats
        }
        let (pu, pk, pd) = (try packed(u, "u")!, try packed(k, "k")!, try packed(D, "D"))
        let direct = o.dtype == .float32 && o.isContiguous
        let out = direct ? o : try DeviceTensor.uninitialized(o.shape)
        try LongConv.run(form, s, u: pu.baseAddress!, k: pk.baseAddress!, D: pd?.baseAddress, o: out.mutableFloats.baseAddress!)
        if !allowNonFiniteOutputs && !RecurrenceSIMD.allFinite(out.floats) {
            try out.host().checkFiniteOutput("o", hint: "the inputs are finite; their products overflow Float32")
        }
        if !direct { try o.copy(from: out) }
        withExtendedLifetime(converted) {}
    }
}

extension LongConv {
    /// The convolution where the inputs live (all on one device, float dtypes): returns `o [B,H,L]`, f32, on that device.
    /// On the CPU `validate` checks the inputs finite and the output is checked finite unless `allowNonFiniteOutputs`;
    /// the CPU runs both forms. A GPU runs the fft form by cuFFT (u, k, D of one dtype) without value checks (nothing
    /// waits for the device). O(B·H·L log L) fft, O(B·H·L·min(L, Lk)) direct.
    public static func forward(u: DeviceTensor, k: DeviceTensor, D: DeviceTensor? = nil, form: LongConvForm = .fft, validate: Bool = true,
                               allowNonFiniteOutputs: Bool = false) throws -> DeviceTensor {
        let s = try shape(u: u.shape, k: k.shape, D: D?.shape)
        try MemoryBudget.check([.init("o", u.shape)] + (form == .fft ? fftScratch(s) : []))
        let o = try DeviceTensor.uninitialized(u.shape, on: u.device)
        try Backends.run(LongConvCall(u: u, k: k, D: D, o: o, form: form, validate: validate, allowNonFiniteOutputs: allowNonFiniteOutputs))
        return o
    }
}
