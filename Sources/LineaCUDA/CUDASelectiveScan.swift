import Linea

extension CUDADeviceBackend {
    /// The scan kernel: u, delta, B, C, z in one of f32, bf16, f16; A, D, delta_bias and the state f32; N <= 64. O(1).
    func selectiveScanSupport(_ c: SelectiveScanCall) -> Support {
        let t = c.u.dtype
        guard CUDAUpload.inputTypes.contains(t) else { return .unsupported("u has dtype \(t.shortName); the scan kernel takes f32, bf16 or f16") }
        for (name, x) in [("delta", c.delta), ("B", c.B), ("C", c.C), ("z", c.z)] where x != nil && x!.dtype != t {
            return .unsupported("\(name) has dtype \(x!.dtype.shortName), u \(t.shortName); the scan kernel reads one dtype for u, delta, B, C, z")
        }
        for (name, x) in [("A", c.A), ("D", c.D), ("delta_bias", c.deltaBias)] where x != nil && x!.dtype != .float32 {
            return .unsupported("\(name) has dtype \(x!.dtype.shortName); the scan kernel reads f32 per-channel parameters")
        }
        if c.A.shape[1] > 64 { return .unsupported("N = \(c.A.shape[1]); the scan kernel holds at most 64 states per channel") }
        return .supported
    }

    /// Queues the scan: lane groups of 16 (N <= 16) or 32 lanes per channel, up to 16 channels of one group per block.
    /// O(1) launches.
    func selectiveScan(_ c: SelectiveScanCall) throws {
        let (batch, channels, length) = (c.u.shape[0], c.u.shape[1], c.u.shape[2])
        let n = c.A.shape[1]
        let groups = c.B.rank == 4 ? c.B.shape[1] : 1
        guard batch * channels * length > 0 else { return }  // the state already holds the initial one
        try CUDAModelOps.int32(["B·D·L": batch * channels * length, "B·D·N": batch * channels * n])
        let (lanes, perLane) = n <= 16 ? (16, 1) : n <= 32 ? (32, 1) : (32, 2)
        let perGroup = channels / groups
        let cb = (1...16).reversed().first { perGroup % $0 == 0 }!  // channels per block, all of one group
        let entry = "linea_sscan_\(try CUDAUpload.suffix(c.u.dtype))_s\(lanes)_p\(perLane)"
        let f = try context.function(source: CUDAKernels.selectiveScan, name: entry)
        func pointer(_ x: DeviceTensor?) -> CUDAKernelArgument { .pointer(x.map { UInt64($0.address) } ?? 0) }
        try context.launch(f, grid: (channels / cb, batch, 1), block: ((cb * lanes + 31) / 32 * 32, 1, 1), arguments: [
            pointer(c.u), pointer(c.delta), pointer(c.A), pointer(c.B), pointer(c.C), pointer(c.D), pointer(c.z), pointer(c.deltaBias),
            pointer(c.state), pointer(c.o), .int32(Int32(channels)), .int32(Int32(length)), .int32(Int32(n)), .int32(Int32(groups)),
            .int32(c.deltaSoftplus ? 1 : 0), .int32(Int32(cb)),
        ])
    }
}
