import Foundation
import Linea

extension CUDADeviceBackend {
    /// The map kernels and linear_attn's chunked kernel: form chunked of 64, f32 q, k, v and o; Performer, hedgehog and
    /// hashing with their f32 weights. O(1).
    func featureMapSupport(_ c: FeatureMapCall) -> Support {
        if c.form != .chunked(size: 64) { return .unsupported("form \(c.form); the GPU runs the chunked form with chunks of 64") }
        for (name, x) in [("q", c.q), ("k", c.k), ("v", c.v), ("o", c.o)] where x.dtype != .float32 {
            return .unsupported("\(name) has dtype \(x.dtype.shortName); the feature-map kernels take f32 (FeatureMapAttention.forward casts)")
        }
        if c.kind == .performer || c.kind.weightInput != nil, c.projection?.dtype != .float32 {
            return .unsupported("\(c.kind.rawValue) needs its f32 weights (\(c.kind.weightInput ?? "the projection [m, K]"))")
        }
        return .supported
    }

    /// phi(q) and phi(k) by the map kernels (Performer: the projection by cuBLAS first), then linear_attn's chunked
    /// kernel over blocks of at most 128 features and 128 value columns (its largest K and V), the blocks' outputs
    /// summed: the output is linear in both. With the normalizer, v gets a column of ones, whose output is
    /// `scale phi(q_t) . sum_{s<=t} phi(k_s)`, the denominator. Not causal: each block's final state (the sum over the
    /// whole sequence) read out by every query, `scale phi(q_t) S`. O(B·HV·T·F·V) plus the map.
    func featureMap(_ c: FeatureMapCall) throws {
        let s = c.shape
        guard s.B * s.T * s.HV * s.V > 0 else { return }
        let F = c.kind.weightInput != nil ? 2 * (c.projection?.shape.last ?? 0)
            : FeatureMap(c.kind, features: c.projection?.shape[0] ?? 64).featureCount(K: s.K)
        let rows = s.B * s.T * s.H, valueRows = s.B * s.T * s.HV
        let columns = s.V + (c.normalize ? 1 : 0)
        try CUDAModelOps.int32(["B·T·H": rows, "B·T·HV": valueRows, "F": F, "B·T·H·F": rows * F, "B·T·HV·(V+1)": valueRows * columns])
        let phiQ = try mapped(c, c.q, query: true, features: F), phiK = try mapped(c, c.k, query: false, features: F)
        func run(_ q: DeviceTensor, _ k: DeviceTensor, _ v: DeviceTensor) throws -> (o: DeviceTensor, finalState: DeviceTensor) {
            try Recurrence.forward(.linearAttention, q: q, k: k, v: v, scale: c.scale, form: .chunked(size: 64), validate: false,
                                   allowNonFiniteOutputs: true)
        }
        func attend(_ q: DeviceTensor, _ k: DeviceTensor, _ v: DeviceTensor) throws -> DeviceTensor { try run(q, k, v).o }
        if F <= 128 && columns <= 128 && !c.normalize && c.causal {
            return try c.o.copy(from: attend(phiQ, phiK, c.v))
        }
        let accumulated = try DeviceTensor.zeros([valueRows, columns], on: device)
        for f0 in stride(from: 0, to: F, by: 128) {
            let width = min(128, F - f0)
            let (q, k) = F <= 128 ? (phiQ, phiK)
                : (try block(phiQ, rows: rows, columns: F, from: f0, width: width, shape: [s.B, s.T, s.H, width]),
                   try block(phiK, rows: rows, columns: F, from: f0, width: width, shape: [s.B, s.T, s.H, width]))
            for v0 in stride(from: 0, to: columns, by: 128) {
                let n = min(128, columns - v0)
                let v = try block(c.v, rows: valueRows, columns: s.V, from: v0, width: n, shape: [s.B, s.T, s.HV, n],
                                  ones: c.normalize ? s.V : -1)
                if !c.causal {
                    let state = try run(q, k, v).finalState
                    try launchFeatureMap("linea_fmap_readout", elements: valueRows * n, [
                        pointer(q), pointer(state), pointer(accumulated), .int32(Int32(s.B)), .int32(Int32(s.T)), .int32(Int32(s.H)),
                        .int32(Int32(s.HV)), .int32(Int32(width)), .int32(Int32(n)), .int32(Int32(columns)), .int32(Int32(v0)), .float(c.scale),
                    ])
                    continue
                }
                let o = try attend(q, k, v)
                try launchFeatureMap("linea_fmap_accum", elements: valueRows * n, [
                    pointer(o), pointer(accumulated), .int32(Int32(valueRows)), .int32(Int32(n)), .int32(Int32(columns)), .int32(Int32(v0)),
                    .int32(Int32(n)),
                ])
            }
        }
        try launchFeatureMap("linea_fmap_finish", elements: valueRows * s.V, [
            pointer(accumulated), pointer(c.o), .int32(Int32(valueRows)), .int32(Int32(columns)), .int32(Int32(s.V)), .int32(c.normalize ? 1 : 0),
        ])
    }

