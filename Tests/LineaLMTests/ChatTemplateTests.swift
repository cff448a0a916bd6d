import Foundation
import LineaLM
import Testing

@Suite struct ChatTemplateTests {
    /// The tool list of scripts/tokenizer_fixtures.py, keys in the same order (tojson prints in that order).
    static let tools: TemplateValue = [[
        "type": "function",
        "function": [
            "name": "get_weather",
            "description": "Weather for a city, in °C.",
            "parameters": [
                "type": "object",
                "properties": ["city": ["type": "string", "description": "The city"], "days": ["type": "integer"]],
                "required": ["city"],
            ],
        ],
    ]]

    struct Case: CustomStringConvertible {
        let template: String, conversation: String, addGenerationPrompt: Bool
        let variables: [String: TemplateValue]
        let withTools: Bool
        let expected: String
        var description: String { "\(template) \(conversation) generation=\(addGenerationPrompt) \(variables.keys.sorted()) tools=\(withTools)" }
    }

    static func load() throws -> (cases: [Case], conversations: [String: [ChatMessage]]) {
        let fixture = try Fixtures.json("chat_templates.json")
        let conversations = (fixture["conversations"] as! [String: [[String: String]]]).mapValues { messages in
            messages.map { ChatMessage(role: $0["role"]!, content: $0["content"]!) }
        }
        let cases = (fixture["cases"] as! [[String: Any]]).map { item -> Case in
            var variables: [String: TemplateValue] = [:]
            for (key, value) in item["variables"] as! [String: Any] {
                if let text = value as? String { variables[key] = .string(text) } else { variables[key] = .bool((value as! NSNumber).boolValue) }
            }
            return Case(template: item["template"] as! String, conversation: item["conversation"] as! String,
                        addGenerationPrompt: item["add_generation_prompt"] as! Bool, variables: variables,
                        withTools: !(item["tools"] is NSNull), expected: item["expected"] as! String)
        }
        return (cases, conversations)
    }

    static func template(_ name: String) throws -> ChatTemplate {
        let url = Fixtures.root.appendingPathComponent("templates/\(name).jinja")
        return try ChatTemplate(String(decoding: try Data(contentsOf: url), as: UTF8.self))
    }

    @Test func rendersLikeTransformers() throws {
        let (cases, conversations) = try ChatTemplateTests.load()
        #expect(Set(cases.map(\.template)) == ["qwen3", "qwen3.5", "qwen3-next", "llama3.1"])
        for item in cases {
            let template = try ChatTemplateTests.template(item.template)
            var variables = item.variables
            if item.withTools { variables["tools"] = ChatTemplateTests.tools }
            let rendered = try template.render(messages: conversations[item.conversation]!,
                                               addGenerationPrompt: item.addGenerationPrompt, variables: variables)
            #expect(rendered == item.expected, "\(item)")
        }
    }

    @Test func tokenizerUsesItsConfigTemplate() throws {
        let tokenizer = try Fixtures.tokenizer("qwen2")
        let (cases, conversations) = try ChatTemplateTests.load()
        let item = try #require(cases.first { $0.template == "qwen3" && $0.conversation == "multi_turn" && $0.addGenerationPrompt })
        #expect(try tokenizer.applyChatTemplate(conversations["multi_turn"]!) == item.expected)
    }

    @Test func unsupportedConfigTemplateStillEncodes() throws {
        let folder = Fixtures.root.appendingPathComponent("qwen2")
        let config = Data(#"{"eos_token": "<|im_end|>", "chat_template": "{% filter upper %}x{% endfilter %}"}"#.utf8)
        let tokenizer = try Tokenizer(tokenizerJSON: Data(contentsOf: folder.appendingPathComponent("tokenizer.json")), configJSON: config)
        #expect(!tokenizer.encode("hello").isEmpty)
        #expect(tokenizer.chatTemplate == nil)
        #expect(throws: TokenizerError.templateSyntax(construct: "unsupported tag {% filter %}", line: 1)) {
            try tokenizer.applyChatTemplate([ChatMessage(role: "user", content: "hi")])
        }
    }

