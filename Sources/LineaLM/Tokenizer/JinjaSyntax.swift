/// A Jinja expression.
indirect enum JinjaExpr: Sendable {
    case literal(JinjaValue)
    case name(String)
    case attribute(JinjaExpr, String)
    case index(JinjaExpr, JinjaExpr)
    case slice(JinjaExpr, start: JinjaExpr?, stop: JinjaExpr?, step: JinjaExpr?)
    case call(JinjaExpr, args: [JinjaExpr], kwargs: [(String, JinjaExpr)])
    case filter(JinjaExpr, name: String, args: [JinjaExpr], kwargs: [(String, JinjaExpr)])
    case test(JinjaExpr, name: String, args: [JinjaExpr], negated: Bool)
    case unary(String, JinjaExpr)
    case binary(String, JinjaExpr, JinjaExpr)
    case conditional(then: JinjaExpr, condition: JinjaExpr, otherwise: JinjaExpr?)
    case list([JinjaExpr])
    case dict([(JinjaExpr, JinjaExpr)])
}

/// A Jinja statement or piece of output.
indirect enum JinjaNode: Sendable {
    case text(String)
    case output(JinjaExpr)
    case conditional(branches: [(JinjaExpr, [JinjaNode])], otherwise: [JinjaNode])
    case loop(targets: [String], iterable: JinjaExpr, condition: JinjaExpr?, body: [JinjaNode], otherwise: [JinjaNode])
    /// `set name = value` or `set namespace.attribute = value`.
    case assign(name: String, attribute: String?, value: JinjaExpr)
    /// `set name %}...{% endset`
    case assignBlock(name: String, body: [JinjaNode])
    case macro(name: String, parameters: [(String, JinjaExpr?)], body: [JinjaNode])
    case breakLoop, continueLoop
}

/// Parses lexed parts into a tree. Tags, filters and tests outside the supported subset are errors naming them.
struct JinjaParser {
    static let filters: Set<String> = [
        "trim", "length", "count", "tojson", "string", "join", "lower", "upper", "first", "last", "items",
        "default", "d", "reject", "select", "rejectattr", "selectattr", "map", "list", "int", "float", "abs",
        "replace", "capitalize", "title", "safe", "reverse", "unique", "sort",
    ]
    static let tests: Set<String> = [
        "defined", "undefined", "none", "string", "number", "integer", "float", "boolean", "true", "false",
        "mapping", "iterable", "sequence", "callable", "equalto", "eq", "==", "ne", "!=", "sameas", "odd",
        "even", "divisibleby", "lower", "upper", "in", "gt", "lt", "ge", "le", ">", "<", ">=", "<=",
    ]

    private let parts: [JinjaPart]
    private var index = 0
    // The tokens of the tag being parsed.
    private var tokens: [JinjaToken] = []
    private var cursor = 0
    private var line = 1

    init(_ parts: [JinjaPart]) { self.parts = parts }

    private func syntax(_ message: String) -> TokenizerError { .templateSyntax(construct: message, line: line) }

    /// The whole template's nodes.
    mutating func parse() throws -> [JinjaNode] {
        let (nodes, end) = try parseBody(until: [])
        if let end { throw syntax("unexpected {% \(end) %}") }
        return nodes
    }

    /// Nodes up to one of the `until` tags, which is returned (its tokens stay loaded); nil at the end.
    private mutating func parseBody(until: Set<String>) throws -> ([JinjaNode], String?) {
        var nodes: [JinjaNode] = []
        while index < parts.count {
            let part = parts[index]
            index += 1
            switch part {
            case let .text(text):
                nodes.append(.text(text))
            case let .output(tagTokens, tagLine):
                load(tagTokens, tagLine)
                nodes.append(.output(try expression()))
                try expectEnd()
            case let .statement(tagTokens, tagLine):
                load(tagTokens, tagLine)
                guard case let .name(tag)? = take() else { throw syntax("a {% %} tag without a name") }
                if until.contains(tag) { return (nodes, tag) }
                if let node = try statement(tag) { nodes.append(node) }
            }
        }
        if !until.isEmpty {
            throw syntax("missing {% \(until.sorted().joined(separator: " or ")) %} before the end of the template")
        }
        return (nodes, nil)
    }

