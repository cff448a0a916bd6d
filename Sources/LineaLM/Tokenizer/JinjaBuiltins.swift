import Foundation

/// The filters, tests, methods, operators and global functions of the supported Jinja subset, with the
/// behavior of Jinja 2 and the Python types beneath it (and transformers' `tojson` and `raise_exception`).
enum JinjaBuiltins {
    private static func fail(_ problem: String) -> TokenizerError { .templateRender(problem: problem) }

    private static func argument(_ args: [JinjaValue], _ kwargs: [(String, JinjaValue)], _ position: Int, _ name: String) -> JinjaValue? {
        if let named = kwargs.first(where: { $0.0 == name }) { return named.1 }
        return position < args.count ? args[position] : nil
    }

    /// Python's `str.isspace` characters, which `strip()`, `split()` and `trim` remove.
    private static func isPythonSpace(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isWhitespace || (0x1C...0x1F).contains(scalar.value)
    }

    static func strip(_ text: String, _ chars: JinjaValue?, leading: Bool, trailing: Bool) -> String {
        let set: Set<Unicode.Scalar>? = {
            if case let .string(chars)? = chars { return Set(chars.unicodeScalars) }
            return nil
        }()
        let remove: (Unicode.Scalar) -> Bool = { set?.contains($0) ?? isPythonSpace($0) }
        var scalars = Substring(text).unicodeScalars
        if leading { while let first = scalars.first, remove(first) { scalars.removeFirst() } }
        if trailing { while let last = scalars.last, remove(last) { scalars.removeLast() } }
        return String(scalars)
    }

    private static func string(_ value: JinjaValue, for what: String) throws -> String {
        guard case let .string(text) = value else { throw fail("\(what) needs a string, got '\(value.typeName)'") }
        return text
    }

    // MARK: Filters