    /// phi of `x [B,T,H,K]` as `[B,T,H,F]` f32 (identity: x itself). Performer: `x (W K^(-1/4))ᵀ` by cuBLAS, then the
    /// exp with the stabilizers of `FeatureMap.apply` when normalized (the query row's max, the key sequence's);
    /// hedgehog and hashing: the per-head projection `x W_h`, then the two-sided features. O(rows·F), with a
    /// projection O(rows·n·K).
    private func mapped(_ c: FeatureMapCall, _ x: DeviceTensor, query: Bool, features F: Int) throws -> DeviceTensor {
        let s = c.shape, rows = s.B * s.T * s.H
        if c.kind == .identity { return x }
        let quarter = Float(1 / pow(Double(s.K), 0.25))
        let phi = try DeviceTensor.uninitialized([s.B, s.T, s.H, F], on: device)
        if c.kind.weightInput != nil, let w = c.projection {
            let n = F / 2
            let projected = try DeviceTensor.uninitialized([rows, n], on: device)
            try launchFeatureMap("linea_fmap_headproj", elements: rows * n, [
                pointer(x), pointer(w), pointer(projected), .int32(Int32(rows)), .int32(Int32(s.K)), .int32(Int32(s.H)), .int32(Int32(n)),
            ])
            let f = try context.function(source: CUDAKernels.featureMap, name: "linea_fmap_twosided")
            try context.launch(f, grid: ((rows + 7) / 8, 1, 1), block: (256, 1, 1), arguments: [  // a warp per row
                pointer(projected), pointer(phi), .int32(Int32(rows)), .int32(Int32(n)), .int32(c.kind == .hashing ? 1 : 0),
            ])
            return phi
        }
        guard c.kind == .performer, let w = c.projection else {
            let code: Int32 = switch c.kind {
            case .elu: 1
            case .relu: 2
            case .taylor2: 3
            default: 4  // cosformer (the maps with weights are handled above)
            }
            try launchFeatureMap("linea_fmap_map", elements: rows * F, [
                pointer(x), pointer(phi), .int32(Int32(rows)), .int32(Int32(s.K)), .int32(Int32(F)), .int32(Int32(s.T)), .int32(Int32(s.H)),
                .int32(code), .float(quarter),
            ])
            return phi
        }
        let projected = try DeviceTensor.uninitialized([rows, F], on: device)
        try CUBLAS.linear(x: buffer(x), weight: buffer(w), out: buffer(projected), m: rows, n: F, k: s.K, dtype: .float32)
        let mode: Int32 = c.normalize ? (query ? 1 : 2) : 0
        var maxima: DeviceTensor?
        if mode == 2 {
            let m = try DeviceTensor.uninitialized([s.B * s.H], on: device)
            let f = try context.function(source: CUDAKernels.featureMap, name: "linea_fmap_seqmax")
            try context.launch(f, grid: (s.B * s.H, 1, 1), block: (256, 1, 1), arguments: [
                pointer(projected), pointer(m), .int32(Int32(s.T)), .int32(Int32(s.H)), .int32(Int32(F)),
            ])
            maxima = m
        }
        let f = try context.function(source: CUDAKernels.featureMap, name: "linea_fmap_performer")
        try context.launch(f, grid: ((rows + 7) / 8, 1, 1), block: (256, 1, 1), arguments: [  // a warp per row
            pointer(x), pointer(projected), pointer(maxima), pointer(phi), .int32(Int32(rows)), .int32(Int32(s.K)), .int32(Int32(F)),
            .int32(Int32(s.T)), .int32(Int32(s.H)), .int32(mode), .float(quarter),
        ])
        return phi
    }

    /// Columns `from ..< from + width` of `x [rows, columns]` as a packed tensor of `shape`, zeros past the last column
    /// but a 1 in column `ones` (when >= 0). O(rows·width).
    private func block(_ x: DeviceTensor, rows: Int, columns: Int, from: Int, width: Int, shape: [Int], ones: Int = -1) throws -> DeviceTensor {
        let out = try DeviceTensor.uninitialized(shape, on: device)
        try launchFeatureMap("linea_fmap_cols", elements: rows * width, [
            pointer(x), pointer(out), .int32(Int32(rows)), .int32(Int32(columns)), .int32(Int32(from)), .int32(Int32(width)), .int32(Int32(ones)),
        ])
        return out
    }

    /// Queues an elementwise entry of feature_map.cu: a grid-stride loop over `elements`. O(1).
    private func launchFeatureMap(_ name: String, elements: Int, _ arguments: [CUDAKernelArgument]) throws {
        let f = try context.function(source: CUDAKernels.featureMap, name: name)
        try context.launch(f, grid: (max(1, min((elements + 255) / 256, 1 << 16)), 1, 1), block: (256, 1, 1), arguments: arguments)
    }

    private func pointer(_ x: DeviceTensor?) -> CUDAKernelArgument { .pointer(x.map { UInt64($0.address) } ?? 0) }
}