    private mutating func load(_ tagTokens: [JinjaToken], _ tagLine: Int) {
        tokens = tagTokens
        cursor = 0
        line = tagLine
    }

    private mutating func statement(_ tag: String) throws -> JinjaNode? {
        switch tag {
        case "if":
            var branches: [(JinjaExpr, [JinjaNode])] = []
            var condition = try expression()
            try expectEnd()
            while true {
                let (body, end) = try parseBody(until: ["elif", "else", "endif"])
                branches.append((condition, body))
                switch end {
                case "elif":
                    condition = try expression()
                    try expectEnd()
                case "else":
                    try expectEnd()
                    let (otherwise, _) = try parseBody(until: ["endif"])
                    try expectEnd()
                    return .conditional(branches: branches, otherwise: otherwise)
                default:
                    try expectEnd()
                    return .conditional(branches: branches, otherwise: [])
                }
            }
        case "for":
            var targets = [try name()]
            while accept(.symbol(",")) { targets.append(try name()) }
            guard accept(.name("in")) else { throw syntax("expected 'in' in {% for %}") }
            let iterable = try expression(allowConditional: false)
            let condition = accept(.name("if")) ? try expression() : nil
            if accept(.name("recursive")) { throw syntax("unsupported: recursive for loops") }
            try expectEnd()
            let (body, end) = try parseBody(until: ["else", "endfor"])
            var otherwise: [JinjaNode] = []
            try expectEnd()
            if end == "else" {
                (otherwise, _) = try parseBody(until: ["endfor"])
                try expectEnd()
            }
            return .loop(targets: targets, iterable: iterable, condition: condition, body: body, otherwise: otherwise)
        case "set":
            let target = try name()
            var attribute: String?
            if accept(.symbol(".")) { attribute = try name() }
            if accept(.symbol("=")) {
                let value = try expression()
                try expectEnd()
                return .assign(name: target, attribute: attribute, value: value)
            }
            if attribute != nil || accept(.symbol(",")) { throw syntax("unsupported: this form of {% set %}") }
            try expectEnd()
            let (body, _) = try parseBody(until: ["endset"])
            try expectEnd()
            return .assignBlock(name: target, body: body)
        case "macro":
            let macroName = try name()
            guard accept(.symbol("(")) else { throw syntax("expected ( after the macro name") }
            var parameters: [(String, JinjaExpr?)] = []
            if !accept(.symbol(")")) {
                repeat {
                    let parameter = try name()
                    parameters.append((parameter, accept(.symbol("=")) ? try expression() : nil))
                } while accept(.symbol(","))
                guard accept(.symbol(")")) else { throw syntax("expected ) after the macro parameters") }
            }
            try expectEnd()
            let (body, _) = try parseBody(until: ["endmacro"])
            return .macro(name: macroName, parameters: parameters, body: body)
        case "break":
            try expectEnd()
            return .breakLoop
        case "continue":
            try expectEnd()
            return .continueLoop
        case "generation":
            // transformers' marker of assistant text (for masks); it renders its body unchanged.
            try expectEnd()
            let (body, _) = try parseBody(until: ["endgeneration"])
            try expectEnd()
            return .conditional(branches: [(.literal(.bool(true)), body)], otherwise: [])
        default:
            throw syntax("unsupported tag {% \(tag) %}")
        }
    }

    // MARK: Expressions, in Jinja's precedence order (lowest first).

    private func peekToken() -> JinjaToken? { cursor < tokens.count ? tokens[cursor] : nil }

    private mutating func take() -> JinjaToken? {
        defer { cursor += 1 }
        return peekToken()
    }

    private mutating func accept(_ token: JinjaToken) -> Bool {
        guard peekToken() == token else { return false }
        cursor += 1
        return true
    }

    private mutating func expectEnd() throws {
        if let extra = peekToken() { throw syntax("unexpected \(JinjaParser.describe(extra)) in the tag") }
    }

    private mutating func expect(_ token: JinjaToken) throws {
        guard accept(token) else {
            throw syntax("expected \(JinjaParser.describe(token)), got \(peekToken().map(JinjaParser.describe) ?? "the end of the tag")")
        }
    }

    private mutating func name() throws -> String {
        guard case let .name(value)? = take() else { throw syntax("expected a name") }
        return value
    }