    static func filter(_ name: String, _ value: JinjaValue, args: [JinjaValue], kwargs: [(String, JinjaValue)],
                       renderer: JinjaRenderer) throws -> JinjaValue {
        switch name {
        case "trim":
            return .string(strip(value.text, argument(args, kwargs, 0, "chars"), leading: true, trailing: true))
        case "length", "count":
            switch value {
            case .undefined: return .int(0)
            case let .string(text): return .int(text.unicodeScalars.count)
            case let .array(items): return .int(items.count)
            case let .object(object): return .int(object.keys.count)
            default: throw fail("object of type '\(value.typeName)' has no len()")
            }
        case "tojson":
            let indent = argument(args, kwargs, 0, "indent")
            if let indent, !(indent.number != nil || indent.isUndefined || { if case .none = indent { return true }; return false }()) {
                throw fail("tojson: indent must be an integer")
            }
            return .string(try value.json(indent: indent?.number.map { Int($0) }))
        case "string":
            return .string(value.text)
        case "safe":
            return value
        case "join":
            let separator = argument(args, kwargs, 0, "d")?.text ?? ""
            var items = try value.iterated()
            if let attribute = argument(args, kwargs, 1, "attribute") {
                items = try items.map { try JinjaRenderer.member($0, attribute, describing: attribute.text) }
            }
            return .string(items.map(\.text).joined(separator: separator))
        case "lower": return .string(value.text.lowercased())
        case "upper": return .string(value.text.uppercased())
        case "capitalize":
            let text = value.text
            return .string(text.prefix(1).uppercased() + text.dropFirst().lowercased())
        case "title":
            return .string(value.text.capitalized)
        case "first":
            return try value.iterated().first ?? .undefined("first item")
        case "last":
            return try value.iterated().last ?? .undefined("last item")
        case "reverse":
            if case let .string(text) = value { return .string(String(String.UnicodeScalarView(text.unicodeScalars.reversed()))) }
            return .array(try value.iterated().reversed())
        case "list":
            return .array(try value.iterated())
        case "items":
            switch value {
            case .undefined: return .array([])
            case let .object(object): return .array(object.keys.map { .array([.string($0), object[$0]!]) })
            default: throw fail("items filter needs a mapping, got '\(value.typeName)'")
            }
        case "default", "d":
            let fallback = argument(args, kwargs, 0, "default_value") ?? .string("")
            let boolean = argument(args, kwargs, 1, "boolean")?.isTruthy ?? false
            if value.isUndefined || (boolean && !value.isTruthy) { return fallback }
            return value
        case "select", "reject":
            guard let testName = args.first?.text else { throw fail("\(name) needs a test name") }
            let keep = name == "select"
            return .array(try value.iterated().filter { try test(testName, $0, args: Array(args.dropFirst())) == keep })
        case "selectattr", "rejectattr":
            guard let attribute = args.first else { throw fail("\(name) needs an attribute name") }
            let keep = name == "selectattr"
            return .array(try value.iterated().filter { item in
                let member = try JinjaRenderer.member(item, attribute, describing: attribute.text)
                let passes = args.count > 1 ? try test(args[1].text, member, args: Array(args.dropFirst(2))) : member.isTruthy
                return passes == keep
            })
        case "map":
            if let attribute = argument([], kwargs, 0, "attribute") {
                return .array(try value.iterated().map { try JinjaRenderer.member($0, attribute, describing: attribute.text) })
            }
            guard let filterName = args.first?.text else { throw fail("map needs a filter name or attribute=") }
            guard JinjaParser.filters.contains(filterName) else { throw fail("unsupported filter '\(filterName)' in map") }
            return .array(try value.iterated().map {
                try filter(filterName, $0, args: Array(args.dropFirst()), kwargs: [], renderer: renderer)
            })
        case "unique":
            var seen: [JinjaValue] = []
            for item in try value.iterated() where !seen.contains(where: { $0.equals(item) }) { seen.append(item) }
            return .array(seen)
        case "sort":
            let items = try value.iterated()
            return .array(try items.sorted { try compare($0, $1) < 0 })
        case "int":
            switch value {
            case let .int(v): return .int(v)
            case let .double(v): return .int(Int(v))
            case let .bool(v): return .int(v ? 1 : 0)
            case let .string(text): return .int(Int(text.trimmingCharacters(in: .whitespaces)) ?? 0)
            default: return .int(0)
            }
        case "float":
            switch value {
            case let .string(text): return .double(Double(text.trimmingCharacters(in: .whitespaces)) ?? 0)
            default: return .double(value.number ?? 0)
            }
        case "abs":
            switch value {
            case let .int(v): return .int(abs(v))
            case let .double(v): return .double(abs(v))
            default: throw fail("bad operand type for abs(): '\(value.typeName)'")
            }
        case "replace":
            guard args.count >= 2 else { throw fail("replace needs the old and new strings") }
            return .string(value.text.replacingLiteral(args[0].text, with: args[1].text))
        default:
            throw fail("unsupported filter '\(name)'")
        }
    }

    // MARK: Tests

    static func test(_ name: String, _ value: JinjaValue, args: [JinjaValue]) throws -> Bool {
        func other() throws -> JinjaValue {
            guard let first = args.first else { throw fail("test '\(name)' needs an argument") }
            return first
        }
        switch name {
        case "defined": return !value.isUndefined
        case "undefined": return value.isUndefined
        case "none": if case .none = value { return true } else { return false }
        case "string": if case .string = value { return true } else { return false }
        case "boolean": if case .bool = value { return true } else { return false }
        case "true": if case .bool(true) = value { return true } else { return false }
        case "false": if case .bool(false) = value { return true } else { return false }
        case "integer": if case .int = value { return true } else { return false }
        case "float": if case .double = value { return true } else { return false }
        case "number": return value.number != nil
        case "mapping":
            if case .object = value { return true } else { return false }
        case "iterable":
            // Python can iterate strings, lists, dicts and Jinja's undefined.
            switch value {
            case .string, .array, .object, .undefined: return true
            default: return false
            }
        case "sequence":
            switch value {
            case .string, .array, .object, .undefined: return true
            default: return false
            }
        case "callable":
            switch value {
            case .macro, .function: return true
            default: return false
            }
        case "equalto", "eq", "==": return value.equals(try other())
        case "ne", "!=": return !value.equals(try other())
        case "sameas":
            let target = try other()
            switch (value, target) {
            case (.none, .none): return true
            case let (.bool(a), .bool(b)): return a == b
            case let (.namespace(a), .namespace(b)): return a === b
            default: return false
            }
        case "odd", "even":
            guard case let .int(number) = value else { throw fail("test '\(name)' needs an integer") }
            return (number % 2 != 0) == (name == "odd")
        case "divisibleby":
            guard case let .int(number) = value, case let .int(divisor) = try other(), divisor != 0 else {
                throw fail("test 'divisibleby' needs integers")
            }
            return number % divisor == 0
        case "lower": return value.text == value.text.lowercased()
        case "upper": return value.text == value.text.uppercased()
        case "in": return try binary("in", value, try other()).isTruthy
        case "gt", ">": return try compare(value, try other()) > 0
        case "lt", "<": return try compare(value, try other()) < 0
        case "ge", ">=": return try compare(value, try other()) >= 0
        case "le", "<=": return try compare(value, try other()) <= 0
        default: throw fail("unsupported test '\(name)'")
        }
    }

