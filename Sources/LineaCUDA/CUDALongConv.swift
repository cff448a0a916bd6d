import Linea

extension CUDADeviceBackend {
    /// The fft form by cuFFT: u, k, D of one dtype among f32, bf16, f16, o f32; refused when cuFFT cannot be loaded
    /// (naming the libraries tried) and for the direct form (the Float64 reference, CPU only). O(1).
    func longConvSupport(_ c: LongConvCall) -> Support {
        if c.form != .fft { return .unsupported("the \(c.form.rawValue) form is the Float64 reference, CPU only (the GPU runs fft)") }
        guard CUDAUpload.inputTypes.contains(c.u.dtype), c.k.dtype == c.u.dtype, c.D.map({ $0.dtype == c.u.dtype }) ?? true else {
            return .unsupported("u, k, D dtypes \(c.u.dtype.shortName), \(c.k.dtype.shortName), \(c.D?.dtype.shortName ?? "none"); the long-conv kernels take one of f32, bf16, f16 for all")
        }
        if c.o.dtype != .float32 { return .unsupported("o has dtype \(c.o.dtype.shortName); the long-conv kernels write f32") }
        if case .failure(let error) = CUFFT.api { return .unsupported("cuFFT is not available: \(error)") }
        return .supported
    }

    /// Queues the fft form: the filters' first min(Lk, L) taps and the sequences zero-padded to n = `LongConv.fftSize(L)`
    /// (~2L) in cuFFT's in-place layout, both transformed, the sequences' spectra multiplied by their channel's filter
    /// spectrum and 1/n, transformed back, cropped to L and D·u added. Scratch (B·H + H rows of n + 2 floats) comes
    /// from the stream-ordered pool, so nothing waits for the device. O(B·H·n log n) on the device.
    func longConv(_ c: LongConvCall) throws {
        let s = try LongConv.shape(u: c.u.shape, k: c.k.shape, D: c.D?.shape)
        let (rows, H, L) = (s.batch * s.channels, s.channels, s.length)
        let n = LongConv.fftSize(L), pitch = CUFFT.pitch(n), bins = n / 2 + 1
        try CUDAModelOps.int32(["B·H": rows, "n + 2": pitch, "L": L, "Lk": s.filterLength])
        let suffix = try CUDAUpload.suffix(c.u.dtype, argument: "u")
        let f = try context.function(source: CUDAKernels.longConv, name: "linea_lconv_pad_\(suffix)")
        let multiply = try context.function(source: CUDAKernels.longConv, name: "linea_lconv_mul")
        let crop = try context.function(source: CUDAKernels.longConv, name: "linea_lconv_out_\(suffix)")
        let filters = try allocateUninitialized(byteCount: H * pitch * 4)
        let signals = try allocateUninitialized(byteCount: rows * pitch * 4)
        let (fb, sb) = (CUDABuffer(context: context, viewing: UInt64(filters.address), byteCount: filters.byteCount),
                        CUDABuffer(context: context, viewing: UInt64(signals.address), byteCount: signals.byteCount))
        func grid(_ elements: Int) -> (Int, Int, Int) { (max(1, min((elements + 255) / 256, 1 << 16)), 1, 1) }
        func pointer(_ x: DeviceTensor?) -> CUDAKernelArgument { .pointer(x.map { UInt64($0.address) } ?? 0) }
        try context.launch(f, grid: grid(H * pitch), block: (256, 1, 1), arguments: [
            pointer(c.k), .pointer(fb.address), .int32(Int32(H)), .int32(Int32(s.filterLength)), .int32(Int32(s.taps)), .int32(Int32(pitch)),
        ])
        try CUFFT.transform(fb, n: n, rows: H, inverse: false)
        try context.launch(f, grid: grid(rows * pitch), block: (256, 1, 1), arguments: [
            pointer(c.u), .pointer(sb.address), .int32(Int32(rows)), .int32(Int32(L)), .int32(Int32(L)), .int32(Int32(pitch)),
        ])
        try CUFFT.transform(sb, n: n, rows: rows, inverse: false)
        try context.launch(multiply, grid: grid(rows * bins), block: (256, 1, 1), arguments: [
            .pointer(sb.address), .pointer(fb.address), .int32(Int32(rows)), .int32(Int32(H)), .int32(Int32(bins)), .float(1 / Float(n)),
        ])
        try CUFFT.transform(sb, n: n, rows: rows, inverse: true)
        try context.launch(crop, grid: grid(rows * L), block: (256, 1, 1), arguments: [
            .pointer(sb.address), pointer(c.u), pointer(c.D), pointer(c.o), .int32(Int32(rows)), .int32(Int32(H)), .int32(Int32(L)),
            .int32(Int32(pitch)),
        ])
        withExtendedLifetime((filters, signals)) {}  // their cuMemFreeAsync is queued behind the kernels
    }
}
