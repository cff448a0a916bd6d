import Foundation

/// Typed reads from the `Any` tree JSONSerialization returns, each failure naming the dotted field path.
struct JSONFields {
    let object: [String: Any]
    let path: String

    init(_ value: Any?, path: String) throws {
        guard let object = value as? [String: Any] else {
            throw TokenizerError.malformed(field: path, problem: "expected an object, got \(JSONFields.describe(value))")
        }
        self.object = object
        self.path = path
    }

    func field(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// True when the key is absent or JSON null.
    func isNull(_ key: String) -> Bool { object[key] == nil || object[key] is NSNull }

    func string(_ key: String) throws -> String {
        guard let value = object[key] as? String else {
            throw TokenizerError.malformed(field: field(key), problem: "expected a string, got \(JSONFields.describe(object[key]))")
        }
        return value
    }

    func optionalString(_ key: String) throws -> String? {
        isNull(key) ? nil : try string(key)
    }

    func bool(_ key: String, default fallback: Bool) throws -> Bool {
        if isNull(key) { return fallback }
        // JSONSerialization hands booleans back as NSNumber (objCType "c"); 0 and 1 are not booleans here.
        guard let number = object[key] as? NSNumber, String(cString: number.objCType) == "c" else {
            throw TokenizerError.malformed(field: field(key), problem: "expected true or false, got \(JSONFields.describe(object[key]))")
        }
        return number.boolValue
    }

    func int(_ key: String) throws -> Int {
        guard let number = object[key] as? NSNumber, let value = Int(exactly: number.doubleValue) else {
            throw TokenizerError.malformed(field: field(key), problem: "expected an integer, got \(JSONFields.describe(object[key]))")
        }
        return value
    }

    func array(_ key: String) throws -> [Any] {
        guard let value = object[key] as? [Any] else {
            throw TokenizerError.malformed(field: field(key), problem: "expected an array, got \(JSONFields.describe(object[key]))")
        }
        return value
    }

    func nested(_ key: String) throws -> JSONFields { try JSONFields(object[key], path: field(key)) }

    /// A short rendering of a JSON value for error messages.
    static func describe(_ value: Any?) -> String {
        switch value {
        case nil: return "nothing (the field is missing)"
        case is NSNull: return "null"
        case let string as String: return "\"\(string)\""
        case let number as NSNumber: return number.stringValue
        case is [Any]: return "an array"
        case is [String: Any]: return "an object"
        default: return "\(value!)"
        }
    }
}