    // MARK: Operators

    /// -1, 0 or 1 as Python orders numbers and strings (by code point).
    static func compare(_ a: JinjaValue, _ b: JinjaValue) throws -> Int {
        if let x = a.number, let y = b.number { return x < y ? -1 : (x > y ? 1 : 0) }
        if case let .string(x) = a, case let .string(y) = b {
            return x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars) ? -1 : (x == y ? 0 : 1)
        }
        throw fail("'<' not supported between instances of '\(a.typeName)' and '\(b.typeName)'")
    }

    static func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws -> JinjaValue {
        switch op {
        case "==": return .bool(a.equals(b))
        case "!=": return .bool(!a.equals(b))
        case "<": return .bool(try compare(a, b) < 0)
        case "<=": return .bool(try compare(a, b) <= 0)
        case ">": return .bool(try compare(a, b) > 0)
        case ">=": return .bool(try compare(a, b) >= 0)
        case "~": return .string(a.text + b.text)
        case "in":
            switch b {
            case let .string(haystack):
                guard case let .string(needle) = a else { throw fail("'in <string>' requires a string as the left operand, not '\(a.typeName)'") }
                return .bool(needle.isEmpty || haystack.range(of: needle, options: .literal) != nil)
            case let .array(items): return .bool(items.contains { $0.equals(a) })
            case let .object(object):
                guard case let .string(key) = a else { return .bool(false) }
                return .bool(object[key] != nil)
            case .undefined: return .bool(false)
            default: throw fail("argument of type '\(b.typeName)' is not iterable")
            }
        default:
            break
        }
        if a.isUndefined || b.isUndefined {
            let name: String = { if case let .undefined(n) = a { return n }; if case let .undefined(n) = b { return n }; return "" }()
            throw fail("'\(name)' is undefined (in a '\(op)' operation)")
        }
        switch (op, a, b) {
        case let ("+", .string(x), .string(y)): return .string(x + y)
        case let ("+", .array(x), .array(y)): return .array(x + y)
        case let ("*", .string(x), .int(n)), let ("*", .int(n), .string(x)): return .string(String(repeating: x, count: max(n, 0)))
        default: break
        }
        guard let x = a.number, let y = b.number else {
            throw fail("unsupported operand types for \(op): '\(a.typeName)' and '\(b.typeName)'")
        }
        let integers = { if case .double = a { return false }; if case .double = b { return false }; return true }()
        switch op {
        case "+": return integers ? .int(Int(x) + Int(y)) : .double(x + y)
        case "-": return integers ? .int(Int(x) - Int(y)) : .double(x - y)
        case "*": return integers ? .int(Int(x) * Int(y)) : .double(x * y)
        case "/":
            guard y != 0 else { throw fail("division by zero") }
            return .double(x / y)
        case "//":
            guard y != 0 else { throw fail("integer division or modulo by zero") }
            return integers ? .int(Int((x / y).rounded(.down))) : .double((x / y).rounded(.down))
        case "%":
            guard y != 0 else { throw fail("integer division or modulo by zero") }
            // Python's modulo takes the divisor's sign.
            let r = x - y * (x / y).rounded(.down)
            return integers ? .int(Int(r)) : .double(r)
        case "**": return integers && y >= 0 ? .int(Int(pow(x, y))) : .double(pow(x, y))
        default: throw fail("unsupported operator '\(op)'")
        }
    }

    /// Python slicing of lists and strings, negative bounds and steps included.
    static func slice(_ value: JinjaValue, start: JinjaValue?, stop: JinjaValue?, step: JinjaValue?) throws -> JinjaValue {
        func integer(_ v: JinjaValue?) throws -> Int? {
            switch v {
            case nil, .none?: return nil
            case let .int(n)?: return n
            default: throw fail("slice indices must be integers or None")
            }
        }
        let stride = try integer(step) ?? 1
        guard stride != 0 else { throw fail("slice step cannot be zero") }
        func positions(_ count: Int) throws -> [Int] {
            func clamp(_ index: Int?, _ fallback: Int, low: Int, high: Int) -> Int {
                guard var i = index else { return fallback }
                if i < 0 { i += count }
                return min(max(i, low), high)
            }
            if stride > 0 {
                let from = clamp(try integer(start), 0, low: 0, high: count)
                let to = clamp(try integer(stop), count, low: 0, high: count)
                return Array(Swift.stride(from: from, to: to, by: stride))
            }
            let from = clamp(try integer(start), count - 1, low: -1, high: count - 1)
            let to = clamp(try integer(stop), -1, low: -1, high: count - 1)
            return Array(Swift.stride(from: from, to: to, by: stride))
        }
        switch value {
        case let .array(items): return .array(try positions(items.count).map { items[$0] })
        case let .string(text):
            let scalars = Array(text.unicodeScalars)
            return .string(String(String.UnicodeScalarView(try positions(scalars.count).map { scalars[$0] })))
        case .undefined: return value
        default: throw fail("'\(value.typeName)' object is not subscriptable")
        }
    }

    // MARK: Methods and functions

    static func method(_ base: JinjaValue, _ name: String, args: [JinjaValue], kwargs: [(String, JinjaValue)]) throws -> JinjaValue {
        switch base {
        case let .string(text):
            switch name {
            case "startswith", "endswith":
                guard let probe = args.first else { throw fail("\(name) needs an argument") }
                let candidates: [JinjaValue] = { if case let .array(items) = probe { return items }; return [probe] }()
                return .bool(try candidates.contains { candidate in
                    let s = try string(candidate, for: name)
                    return name == "startswith" ? text.unicodeScalars.starts(with: s.unicodeScalars)
                        : text.unicodeScalars.reversed().starts(with: s.unicodeScalars.reversed())
                })
            case "strip": return .string(strip(text, args.first, leading: true, trailing: true))
            case "lstrip": return .string(strip(text, args.first, leading: true, trailing: false))
            case "rstrip": return .string(strip(text, args.first, leading: false, trailing: true))
            case "upper": return .string(text.uppercased())
            case "lower": return .string(text.lowercased())
            case "title": return .string(text.capitalized)
            case "capitalize": return .string(text.prefix(1).uppercased() + text.dropFirst().lowercased())
            case "replace":
                guard args.count >= 2 else { throw fail("replace needs the old and new strings") }
                return .string(text.replacingLiteral(try string(args[0], for: name), with: try string(args[1], for: name)))
            case "split":
                let separator = argument(args, kwargs, 0, "sep")
                let limit: Int = { if case let .int(n)? = argument(args, kwargs, 1, "maxsplit") { return n }; return -1 }()
                return .array(try split(text, separator, limit: limit).map(JinjaValue.string))
            case "join":
                guard let items = args.first else { throw fail("join needs a list") }
                return .string(try items.iterated().map { try string($0, for: "join") }.joined(separator: text))
            case "find":
                let needle = try string(args.first ?? .undefined("sub"), for: name)
                guard let range = text.range(of: needle, options: .literal) else { return .int(-1) }
                return .int(text.unicodeScalars.distance(from: text.startIndex, to: range.lowerBound))
            default: break
            }
        case let .object(object):
            switch name {
            case "items": return .array(object.keys.map { .array([.string($0), object[$0]!]) })
            case "keys": return .array(object.keys.map(JinjaValue.string))
            case "values": return .array(object.keys.map { object[$0]! })
            case "get":
                guard case let .string(key)? = args.first else { throw fail("get needs a string key") }
                return object[key] ?? (args.count > 1 ? args[1] : .none)
            default: break
            }
        case let .undefined(variable):
            throw fail("'\(variable)' is undefined (calling .\(name)() on it)")
        default: break
        }
        throw fail("unsupported method '\(name)' of '\(base.typeName)'")
    }

    /// Python's `str.split`: on runs of whitespace (dropping empties) without a separator, else exactly.
    private static func split(_ text: String, _ separator: JinjaValue?, limit: Int) throws -> [String] {
        let scalars = Array(text.unicodeScalars)
        var pieces: [String] = []
        switch separator {
        case nil, .none?:
            var i = 0
            while i < scalars.count {
                while i < scalars.count, isPythonSpace(scalars[i]) { i += 1 }
                guard i < scalars.count else { break }
                if limit >= 0, pieces.count == limit {
                    var rest = Substring(String(String.UnicodeScalarView(scalars[i...]))).unicodeScalars
                    while let last = rest.last, isPythonSpace(last) { rest.removeLast() }
                    pieces.append(String(rest))
                    break
                }
                let start = i
                while i < scalars.count, !isPythonSpace(scalars[i]) { i += 1 }
                pieces.append(String(String.UnicodeScalarView(scalars[start..<i])))
            }
            return pieces
        case let .string(sep)?:
            let needle = Array(sep.unicodeScalars)
            guard !needle.isEmpty else { throw fail("split: empty separator") }
            var start = 0, i = 0
            while i + needle.count <= scalars.count {
                if (limit < 0 || pieces.count < limit), scalars[i..<(i + needle.count)].elementsEqual(needle) {
                    pieces.append(String(String.UnicodeScalarView(scalars[start..<i])))
                    i += needle.count
                    start = i
                } else {
                    i += 1
                }
            }
            pieces.append(String(String.UnicodeScalarView(scalars[start...])))
            return pieces
        default:
            throw fail("split: the separator must be a string")
        }
    }

    static func function(_ name: String, args: [JinjaValue], kwargs: [(String, JinjaValue)]) throws -> JinjaValue {
        switch name {
        case "namespace", "dict":
            var object = JinjaObject()
            if case let .object(initial)? = args.first { object = initial }
            for (key, value) in kwargs { object[key] = value }
            if name == "dict" { return .object(object) }
            let namespace = JinjaNamespace()
            namespace.object = object
            return .namespace(namespace)
        case "raise_exception":
            throw fail(args.first?.text ?? "raise_exception called")
        case "range":
            let bounds = try args.map { value -> Int in
                guard case let .int(n) = value else { throw fail("range needs integers") }
                return n
            }
            let (from, to, by) = bounds.count == 1 ? (0, bounds[0], 1)
                : bounds.count == 2 ? (bounds[0], bounds[1], 1)
                : bounds.count == 3 ? (bounds[0], bounds[1], bounds[2]) : (0, 0, 0)
            guard by != 0 else { throw fail("range needs 1 to 3 integer arguments and a non-zero step") }
            return .array(Swift.stride(from: from, to: to, by: by).map(JinjaValue.int))
        case "strftime_now":
            guard case let .string(format)? = args.first else { throw fail("strftime_now needs a format string") }
            return .string(strftime(format, Date()))
        default:
            throw fail("unsupported function '\(name)'")
        }
    }

    /// The handful of strftime codes chat templates use for "today's date".
    private static func strftime(_ format: String, _ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        let codes: [Character: String] = ["d": "dd", "b": "MMM", "B": "MMMM", "Y": "yyyy", "y": "yy", "m": "MM",
                                          "H": "HH", "M": "mm", "S": "ss", "A": "EEEE", "a": "EEE", "j": "DDD"]
        var out = ""
        var percent = false
        for c in format {
            if percent {
                if let pattern = codes[c] {
                    formatter.dateFormat = pattern
                    out += formatter.string(from: date)
                } else {
                    out.append(c == "%" ? "%" : c)
                }
                percent = false
            } else if c == "%" {
                percent = true
            } else {
                out.append(c)
            }
        }
        return out
    }
}
