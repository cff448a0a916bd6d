import Foundation

/// The weights of a checkpoint folder as Hugging Face saves them: one `model.safetensors`, or shards listed by
/// `model.safetensors.index.json` (`{"weight_map": {"name": "model-00001-of-00002.safetensors", ...}}`). Every shard
/// is opened (memory-mapped, header validated) once, at init; tensors are read as stored. O(headers) to open.
public final class SafeTensorsCheckpoint: @unchecked Sendable {
    /// The folder given at init.
    public let directory: String
    /// Every tensor name, sorted.
    public let names: [String]
    private let shards: [String: SafeTensorsFile]
    private let shardOf: [String: String]

    /// Opens the checkpoint in `directory`; throws `LineaError.file` naming the problem: neither file present, an
    /// index that is not JSON or has no `weight_map`, a shard that is missing, outside the folder or not a
    /// safetensors file, or a listed tensor its shard lacks.
    public init(directory: String) throws {
        self.directory = directory
        let folder = URL(fileURLWithPath: directory)
        let indexPath = folder.appendingPathComponent("model.safetensors.index.json").path
        let singlePath = folder.appendingPathComponent("model.safetensors").path
        var shardOf: [String: String] = [:]
        var shards: [String: SafeTensorsFile] = [:]
        if FileManager.default.fileExists(atPath: indexPath) {
            for (name, shard) in try SafeTensorsCheckpoint.weightMap(indexPath) {
                guard !shard.contains("/"), shard != "..", !shard.isEmpty else {
                    throw LineaError.file(path: indexPath, problem: "weight_map: tensor '\(name)' names shard '\(shard)'; expected a file name inside the folder")
                }
                if shards[shard] == nil { shards[shard] = try SafeTensorsFile(path: folder.appendingPathComponent(shard).path) }
                guard shards[shard]!.names.contains(name) else {
                    throw LineaError.file(path: shards[shard]!.path, problem: "no tensor named '\(name)', which \(indexPath) places in it")
                }
                shardOf[name] = shard
            }
        } else if FileManager.default.fileExists(atPath: singlePath) {
            let file = try SafeTensorsFile(path: singlePath)
            shards["model.safetensors"] = file
            for name in file.names { shardOf[name] = "model.safetensors" }
        } else {
            throw LineaError.file(path: directory, problem: "expected model.safetensors or model.safetensors.index.json in the folder, found neither")
        }
        self.shards = shards
        self.shardOf = shardOf
        names = shardOf.keys.sorted()
    }

    /// `name` as stored (see `SafeTensorsFile.deviceTensor`): mapped without a copy on the CPU; throws naming the
    /// tensor when the checkpoint has none of that name. O(1).
    public func deviceTensor(_ name: String) throws -> DeviceTensor {
        try file(for: name).deviceTensor(name)
    }

    /// `names` as one `[sum of rows, columns]` view when one shard stores them back to back in that order, else nil
    /// (`SafeTensorsFile.adjacentRows`). O(names).
    public func adjacentRows(_ names: [String]) throws -> DeviceTensor? {
        guard let shard = names.first.flatMap({ shardOf[$0] }), names.allSatisfy({ shardOf[$0] == shard }) else { return nil }
        return try shards[shard]!.adjacentRows(names)
    }

    /// The stored shape of `name`. O(1).
    public func shape(of name: String) throws -> [Int] { try file(for: name).shape(of: name) }

    /// The stored dtype of `name`. O(1).
    public func dtype(of name: String) throws -> DType { try file(for: name).dtype(of: name) }

    private func file(for name: String) throws -> SafeTensorsFile {
        guard let shard = shardOf[name], let file = shards[shard] else {
            throw LineaError.file(path: directory, problem: "the checkpoint has no tensor named '\(name)' (\(names.count) tensors)")
        }
        return file
    }

    /// The `weight_map` of an index file, in file order. O(file size).
    private static func weightMap(_ path: String) throws -> [(String, String)] {
        func problem(_ text: String) -> LineaError { .file(path: path, problem: text) }
        guard let data = FileManager.default.contents(atPath: path) else { throw problem("cannot read the index") }
        let root: JSONValue
        do {
            root = try data.withUnsafeBytes { raw throws(JSONParser.Failure) in try JSONParser.parse(raw.bindMemory(to: UInt8.self)) }
        } catch let failure as JSONParser.Failure {
            throw problem("not JSON: \(failure.message)")
        }
        guard case let .object(fields) = root, let map = fields.first(where: { $0.key == "weight_map" })?.value,
              case let .object(entries) = map else {
            throw problem("expected an object with a weight_map object")
        }
        return try entries.map { entry in  // the parser refuses duplicate keys
            guard case let .string(shard) = entry.value else {
                throw problem("weight_map: tensor '\(entry.key)' maps to \(entry.value.kindDescription), expected a shard file name")
            }
            return (entry.key, shard)
        }
    }
}