    static func describe(_ token: JinjaToken) -> String {
        switch token {
        case let .name(name): return "'\(name)'"
        case let .string(text): return "string '\(text)'"
        case let .int(value): return "\(value)"
        case let .double(value): return "\(value)"
        case let .symbol(symbol): return "'\(symbol)'"
        }
    }

    mutating func expression(allowConditional: Bool = true) throws -> JinjaExpr {
        var value = try orExpression()
        while allowConditional, accept(.name("if")) {
            let condition = try orExpression()
            let otherwise = accept(.name("else")) ? try expression() : nil
            value = .conditional(then: value, condition: condition, otherwise: otherwise)
        }
        return value
    }

    private mutating func orExpression() throws -> JinjaExpr {
        var value = try andExpression()
        while accept(.name("or")) { value = .binary("or", value, try andExpression()) }
        return value
    }

    private mutating func andExpression() throws -> JinjaExpr {
        var value = try notExpression()
        while accept(.name("and")) { value = .binary("and", value, try notExpression()) }
        return value
    }

    private mutating func notExpression() throws -> JinjaExpr {
        if accept(.name("not")) { return .unary("not", try notExpression()) }
        return try comparison()
    }

    private mutating func comparison() throws -> JinjaExpr {
        var value = try additive()
        while true {
            if case let .symbol(op)? = peekToken(), ["==", "!=", "<", "<=", ">", ">="].contains(op) {
                cursor += 1
                value = .binary(op, value, try additive())
            } else if accept(.name("in")) {
                value = .binary("in", value, try additive())
            } else if peekToken() == .name("not"), cursor + 1 < tokens.count, tokens[cursor + 1] == .name("in") {
                cursor += 2
                value = .unary("not", .binary("in", value, try additive()))
            } else {
                return value
            }
        }
    }

    private mutating func additive() throws -> JinjaExpr {
        var value = try concatenation()
        while case let .symbol(op)? = peekToken(), op == "+" || op == "-" {
            cursor += 1
            value = .binary(op, value, try concatenation())
        }
        return value
    }

    private mutating func concatenation() throws -> JinjaExpr {
        var value = try multiplicative()
        while accept(.symbol("~")) { value = .binary("~", value, try multiplicative()) }
        return value
    }

    private mutating func multiplicative() throws -> JinjaExpr {
        var value = try power()
        while case let .symbol(op)? = peekToken(), ["*", "/", "//", "%"].contains(op) {
            cursor += 1
            value = .binary(op, value, try power())
        }
        return value
    }

    private mutating func power() throws -> JinjaExpr {
        var value = try unary()
        while accept(.symbol("**")) { value = .binary("**", value, try unary()) }
        return value
    }

    private mutating func unary(withFilters: Bool = true) throws -> JinjaExpr {
        var value: JinjaExpr
        if accept(.symbol("-")) {
            value = .unary("-", try unary(withFilters: false))
        } else if accept(.symbol("+")) {
            value = try unary(withFilters: false)
        } else {
            value = try postfix(try primary())
        }
        guard withFilters else { return value }
        while true {
            if accept(.symbol("|")) {
                let filter = try name()
                guard JinjaParser.filters.contains(filter) else { throw syntax("unsupported filter '\(filter)'") }
                var args: [JinjaExpr] = [], kwargs: [(String, JinjaExpr)] = []
                if accept(.symbol("(")) { (args, kwargs) = try arguments() }
                value = .filter(value, name: filter, args: args, kwargs: kwargs)
            } else if accept(.name("is")) {
                let negated = accept(.name("not"))
                var test: String
                switch take() {
                case let .name(name)?: test = name
                case let .symbol(symbol)?: test = symbol
                default: throw syntax("expected a test name after 'is'")
                }
                if test == "none" || test == "None" { test = "none" }
                if test == "true" || test == "True" { test = "true" }
                if test == "false" || test == "False" { test = "false" }
                guard JinjaParser.tests.contains(test) else { throw syntax("unsupported test '\(test)'") }
                var args: [JinjaExpr] = []
                if accept(.symbol("(")) {
                    (args, _) = try arguments()
                } else if let next = peekToken(), JinjaParser.startsTestArgument(next) {
                    args = [try postfix(try primary())]
                }
                value = .test(value, name: test, args: args, negated: negated)
            } else {
                return value
            }
        }
    }

