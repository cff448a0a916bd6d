/// Variables visible at one point of a render: a for-loop body or macro call sees its own, then its parent's.
final class JinjaScope {
    var variables: [String: JinjaValue] = [:]
    let parent: JinjaScope?

    init(parent: JinjaScope?) { self.parent = parent }

    func lookup(_ name: String) -> JinjaValue? {
        if let value = variables[name] { return value }
        return parent?.lookup(name)
    }
}

/// Walks a parsed template and writes its output.
struct JinjaRenderer {
    /// What a node list asks of the loop around it.
    enum Flow { case normal, breakLoop, continueLoop }

    let root: JinjaScope

    init(variables: [String: JinjaValue]) {
        root = JinjaScope(parent: nil)
        for name in ["namespace", "raise_exception", "range", "strftime_now", "dict"] {
            root.variables[name] = .function(name)
        }
        for (name, value) in variables { root.variables[name] = value }
    }

    func render(_ nodes: [JinjaNode]) throws -> String {
        var output = ""
        _ = try execute(nodes, scope: root, into: &output)
        return output
    }

    private func execute(_ nodes: [JinjaNode], scope: JinjaScope, into output: inout String) throws -> Flow {
        for node in nodes {
            switch node {
            case let .text(text):
                output += text
            case let .output(expr):
                output += try evaluate(expr, scope).text
            case let .conditional(branches, otherwise):
                var taken = false
                for (condition, body) in branches where try evaluate(condition, scope).isTruthy {
                    taken = true
                    let flow = try execute(body, scope: scope, into: &output)
                    if flow != .normal { return flow }
                    break
                }
                if !taken {
                    let flow = try execute(otherwise, scope: scope, into: &output)
                    if flow != .normal { return flow }
                }
            case let .loop(targets, iterable, condition, body, otherwise):
                try loop(targets: targets, iterable: iterable, condition: condition, body: body, otherwise: otherwise,
                         scope: scope, into: &output)
            case let .assign(name, attribute, valueExpr):
                let value = try evaluate(valueExpr, scope)
                if let attribute {
                    guard case let .namespace(namespace)? = scope.lookup(name) else {
                        throw TokenizerError.templateRender(problem: "cannot set '\(name).\(attribute)': '\(name)' is not a namespace")
                    }
                    namespace.object[attribute] = value
                } else {
                    scope.variables[name] = value
                }
            case let .assignBlock(name, body):
                var captured = ""
                _ = try execute(body, scope: scope, into: &captured)
                scope.variables[name] = .string(captured)
            case let .macro(name, parameters, body):
                scope.variables[name] = .macro(JinjaMacro(name: name, parameters: parameters, body: body))
            case .breakLoop:
                return .breakLoop
            case .continueLoop:
                return .continueLoop
            }
        }
        return .normal
    }

    private func loop(targets: [String], iterable: JinjaExpr, condition: JinjaExpr?, body: [JinjaNode],
                      otherwise: [JinjaNode], scope: JinjaScope, into output: inout String) throws {
        var items = try evaluate(iterable, scope).iterated()
        // `for x in xs if cond` filters before the loop counters are assigned.
        if let condition {
            items = try items.filter { item in
                let probe = JinjaScope(parent: scope)
                try bind(targets, to: item, in: probe)
                return try evaluate(condition, probe).isTruthy
            }
        }
        if items.isEmpty {
            _ = try execute(otherwise, scope: scope, into: &output)
            return
        }
        for (index, item) in items.enumerated() {
            // Each iteration gets its own scope, so a `set` inside the loop does not leak out (Jinja's rule).
            let inner = JinjaScope(parent: scope)
            try bind(targets, to: item, in: inner)
            var info = JinjaObject()
            info["index0"] = .int(index)
            info["index"] = .int(index + 1)
            info["revindex"] = .int(items.count - index)
            info["revindex0"] = .int(items.count - index - 1)
            info["first"] = .bool(index == 0)
            info["last"] = .bool(index == items.count - 1)
            info["length"] = .int(items.count)
            info["previtem"] = index > 0 ? items[index - 1] : .undefined("loop.previtem")
            info["nextitem"] = index + 1 < items.count ? items[index + 1] : .undefined("loop.nextitem")
            inner.variables["loop"] = .object(info)
            if try execute(body, scope: inner, into: &output) == .breakLoop { break }
        }
    }

    /// `for a in` binds the item; `for a, b in` unpacks a pair.
    private func bind(_ targets: [String], to item: JinjaValue, in scope: JinjaScope) throws {
        if targets.count == 1 {
            scope.variables[targets[0]] = item
            return
        }
        let parts = try item.iterated()
        guard parts.count == targets.count else {
            throw TokenizerError.templateRender(problem: "cannot unpack \(parts.count) values into \(targets.joined(separator: ", "))")
        }
        for (name, value) in zip(targets, parts) { scope.variables[name] = value }
    }

    // MARK: Expressions

