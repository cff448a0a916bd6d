import Foundation

/// How the outputs of the scans of one order combine.
public enum ScanMerge: String, Sendable, CaseIterable {
    /// Elementwise sum (every scan's output has the same shape).
    case sum
    /// Concatenation along the last axis, scans in order.
    case concatenate
}

extension ScanOrder {
    /// `x [B, N, ...]` with its tokens (axis 1) taken in scan `s`'s order: `out[:, i] = x[:, perm[s][i]]`. Throws
    /// naming `argument` when axis 1 is not this grid's token count. O(elements).
    public func gather(_ x: Tensor, scan s: Int, argument: String = "x") throws -> Tensor {
        try checkTokens(x, argument)
        return Self.permuted(x, permutations[s], scatter: false)
    }

    /// The inverse of `gather`: `out[:, perm[s][i]] = y[:, i]`, back in raster order. O(elements).
    public func scatter(_ y: Tensor, scan s: Int, argument: String = "y") throws -> Tensor {
        try checkTokens(y, argument)
        return Self.permuted(y, permutations[s], scatter: true)
    }

    /// Runs a causal `mixer` (sequence tensors `[B, N, ...]` in, one `[B, N, ...]` out) once per scan of this order:
    /// each of `inputs` gathered in the scan's order, the mixer's output put back in raster order, then the scans
    /// merged by `merge`. Throws naming `inputs[i]` when an input's axis 1 is not the grid's token count, and the mixer's
    /// own errors. O(scans · (mixer + elements)).
    public func mix(_ inputs: [Tensor], merge: ScanMerge = .sum, mixer: ([Tensor]) throws -> Tensor) throws -> Tensor {
        for (i, x) in inputs.enumerated() { try checkTokens(x, "inputs[\(i)]") }
        var outputs: [Tensor] = []
        for s in permutations.indices {
            let y = try mixer(inputs.map { Self.permuted($0, permutations[s], scatter: false) })
            outputs.append(try scatter(y, scan: s, argument: "the mixer's output of scan \(s)"))
        }
        switch merge {
        case .sum:
            var total = outputs[0]
            for (s, y) in outputs.enumerated().dropFirst() {
                guard y.shape == total.shape else {
                    throw LineaError.shapeMismatch(argument: "the mixer's output of scan \(s)", expected: "\(total.shape) (as scan 0's)", actual: "\(y.shape)")
                }
                for i in 0..<total.count { total.scalars[i] += y.scalars[i] }
            }
            return total
        case .concatenate:
            let lead = Array(outputs[0].shape.dropLast())
            for (s, y) in outputs.enumerated() where Array(y.shape.dropLast()) != lead {
                throw LineaError.shapeMismatch(argument: "the mixer's output of scan \(s)", expected: "\(lead) before the last axis (as scan 0's)",
                                               actual: "\(y.shape)")
            }
            let widths = outputs.map { $0.shape.last ?? 1 }, width = widths.reduce(0, +)
            let rows = lead.reduce(1, *)
            try MemoryBudget.check([.init("concatenated scans", [rows, width])])
            var out = [Float](repeating: 0, count: rows * width)
            var offset = 0
            for (y, w) in zip(outputs, widths) {
                for r in 0..<rows { for j in 0..<w { out[r * width + offset + j] = y.scalars[r * w + j] } }
                offset += w
            }
            return try Tensor(shape: lead + [width], scalars: out)
        }
    }

    /// Throws unless `x` is `[B, N, ...]` with N this grid's token count. O(rank).
    func checkTokens(_ x: Tensor, _ argument: String) throws {
        guard x.rank >= 2, x.shape[1] == tokens else {
            throw LineaError.shapeMismatch(argument: argument,
                                           expected: "[B, \(tokens), ...]: the \(grid.map(String.init).joined(separator: "x")) grid's \(tokens) tokens on axis 1",
                                           actual: "\(x.shape)")
        }
    }

    /// `x` with axis 1 permuted: gathered (`out[:, i] = x[:, perm[i]]`) or scattered (`out[:, perm[i]] = x[:, i]`). O(elements).
    static func permuted(_ x: Tensor, _ perm: [Int], scatter: Bool) -> Tensor {
        let (B, N) = (x.shape[0], x.shape[1])
        let inner = x.shape.dropFirst(2).reduce(1, *)
        var out = [Float](repeating: 0, count: x.count)
        for b in 0..<B {
            for i in 0..<N {
                let (to, from) = scatter ? (perm[i], i) : (i, perm[i])
                let (o, s) = ((b * N + to) * inner, (b * N + from) * inner)
                for j in 0..<inner { out[o + j] = x.scalars[s + j] }
            }
        }
        return Tensor(uncheckedShape: x.shape, scalars: out)
    }
}

extension ScanOrder {
    /// `mix` on device tensors `[B, N, ...]` (f32, all on one device): each scan's inputs are gathered on the host and
    /// uploaded to that device, the `mixer` runs there (e.g. `Recurrence.forward` on a GPU), and its f32 output comes
    /// back to be put in raster order and merged; the result lives on the inputs' device. The permutes cross the host
    /// (no device gather kernel yet). O(scans · (mixer + elements)).
    public func mix(_ inputs: [DeviceTensor], merge: ScanMerge = .sum, mixer: ([DeviceTensor]) throws -> DeviceTensor) throws -> DeviceTensor {
        guard let device = inputs.first?.device else {
            throw LineaError.invalidArgument(argument: "inputs", expected: "at least one tensor", actual: "none")
        }
        for (i, x) in inputs.enumerated() {
            guard x.device == device else {
                throw LineaError.invalidArgument(argument: "inputs[\(i)]", expected: "a tensor on \(device) (as inputs[0])", actual: "\(x.device)")
            }
            try x.expectDType([.float32], "inputs[\(i)]")
        }
        let host = try inputs.map { try $0.host() }
        let merged = try mix(host, merge: merge) { scanned in
            try mixer(scanned.map { try DeviceTensor($0, on: device) }).host()
        }
        return try DeviceTensor(merged, on: device)
    }
}
