import Foundation
import Linea

/// A checkpoint's tensors handed to an architecture by name: each `take` checks the shape and marks the tensor used;
/// `finish` fails on what was never taken. Tensors keep their file dtype and are memory-mapped on the CPU, uploaded
/// once to a GPU. In `random` mode (`linea model init`) every `take` makes a tensor instead and records it.
public final class Weights {
    /// The checkpoint read (nil when making random weights).
    public let checkpoint: SafeTensorsCheckpoint?
    /// Where the tensors go.
    public let device: Device
    /// Maps an architecture's tensor name to the checkpoint's (Qwen3.5's multimodal layout keeps the text model under
    /// `model.language_model.`).
    let rename: @Sendable (String) -> String
    private var taken: Set<String> = []
    /// Random mode: the dtype made, which optional tensors exist, the draws, and what was made so far.
    private let randomDType: DType
    private let present: (String) -> Bool
    private var random = SeededRandom(seed: 0)
    /// The tensors made in random mode, by name.
    public private(set) var made: [String: DeviceTensor] = [:]

    /// The tensors of `checkpoint` for `device`, names mapped by `rename`. O(1).
    public init(_ checkpoint: SafeTensorsCheckpoint, device: Device, rename: @escaping @Sendable (String) -> String = { $0 }) {
        (self.checkpoint, self.device, self.rename) = (checkpoint, device, rename)
        (randomDType, present) = (.float32, { _ in false })
    }

    /// Random weights in `dtype` from `seed` on the CPU; `present` says which optional tensors exist (`has`). O(1).
    public init(randomSeed seed: UInt64, dtype: DType, present: @escaping (String) -> Bool = { _ in false }) {
        (checkpoint, device) = (nil, .cpu)
        rename = { $0 }
        (randomDType, self.present, random) = (dtype, present, SeededRandom(seed: seed))
    }

    /// Whether the checkpoint has `name`. O(1).
    public func has(_ name: String) -> Bool { checkpoint?.names.contains(rename(name)) ?? present(name) }

    /// The tensor `name` of shape `shape` on the device; an error names a missing tensor or a wrong shape. O(1) on the
    /// CPU (mapped), O(bytes) to a GPU.
    public func take(_ name: String, _ shape: [Int]) throws -> DeviceTensor {
        guard let checkpoint else { return try make(name, shape) }
        let full = try checked(name, shape, in: checkpoint)
        taken.insert(full)
        return try checkpoint.deviceTensor(full).to(device)
    }

    /// The 2-D tensors `parts` (name, shape) stacked by rows as one tensor on the device when the checkpoint stores
    /// them back to back in that order (so one matmul computes all their projections of an input), else nil and none
    /// of them taken (take them one by one); nil in random mode. Errors as `take`. O(1) on the CPU, O(bytes) to a GPU.
    public func takeRows(_ parts: [(name: String, shape: [Int])]) throws -> DeviceTensor? {
        guard let checkpoint else { return nil }
        let names = try parts.map { try checked($0.name, $0.shape, in: checkpoint) }
        guard let rows = try checkpoint.adjacentRows(names) else { return nil }
        taken.formUnion(names)
        return try rows.to(device)
    }

    /// The checkpoint's name for `name` after checking that it is there with `shape`. O(1).
    private func checked(_ name: String, _ shape: [Int], in checkpoint: SafeTensorsCheckpoint) throws -> String {
        let full = rename(name)
        guard checkpoint.names.contains(full) else {
            throw LineaError.invalidArgument(argument: "weight \(full)", expected: "a tensor of shape \(shape) in the checkpoint", actual: "none")
        }
        let found = try checkpoint.shape(of: full)
        guard found == shape else {
            throw LineaError.shapeMismatch(argument: "weight \(full)", expected: "\(shape)", actual: "\(found)")
        }
        return full
    }

    /// A random tensor for `name`, by what the name says it is: norms 1 (0 for a zero-centered norm is as good: the
    /// runtime adds 1), `A_log` log(1...16), `dt_bias` about softplus⁻¹(0.01), `D` 1, everything else normal with
    /// std 0.02 (0.1 for convolutions). O(n).
    private func make(_ name: String, _ shape: [Int]) throws -> DeviceTensor {
        let n = shape.reduce(1, *)
        var values = [Float](repeating: 0, count: n)
        let leaf = name.split(separator: ".").suffix(2).joined(separator: ".")
        if name.hasSuffix("A_log") {
            for i in 0..<n { values[i] = log(1 + 15 * Float(random.nextUnit())) }
        } else if name.hasSuffix("dt_bias") {
            for i in 0..<n { values[i] = -4.6 + 0.5 * Float(random.nextUnit()) }
        } else if name.hasSuffix(".D") || (leaf.contains("norm") && shape.count == 1) {
            values = [Float](repeating: 1, count: n)
        } else {
            let std: Float = name.contains("conv1d") ? 0.1 : 0.02
            values = try Tensor.randomNormal([n], seed: random.next(), scale: std).scalars
        }
        let tensor = try DeviceTensor(Tensor(shape: shape, scalars: values), dtype: randomDType)
        made[name] = tensor
        return tensor
    }

    /// The output head: `lm_head.weight` (the embedding's shape), or the embedding itself when tied and the
    /// checkpoint has no separate copy. O(1) or the upload.
    public func head(tied: Bool, embedding: DeviceTensor) throws -> DeviceTensor {
        tied && !has("lm_head.weight") ? embedding : try take("lm_head.weight", embedding.shape)
    }

    /// Marks names as used on purpose (a tied head's missing copy, buffers such as rotary frequencies). O(n).
    public func skip(where predicate: (String) -> Bool) {
        taken.formUnion(checkpoint?.names.filter(predicate) ?? [])
    }

    /// Throws naming the tensors never taken (a checkpoint that does not match the config). O(names).
    public func finish() throws {
        guard let checkpoint else { return }
        let left = checkpoint.names.filter { !taken.contains($0) }.sorted()
        guard left.isEmpty else {
            let shown = left.prefix(5).joined(separator: ", ") + (left.count > 5 ? " and \(left.count - 5) more" : "")
            throw LineaError.invalidArgument(argument: "checkpoint \(checkpoint.directory)", expected: "only the tensors the config describes",
                                             actual: "\(left.count) left over: \(shown)")
        }
    }
}
