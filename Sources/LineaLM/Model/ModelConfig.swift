import Foundation
import Linea

/// A model's `config.json`, read strictly: every typed read marks its key; keys never read are reported by
/// `unknownKeys` (the loader names them in a warning), and a value the runtime cannot honor is an error naming it.
public final class ConfigFields: @unchecked Sendable {
    /// The raw object.
    let values: [String: Any]
    /// Where these fields come from in messages, e.g. `config.json` or `config.json text_config`.
    public let source: String
    private var read: Set<String> = []

    /// Parses `data` (JSON; bare `Infinity`, `-Infinity` and `NaN` tokens outside strings taken as numbers).
    /// O(bytes).
    public convenience init(json data: Data, source: String) throws {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: ConfigFields.quotingNonFiniteTokens(data))
        } catch {
            throw LineaError.file(path: source, problem: "not valid JSON (\(error.localizedDescription))")
        }
        guard let values = object as? [String: Any] else {
            throw LineaError.file(path: source, problem: "expected a JSON object at the top level")
        }
        self.init(values, source: source)
    }

    init(_ values: [String: Any], source: String) {
        self.values = values
        self.source = source
    }

    /// Whether `key` is present and not null (marks it read).
    public func has(_ key: String) -> Bool {
        read.insert(key)
        return values[key] != nil && !(values[key] is NSNull)
    }

    /// Marks keys as understood without reading them (metadata such as `architectures`, `torch_dtype`).
    public func ignore(_ keys: [String]) { read.formUnion(keys) }

    /// Keys present but never read, sorted.
    public var unknownKeys: [String] { values.keys.filter { !read.contains($0) }.sorted() }

    private func field(_ key: String) -> String { "\(source): \(key)" }

    private func bad(_ key: String, _ expected: String) -> LineaError {
        LineaError.invalidArgument(argument: field(key), expected: expected, actual: ConfigFields.describe(values[key]))
    }

    /// An integer (a whole JSON number). O(1).
    public func int(_ key: String, default fallback: Int? = nil) throws -> Int {
        guard has(key) else {
            if let fallback { return fallback }
            throw LineaError.invalidArgument(argument: field(key), expected: "an integer", actual: "no such field")
        }
        guard let n = values[key] as? NSNumber, !ConfigFields.isBool(n), let i = Int(exactly: n.doubleValue) else { throw bad(key, "an integer") }
        return i
    }

    /// An integer or null. O(1).
    public func optionalInt(_ key: String) throws -> Int? { has(key) ? try int(key) : nil }

    /// A number; `{"__float__": "Infinity"}` and bare `Infinity` read as infinities. O(1).
    public func double(_ key: String, default fallback: Double? = nil) throws -> Double {
        guard has(key) else {
            if let fallback { return fallback }
            throw LineaError.invalidArgument(argument: field(key), expected: "a number", actual: "no such field")
        }
        guard let value = ConfigFields.number(values[key]) else { throw bad(key, "a number") }
        return value
    }

    /// A boolean. O(1).
    public func bool(_ key: String, default fallback: Bool) throws -> Bool {
        guard has(key) else { return fallback }
        guard let n = values[key] as? NSNumber, ConfigFields.isBool(n) else { throw bad(key, "true or false") }
        return n.boolValue
    }

    /// A string. O(1).
    public func string(_ key: String, default fallback: String? = nil) throws -> String {
        guard has(key) else {
            if let fallback { return fallback }
            throw LineaError.invalidArgument(argument: field(key), expected: "a string", actual: "no such field")
        }
        guard let s = values[key] as? String else { throw bad(key, "a string") }
        return s
    }

    /// An array of strings, or nil when absent. O(n).
    public func strings(_ key: String) throws -> [String]? {
        guard has(key) else { return nil }
        guard let a = values[key] as? [String] else { throw bad(key, "an array of strings") }
        return a
    }

    /// A per-layer list of kinds (e.g. `layer_types`, each "full_attention" or "linear_attention") as flags, true where
    /// the kind is `flagged`; nil when absent; an error naming the field for a length other than `layers` or a kind
    /// outside `allowed`. O(n).
    public func layerFlags(_ key: String, layers: Int, allowed: [String], flagged: String) throws -> [Bool]? {
        guard let types = try strings(key) else { return nil }
        guard types.count == layers else {
            throw LineaError.invalidArgument(argument: field(key), expected: "\(layers) entries (num_hidden_layers)", actual: "\(types.count)")
        }
        return try types.map { t in
            guard allowed.contains(t) else { throw unsupported(key, allowed.joined(separator: " or ")) }
            return t == flagged
        }
    }

    /// An array of integers (a lone integer reads as one), or nil when absent. O(n).
    public func ints(_ key: String) throws -> [Int]? {
        guard has(key) else { return nil }
        if let n = values[key] as? NSNumber, !ConfigFields.isBool(n), let i = Int(exactly: n.doubleValue) { return [i] }
        guard let a = values[key] as? [NSNumber], a.allSatisfy({ !ConfigFields.isBool($0) && Int(exactly: $0.doubleValue) != nil }) else {
            throw bad(key, "an integer or an array of integers")
        }
        return a.map { Int($0.doubleValue) }
    }

    /// A nested object (its own unknown keys tracked separately), or nil when absent. O(1).
    public func object(_ key: String) throws -> ConfigFields? {
        guard has(key) else { return nil }
        guard let o = values[key] as? [String: Any] else { throw bad(key, "an object") }
        return ConfigFields(o, source: "\(source) \(key)")
    }

    /// An error naming `key` and the value the runtime cannot honor.
    public func unsupported(_ key: String, _ supported: String) -> LineaError {
        bad(key, supported + " (what this runtime implements)")
    }

    static func isBool(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }

    static func number(_ value: Any?) -> Double? {
        if let n = value as? NSNumber, !isBool(n) { return n.doubleValue }
        let text = (value as? [String: Any])?["__float__"] as? String ?? value as? String
        switch text {
        case "Infinity", "inf": return .infinity
        case "-Infinity", "-inf": return -.infinity
        case "NaN", "nan": return .nan
        default: return nil
        }
    }

    static func describe(_ value: Any?) -> String {
        switch value {
        case nil: return "no such field"
        case is NSNull: return "null"
        case let s as String: return "'\(s)'"
        case let n as NSNumber: return isBool(n) ? (n.boolValue ? "true" : "false") : "\(n)"
        case let a as [Any]: return "an array of \(a.count)"
        case is [String: Any]: return "an object"
        default: return "\(value!)"
        }
    }

    /// The JSON text with bare `Infinity`, `-Infinity` and `NaN` outside strings turned into strings, which
    /// `number` reads back (Python's json module writes them; JSON has no such tokens). O(bytes).
    static func quotingNonFiniteTokens(_ data: Data) -> Data {
        let bytes = [UInt8](data)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0, inString = false
        while i < bytes.count {
            let c = bytes[i]
            if inString {
                out.append(c)
                if c == UInt8(ascii: "\\"), i + 1 < bytes.count { out.append(bytes[i + 1]); i += 2; continue }
                if c == UInt8(ascii: "\"") { inString = false }
                i += 1
                continue
            }
            if c == UInt8(ascii: "\"") { inString = true }
            var replaced = false
            for token in ["-Infinity", "Infinity", "NaN"] where bytes.count - i >= token.utf8.count && Array(bytes[i..<i + token.utf8.count]) == Array(token.utf8) {
                out += Array("\"\(token)\"".utf8)
                i += token.utf8.count
                replaced = true
                break
            }
            if !replaced { out.append(c); i += 1 }
        }
        return Data(out)
    }
}
