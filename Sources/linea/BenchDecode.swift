import Foundation
import Linea
import LineaCUDA

extension BenchCommand {
    /// `linea bench --decode`: `--layers` layers of gated_delta_rule decode steps through the public API
    /// (`Recurrence.step` on device tensors), fp32 states resident on the backend's device, per batch size; reports
    /// ms per token, the state traffic's rate (each layer reads and writes its state once per token) against a
    /// same-sized device-to-device copy timed in the same run, and the host↔device copies made inside the loop.
    func runDecode() throws {
        let device: Device = backend == "cuda" ? .cuda(0) : .cpu
        var cuda: CUDADeviceBackend?
        if device != .cpu {
            if let reason = CUDABackend.unavailableReason { throw Failure(description: reason) }
            cuda = try CUDADeviceBackend.register()
        }
        let backend = try Backends.backend(for: device)
        // The CPU step reads f32 inputs without a copy; the GPU's takes --dtype.
        let type: DType = device == .cpu ? .float32 : dtype == "f16" ? .float16 : dtype == "f32" ? .float32 : .bfloat16
        let (H, D) = (heads ?? 16, dim ?? 128)
        for line in Measure.hostDescription() { print(line) }
        if let cuda { print("gpu: \(cuda.context.deviceName) (\(cuda.context.architecture))") }
        print("decode: \(layers) layers of gated_delta_rule steps, H = \(H), K = V = \(D), fp32 state on \(device), inputs \(type.shortName)")
        print("")
        var rows: [[String]] = []
        for B in batch.map({ [$0] }) ?? [1, 64] {
            printError("bench: decode B = \(B) ...")
            let work = try RecurrentDecodeWorkload(.gatedDeltaRule, layers: layers, batch: B, heads: H, keyDim: D, valueDim: D,
                                                   dtype: type, device: device)
            for _ in 0..<3 { try work.step() }  // warm-up: kernels compiled, pages touched
            try backend.synchronize()
            let transfersBefore = cuda?.hostTransferCount ?? 0
            let stepSeconds = try Self.fastest { try work.step() } sync: { try backend.synchronize() }
            let transfers = (cuda?.hostTransferCount ?? 0) - transfersBefore
            // The yardstick: each layer's state copied into one scratch state of the same size (same bytes moved).
            let scratch = try DeviceTensor.zeros(work.states[0].shape, on: device)
            let copySeconds = try Self.fastest { for s in work.states { try scratch.copy(from: s) } } sync: { try backend.synchronize() }
            let bytes = Double(2 * work.layers * work.stateBytesPerLayer)
            rows.append(["\(B)", "\(work.layers)", String(format: "%.3f", stepSeconds * 1e3), String(format: "%.0f", Double(B) / stepSeconds),
                         String(format: "%.1f", bytes / stepSeconds / 1e9), String(format: "%.1f", bytes / copySeconds / 1e9),
                         String(format: "%.0f%%", 100 * copySeconds / stepSeconds), cuda == nil ? "-" : "\(transfers)"])
        }
        printTable(header: ["B", "layers", "ms/token", "tokens/s", "state GB/s", "copy GB/s", "% copy", "host copies in loop"], rows: rows)
        print("")
        print("state GB/s: 2 x layers x B·H·K·V·4 bytes per token (each state read and written once); copy GB/s: the same bytes "
              + "moved by \(device == .cpu ? "memcpy" : "cuMemcpyDtoDAsync") from each layer's state into one scratch state")
    }

    /// The fastest of 3 rounds of `body` repeated for at least 0.2 s (at least 5 times), in seconds per call;
    /// `sync` waits for queued device work before each clock read. O(rounds · calls).
    static func fastest(_ body: () throws -> Void, sync: () throws -> Void) throws -> Double {
        var best = Double.infinity
        var calls = 5
        for _ in 0..<3 {
            try sync()
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<calls { try body() }
            try sync()
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            best = min(best, seconds / Double(calls))
            if seconds < 0.2 { calls = min(10_000, Int(Double(calls) * 0.25 / max(seconds, 1e-6)) + 1) }
        }
        return best
    }
}