    func evaluate(_ expr: JinjaExpr, _ scope: JinjaScope) throws -> JinjaValue {
        switch expr {
        case let .literal(value):
            return value
        case let .name(name):
            return scope.lookup(name) ?? .undefined(name)
        case let .attribute(baseExpr, name):
            return try JinjaRenderer.member(try evaluate(baseExpr, scope), .string(name), describing: name)
        case let .index(baseExpr, keyExpr):
            let key = try evaluate(keyExpr, scope)
            return try JinjaRenderer.member(try evaluate(baseExpr, scope), key, describing: key.repr)
        case let .slice(baseExpr, start, stop, step):
            return try JinjaBuiltins.slice(try evaluate(baseExpr, scope),
                                           start: try start.map { try evaluate($0, scope) },
                                           stop: try stop.map { try evaluate($0, scope) },
                                           step: try step.map { try evaluate($0, scope) })
        case let .call(callee, argExprs, kwargExprs):
            let args = try argExprs.map { try evaluate($0, scope) }
            var kwargs: [(String, JinjaValue)] = []
            for (key, valueExpr) in kwargExprs { kwargs.append((key, try evaluate(valueExpr, scope))) }
            if case let .attribute(baseExpr, method) = callee {
                let base = try evaluate(baseExpr, scope)
                // A dict key holding a callable wins; otherwise it is a method of the value's type.
                if case let .object(object) = base, let stored = object[method] {
                    return try call(stored, args: args, kwargs: kwargs)
                }
                return try JinjaBuiltins.method(base, method, args: args, kwargs: kwargs)
            }
            return try call(try evaluate(callee, scope), args: args, kwargs: kwargs)
        case let .filter(baseExpr, name, argExprs, kwargExprs):
            let args = try argExprs.map { try evaluate($0, scope) }
            var kwargs: [(String, JinjaValue)] = []
            for (key, valueExpr) in kwargExprs { kwargs.append((key, try evaluate(valueExpr, scope))) }
            return try JinjaBuiltins.filter(name, try evaluate(baseExpr, scope), args: args, kwargs: kwargs, renderer: self)
        case let .test(baseExpr, name, argExprs, negated):
            let result = try JinjaBuiltins.test(name, try evaluate(baseExpr, scope), args: try argExprs.map { try evaluate($0, scope) })
            return .bool(result != negated)
        case let .unary(op, operandExpr):
            let operand = try evaluate(operandExpr, scope)
            switch op {
            case "not": return .bool(!operand.isTruthy)
            default:
                switch operand {
                case let .int(value): return .int(-value)
                case let .double(value): return .double(-value)
                case let .bool(value): return .int(value ? -1 : 0)
                default: throw TokenizerError.templateRender(problem: "bad operand type for unary -: '\(operand.typeName)'")
                }
            }
        case let .binary(op, leftExpr, rightExpr):
            let left = try evaluate(leftExpr, scope)
            // `and`/`or` return an operand, not a bool, and skip the right side when the left decides.
            if op == "and" { return left.isTruthy ? try evaluate(rightExpr, scope) : left }
            if op == "or" { return left.isTruthy ? left : try evaluate(rightExpr, scope) }
            return try JinjaBuiltins.binary(op, left, try evaluate(rightExpr, scope))
        case let .conditional(thenExpr, condition, otherwise):
            if try evaluate(condition, scope).isTruthy { return try evaluate(thenExpr, scope) }
            return try otherwise.map { try evaluate($0, scope) } ?? .undefined("conditional expression")
        case let .list(items):
            return .array(try items.map { try evaluate($0, scope) })
        case let .dict(entries):
            var object = JinjaObject()
            for (keyExpr, valueExpr) in entries { object[try evaluate(keyExpr, scope).text] = try evaluate(valueExpr, scope) }
            return .object(object)
        }
    }

    /// `base.name` and `base[key]`: dict keys, namespace attributes, list and string positions.
    static func member(_ base: JinjaValue, _ key: JinjaValue, describing: String) throws -> JinjaValue {
        switch (base, key) {
        case let (.object(object), .string(name)):
            return object[name] ?? .undefined(describing)
        case let (.namespace(namespace), .string(name)):
            return namespace.object[name] ?? .undefined(describing)
        case let (.array(items), .int(position)):
            let resolved = position < 0 ? position + items.count : position
            return items.indices.contains(resolved) ? items[resolved] : .undefined(describing)
        case let (.string(text), .int(position)):
            let scalars = Array(text.unicodeScalars)
            let resolved = position < 0 ? position + scalars.count : position
            return scalars.indices.contains(resolved) ? .string(String(scalars[resolved])) : .undefined(describing)
        case let (.undefined(name), _):
            throw TokenizerError.templateRender(problem: "'\(name)' is undefined (reading \(describing) of it)")
        default:
            return .undefined(describing)
        }
    }

    /// Calls a macro or a global function.
    func call(_ callee: JinjaValue, args: [JinjaValue], kwargs: [(String, JinjaValue)]) throws -> JinjaValue {
        switch callee {
        case let .macro(macro):
            // Macros see the template's top-level variables and their own parameters.
            let scope = JinjaScope(parent: root)
            for (position, (name, defaultExpr)) in macro.parameters.enumerated() {
                if let given = kwargs.first(where: { $0.0 == name }) {
                    scope.variables[name] = given.1
                } else if position < args.count {
                    scope.variables[name] = args[position]
                } else if let defaultExpr {
                    scope.variables[name] = try evaluate(defaultExpr, scope)
                } else {
                    scope.variables[name] = .undefined(name)
                }
            }
            if args.count > macro.parameters.count {
                throw TokenizerError.templateRender(problem: "macro '\(macro.name)' takes \(macro.parameters.count) arguments, got \(args.count)")
            }
            var output = ""
            _ = try execute(macro.body, scope: scope, into: &output)
            return .string(output)
        case let .function(name):
            return try JinjaBuiltins.function(name, args: args, kwargs: kwargs)
        case let .undefined(name):
            throw TokenizerError.templateRender(problem: "unsupported or undefined function '\(name)'")
        default:
            throw TokenizerError.templateRender(problem: "'\(callee.typeName)' object is not callable")
        }
    }
}
