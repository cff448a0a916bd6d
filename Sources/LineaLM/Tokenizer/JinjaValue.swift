import Foundation

/// A value while a template renders, with Python's semantics where Jinja inherits them (truthiness,
/// equality, `str()`), and Jinja's undefined for missing names and keys.
indirect enum JinjaValue: Sendable {
    /// A missing name or key; carries what was looked up, for error messages.
    case undefined(String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JinjaValue])
    case object(JinjaObject)
    /// `namespace(...)`: the one mutable value, shared by reference.
    case namespace(JinjaNamespace)
    case macro(JinjaMacro)
    /// A global function: namespace, raise_exception, range, strftime_now, dict.
    case function(String)

    /// Python truthiness.
    var isTruthy: Bool {
        switch self {
        case .undefined, .none: return false
        case let .bool(value): return value
        case let .int(value): return value != 0
        case let .double(value): return value != 0
        case let .string(value): return !value.isEmpty
        case let .array(items): return !items.isEmpty
        case let .object(object): return !object.keys.isEmpty
        case .namespace, .macro, .function: return true
        }
    }

    var isUndefined: Bool { if case .undefined = self { return true } else { return false } }

    /// The Python type name, for error messages.
    var typeName: String {
        switch self {
        case .undefined: return "undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .array: return "list"
        case .object: return "dict"
        case .namespace: return "Namespace"
        case .macro: return "macro"
        case .function: return "function"
        }
    }

    /// What `{{ value }}` prints: Python's `str()`, with undefined printing as nothing.
    var text: String {
        switch self {
        case .undefined: return ""
        case let .string(value): return value
        default: return repr
        }
    }

    /// Python's `repr()`, which lists and dicts use for their items.
    var repr: String {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case let .bool(value): return value ? "True" : "False"
        case let .int(value): return String(value)
        case let .double(value): return JinjaValue.pythonFloat(value)
        case let .string(value):
            let quote = value.contains("'") && !value.contains("\"") ? "\"" : "'"
            var escaped = ""
            for scalar in value.unicodeScalars {
                switch scalar {
                case "\\": escaped += "\\\\"
                case "\n": escaped += "\\n"
                case "\r": escaped += "\\r"
                case "\t": escaped += "\\t"
                default:
                    if String(scalar) == quote { escaped += "\\" + quote } else { escaped.unicodeScalars.append(scalar) }
                }
            }
            return quote + escaped + quote
        case let .array(items): return "[" + items.map(\.repr).joined(separator: ", ") + "]"
        case let .object(object):
            return "{" + object.keys.map { "'\($0)': " + object.values[$0]!.repr }.joined(separator: ", ") + "}"
        case let .namespace(namespace): return "<Namespace \(namespace.object.keys)>"
        case let .macro(macro): return "<Macro '\(macro.name)'>"
        case let .function(name): return "<function \(name)>"
        }
    }

    /// Python prints floats with the shortest repr that round-trips, always with a '.' or exponent.
    static func pythonFloat(_ value: Double) -> String {
        if value.isNaN { return "nan" }
        if value.isInfinite { return value > 0 ? "inf" : "-inf" }
        if value == value.rounded(), abs(value) < 1e16 { return String(format: "%.1f", value) }
        return "\(value)"
    }

    /// Python's `==`: numbers compare across int, float and bool; containers compare item by item.
    func equals(_ other: JinjaValue) -> Bool {
        switch (self, other) {
        case (.undefined, .undefined), (.none, .none): return true
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a.count == b.count && zip(a, b).allSatisfy { $0.equals($1) }
        case let (.object(a), .object(b)):
            return a.keys.count == b.keys.count && a.keys.allSatisfy { key in b.values[key].map { a.values[key]!.equals($0) } ?? false }
        case let (.namespace(a), .namespace(b)): return a === b
        default:
            if let a = number, let b = other.number { return a == b }
            return false
        }
    }

    /// The numeric value of bool, int and float (Python's bool is an int).
    var number: Double? {
        switch self {
        case let .bool(value): return value ? 1 : 0
        case let .int(value): return Double(value)
        case let .double(value): return value
        default: return nil
        }
    }

    /// The items `for` walks: list items, dict keys, string characters; undefined walks nothing.
    func iterated() throws -> [JinjaValue] {
        switch self {
        case .undefined: return []
        case let .array(items): return items
        case let .object(object): return object.keys.map(JinjaValue.string)
        case let .string(value): return value.unicodeScalars.map { .string(String($0)) }
        default: throw TokenizerError.templateRender(problem: "'\(typeName)' object is not iterable")
        }
    }

    /// JSON text as Python's `json.dumps(value, ensure_ascii=False, indent=indent)` writes it.
    func json(indent: Int?, depth: Int = 0) throws -> String {
        let newline = indent.map { "\n" + String(repeating: " ", count: $0 * (depth + 1)) }
        let closing = indent.map { "\n" + String(repeating: " ", count: $0 * depth) } ?? ""
        let separator = indent == nil ? ", " : ","
        switch self {
        case .none: return "null"
        case let .bool(value): return value ? "true" : "false"
        case let .int(value): return String(value)
        case let .double(value):
            if value.isNaN { return "NaN" }
            if value.isInfinite { return value > 0 ? "Infinity" : "-Infinity" }
            return JinjaValue.pythonFloat(value)
        case let .string(value): return JinjaValue.jsonString(value)
        case let .array(items):
            if items.isEmpty { return "[]" }
            let inner = try items.map { (newline ?? "") + (try $0.json(indent: indent, depth: depth + 1)) }
            return "[" + inner.joined(separator: separator) + closing + "]"
        case let .object(object):
            if object.keys.isEmpty { return "{}" }
            let inner = try object.keys.map {
                (newline ?? "") + JinjaValue.jsonString($0) + ": " + (try object.values[$0]!.json(indent: indent, depth: depth + 1))
            }
            return "{" + inner.joined(separator: separator) + closing + "}"
        case let .namespace(namespace): return try JinjaValue.object(namespace.object).json(indent: indent, depth: depth)
        case .undefined, .macro, .function:
            throw TokenizerError.templateRender(problem: "tojson: object of type \(typeName) is not JSON serializable")
        }
    }

    static func jsonString(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    /// A value from a template input.
    init(_ value: TemplateValue) {
        switch value {
        case .none: self = .none
        case let .bool(v): self = .bool(v)
        case let .int(v): self = .int(v)
        case let .double(v): self = .double(v)
        case let .string(v): self = .string(v)
        case let .array(items): self = .array(items.map(JinjaValue.init))
        case let .object(entries):
            var object = JinjaObject()
            for entry in entries { object[entry.key] = JinjaValue(entry.value) }
            self = .object(object)
        }
    }
}

/// A dict that remembers insertion order, as Python's does (tojson and `items` depend on it).
struct JinjaObject: Sendable {
    private(set) var keys: [String] = []
    private(set) var values: [String: JinjaValue] = [:]

    subscript(key: String) -> JinjaValue? {
        get { values[key] }
        set {
            if values[key] == nil, newValue != nil { keys.append(key) }
            if newValue == nil { keys.removeAll { $0 == key } }
            values[key] = newValue
        }
    }
}

/// The object `namespace(...)` makes: attributes that `{% set ns.x = ... %}` can change from inside loops.
final class JinjaNamespace: @unchecked Sendable {
    // Only the render that created it touches it.
    var object = JinjaObject()
}

/// A `{% macro %}`: its parameters (with default expressions) and body.
struct JinjaMacro: Sendable {
    let name: String
    let parameters: [(String, JinjaExpr?)]
    let body: [JinjaNode]
}
