/// A value passed into a chat template (messages, tools, extra variables such as `enable_thinking`).
public indirect enum TemplateValue: Sendable, Equatable, ExpressibleByStringLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral {
    /// One key of an object; objects keep their key order, as Python dicts do (tojson prints in that order).
    public struct Entry: Sendable, Equatable {
        /// The key.
        public let key: String
        /// The value.
        public let value: TemplateValue
        /// An entry. O(1).
        public init(_ key: String, _ value: TemplateValue) {
            self.key = key
            self.value = value
        }
    }

    /// Python's None (JSON null).
    case none
    /// A boolean.
    case bool(Bool)
    /// An integer.
    case int(Int)
    /// A float.
    case double(Double)
    /// A string.
    case string(String)
    /// A list.
    case array([TemplateValue])
    /// A dict, in key order.
    case object([Entry])

    /// A string value. O(1).
    public init(stringLiteral value: String) { self = .string(value) }
    /// A boolean value. O(1).
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    /// An integer value. O(1).
    public init(integerLiteral value: Int) { self = .int(value) }
    /// A float value. O(1).
    public init(floatLiteral value: Double) { self = .double(value) }
    /// A list value. O(n).
    public init(arrayLiteral elements: TemplateValue...) { self = .array(elements) }
    /// An object value, keys in the literal's order. O(n).
    public init(dictionaryLiteral elements: (String, TemplateValue)...) { self = .object(elements.map { Entry($0.0, $0.1) }) }
}

/// One chat message with plain string content.
public struct ChatMessage: Sendable, Equatable {
    /// "system", "user" or "assistant" (templates may accept others, such as "tool").
    public var role: String
    /// The message text.
    public var content: String

    /// A message. O(1).
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }

    /// The message as the template sees it: `{"role": ..., "content": ...}`. O(1).
    public var templateValue: TemplateValue { ["role": .string(role), "content": .string(content)] }
}

/// The `chat_template` of tokenizer_config.json: a Jinja template, parsed once and rendered per conversation
/// the way transformers' `apply_chat_template(..., tokenize=False)` renders it (trim_blocks, lstrip_blocks,
/// its tojson and raise_exception). Supports the subset of Jinja that the Qwen3, Qwen3-Next/Qwen3.5 and
/// Llama-3 templates use; any other tag, filter or test is an error naming it when the template is parsed.
public struct ChatTemplate: Sendable {
    /// The template text.
    public let source: String
    private let nodes: [JinjaNode]

    /// Parses a template; an unsupported construct throws `TokenizerError.templateSyntax` naming it. O(n).
    public init(_ source: String) throws {
        self.source = source
        var lexer = JinjaLexer(source)
        var parser = JinjaParser(try lexer.lex())
        nodes = try parser.parse()
    }

    /// Renders `messages` as transformers does: `messages`, `add_generation_prompt`, `tools` and `documents`
    /// (none unless given in `variables`), `bos_token`/`eos_token` when given, then `variables` (e.g.
    /// `enable_thinking`). A `raise_exception` in the template or a type error throws. O(template work).
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool = true, bosToken: String? = nil,
                       eosToken: String? = nil, variables: [String: TemplateValue] = [:]) throws -> String {
        var context: [String: TemplateValue] = [
            "messages": .array(messages.map(\.templateValue)),
            "add_generation_prompt": .bool(addGenerationPrompt),
            "tools": .none,
            "documents": .none,
        ]
        if let bosToken { context["bos_token"] = .string(bosToken) }
        if let eosToken { context["eos_token"] = .string(eosToken) }
        context.merge(variables) { $1 }
        return try render(context: context)
    }

    /// Renders with exactly these top-level variables (messages with tool calls, custom fields). O(template work).
    public func render(context: [String: TemplateValue]) throws -> String {
        try JinjaRenderer(variables: context.mapValues(JinjaValue.init)).render(nodes)
    }
}
