import Foundation
import Linea

/// A checkpoint's tensors handed to an architecture by name: each `take` checks the shape and marks the tensor used;
/// `finish` fails on what was never taken. Tensors keep their file dtype and are memory-mapped on the CPU, uploaded
/// once to a GPU.
public final class Weights {
    /// The checkpoint read.
    public let checkpoint: SafeTensorsCheckpoint
    /// Where the tensors go.
    public let device: Device
    /// Maps an architecture's tensor name to the checkpoint's (Qwen3.5's multimodal layout keeps the text model under
    /// `model.language_model.`).
    let rename: @Sendable (String) -> String
    private var taken: Set<String> = []

    /// The tensors of `checkpoint` for `device`, names mapped by `rename`. O(1).
    public init(_ checkpoint: SafeTensorsCheckpoint, device: Device, rename: @escaping @Sendable (String) -> String = { $0 }) {
        (self.checkpoint, self.device, self.rename) = (checkpoint, device, rename)
    }

    /// Whether the checkpoint has `name`. O(1).
    public func has(_ name: String) -> Bool { checkpoint.names.contains(rename(name)) }

    /// The tensor `name` of shape `shape` on the device; an error names a missing tensor or a wrong shape. O(1) on the
    /// CPU (mapped), O(bytes) to a GPU.
    public func take(_ name: String, _ shape: [Int]) throws -> DeviceTensor {
        let full = rename(name)
        guard checkpoint.names.contains(full) else {
            throw LineaError.invalidArgument(argument: "weight \(full)", expected: "a tensor of shape \(shape) in the checkpoint", actual: "none")
        }
        let found = try checkpoint.shape(of: full)
        guard found == shape else {
            throw LineaError.shapeMismatch(argument: "weight \(full)", expected: "\(shape)", actual: "\(found)")
        }
        taken.insert(full)
        return try checkpoint.deviceTensor(full).to(device)
    }

    /// The tensor `name` when present (for optional biases). O(1) or the upload.
    public func takeIfPresent(_ name: String, _ shape: [Int]) throws -> DeviceTensor? {
        has(name) ? try take(name, shape) : nil
    }

    /// Marks names as used on purpose (a tied head's missing copy, buffers such as rotary frequencies). O(n).
    public func skip(where predicate: (String) -> Bool) {
        taken.formUnion(checkpoint.names.filter(predicate))
    }

    /// Throws naming the tensors never taken (a checkpoint that does not match the config). O(names).
    public func finish() throws {
        let left = checkpoint.names.filter { !taken.contains($0) }.sorted()
        guard left.isEmpty else {
            let shown = left.prefix(5).joined(separator: ", ") + (left.count > 5 ? " and \(left.count - 5) more" : "")
            throw LineaError.invalidArgument(argument: "checkpoint \(checkpoint.directory)", expected: "only the tensors the config describes",
                                             actual: "\(left.count) left over: \(shown)")
        }
    }
}