    /// Converts a JSON value of the fixtures (contexts hold no dict whose key order matters).
    static func templateValue(_ value: Any) -> TemplateValue {
        switch value {
        case let text as String: return .string(text)
        case let number as NSNumber:
            if String(cString: number.objCType) == "c" { return .bool(number.boolValue) }
            return Double(number.intValue) == number.doubleValue ? .int(number.intValue) : .double(number.doubleValue)
        case let items as [Any]: return .array(items.map(templateValue))
        case let object as [String: Any]: return .object(object.keys.sorted().map { .init($0, templateValue(object[$0]!)) })
        default: return .none
        }
    }

    @Test func snippetsRenderLikeJinja() throws {
        let data = try Data(contentsOf: Fixtures.root.appendingPathComponent("jinja_snippets.json"))
        let snippets = try #require(try JSONSerialization.jsonObject(with: data) as? [[String: Any]])
        #expect(snippets.count > 20)
        for snippet in snippets {
            let source = snippet["template"] as! String
            let context = (snippet["context"] as! [String: Any]).mapValues(ChatTemplateTests.templateValue)
            #expect(try ChatTemplate(source).render(context: context) == snippet["expected"] as! String, "\(source.debugDescription)")
        }
    }

    @Test func jinjaSubset() throws {
        func render(_ source: String, _ context: [String: TemplateValue] = [:]) throws -> String {
            try ChatTemplate(source).render(context: context)
        }
        #expect(try render("{% for x in [3, 1, 2] %}{{ loop.index0 }}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}") == "03,11,22")
        #expect(try render("{{ 'abc'[::-1] }}|{{ [1,2,3][1:] }}|{{ 'a,b'.split(',') }}|{{ '  x '.strip() }}") == "cba|[2, 3]|['a', 'b']|x")
        #expect(try render("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}") == "6")
        #expect(try render("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}") == "1")
        #expect(try render("{{ d | tojson }}", ["d": ["b": 1, "a": ["x", .none, true, 1.5]]]) == #"{"b": 1, "a": ["x", null, true, 1.5]}"#)
        #expect(try render("{{ x is defined }}{{ y is none }}{{ 'a' ~ 1 }}{{ 7 // 2 }}{{ -7 % 3 }}", ["y": .none]) == "FalseTrue a1 32".replacingOccurrences(of: " ", with: ""))
        #expect(try render("{%- macro m(a, b='!') -%}{{ a ~ b }}{%- endmacro -%}[{{ m('hi') }}]") == "[hi!]")
        #expect(try render("  {% if true %}\n  yes\n  {% endif %}\nend\n") == "  yes\nend")
    }

    @Test func unsupportedConstructsAreNamed() throws {
        func syntaxError(_ source: String) -> String {
            do {
                _ = try ChatTemplate(source)
                return "no error"
            } catch {
                return "\(error)"
            }
        }
        #expect(syntaxError("{% include 'other.jinja' %}").contains("include"))
        #expect(syntaxError("{{ text | wordwrap(20) }}").contains("wordwrap"))
        #expect(syntaxError("{{ x is prime }}").contains("prime"))
        #expect(syntaxError("line\n{% for x in y %}").contains("line 2"))
        #expect(syntaxError("{% call foo() %}{% endcall %}").contains("call"))
        let template = try ChatTemplate("{{ raise_exception('Only user and assistant roles are supported!') }}")
        #expect(throws: TokenizerError.templateRender(problem: "Only user and assistant roles are supported!")) {
            try template.render(messages: [])
        }
        #expect(throws: TokenizerError.self) { try ChatTemplate("{{ x.upper2() }}").render(context: ["x": "a"]) }
    }
}