    /// Jinja takes one bare argument after a test name (`is divisibleby 3`) unless a keyword follows.
    private static func startsTestArgument(_ token: JinjaToken) -> Bool {
        switch token {
        case .string, .int, .double: return true
        case let .name(name): return !["and", "or", "else", "if", "in", "is", "not"].contains(name)
        case .symbol: return false
        }
    }

    private mutating func postfix(_ base: JinjaExpr) throws -> JinjaExpr {
        var value = base
        while true {
            if accept(.symbol(".")) {
                switch take() {
                case let .name(attribute)?: value = .attribute(value, attribute)
                case let .int(position)?: value = .index(value, .literal(.int(position)))
                default: throw syntax("expected an attribute name after '.'")
                }
            } else if accept(.symbol("[")) {
                value = try subscriptExpression(value)
            } else if accept(.symbol("(")) {
                let (args, kwargs) = try arguments()
                value = .call(value, args: args, kwargs: kwargs)
            } else {
                return value
            }
        }
    }

    /// `[i]` or a slice `[start:stop:step]`; the `[` is consumed.
    private mutating func subscriptExpression(_ value: JinjaExpr) throws -> JinjaExpr {
        var parts: [JinjaExpr?] = [nil]
        var colons = 0
        while !accept(.symbol("]")) {
            if accept(.symbol(":")) {
                colons += 1
                guard colons <= 2 else { throw syntax("too many ':' in a slice") }
                parts.append(nil)
            } else {
                guard parts[parts.count - 1] == nil else { throw syntax("expected ']'") }
                parts[parts.count - 1] = try expression()
            }
        }
        if colons == 0 {
            guard let single = parts[0] else { throw syntax("empty subscript []") }
            return .index(value, single)
        }
        while parts.count < 3 { parts.append(nil) }
        return .slice(value, start: parts[0], stop: parts[1], step: parts[2])
    }

    /// Call arguments up to `)`: positional, then `name=value`.
    private mutating func arguments() throws -> ([JinjaExpr], [(String, JinjaExpr)]) {
        var args: [JinjaExpr] = [], kwargs: [(String, JinjaExpr)] = []
        if accept(.symbol(")")) { return (args, kwargs) }
        repeat {
            if case let .name(key)? = peekToken(), cursor + 1 < tokens.count, tokens[cursor + 1] == .symbol("=") {
                cursor += 2
                kwargs.append((key, try expression()))
            } else {
                if !kwargs.isEmpty { throw syntax("a positional argument after keyword arguments") }
                args.append(try expression())
            }
        } while accept(.symbol(","))
        try expect(.symbol(")"))
        return (args, kwargs)
    }

    private mutating func primary() throws -> JinjaExpr {
        guard let token = take() else { throw syntax("expected an expression") }
        switch token {
        case let .string(text):
            var value = text
            // Adjacent string literals concatenate, as in Python.
            while case let .string(more)? = peekToken() { value += more; cursor += 1 }
            return .literal(.string(value))
        case let .int(value): return .literal(.int(value))
        case let .double(value): return .literal(.double(value))
        case let .name(name):
            switch name {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(name)
            }
        case .symbol("("):
            if accept(.symbol(")")) { return .list([]) }
            let first = try expression()
            if accept(.symbol(")")) { return first }
            var items = [first]
            while accept(.symbol(",")) {
                if peekToken() == .symbol(")") { break }
                items.append(try expression())
            }
            try expect(.symbol(")"))
            return .list(items)
        case .symbol("["):
            var items: [JinjaExpr] = []
            while !accept(.symbol("]")) {
                items.append(try expression())
                if !accept(.symbol(",")) { try expect(.symbol("]")); break }
            }
            return .list(items)
        case .symbol("{"):
            var entries: [(JinjaExpr, JinjaExpr)] = []
            while !accept(.symbol("}")) {
                let key = try expression()
                try expect(.symbol(":"))
                entries.append((key, try expression()))
                if !accept(.symbol(",")) { try expect(.symbol("}")); break }
            }
            return .dict(entries)
        default:
            throw syntax("unexpected \(JinjaParser.describe(token))")
        }
    }
}
