import Foundation

/// The `decoder` of tokenizer.json: turns the tokens of a sequence back into text, step by step as tokenizers
/// chains them (each step maps a list of token strings to a new list; the results are joined).
indirect enum TokenDecoder: Sendable {
    /// Byte-level spelling back to bytes, then UTF-8 (invalid bytes become U+FFFD).
    case byteLevel
    /// Replaces a literal string in each token (sentencepiece's "▁" back to " ").
    case replace(pattern: String, content: String)
    /// Runs of `<0xNN>` tokens back to the text their bytes spell, or one U+FFFD per byte if they spell none.
    case byteFallback
    /// Joins all tokens into one.
    case fuse
    /// Removes up to `start` leading and `stop` trailing copies of `content` from each token.
    case strip(content: Character, start: Int, stop: Int)
    /// "▁" back to " ", dropping the space the pre-tokenizer prepended to the first token.
    case metaspace(replacement: Character, dropsFirstSpace: Bool)
    case sequence([TokenDecoder])

    /// Reads a decoder object; an unknown type or pattern form is an error naming the field.
    init(json: Any?, path: String) throws {
        let fields = try JSONFields(json, path: path)
        let type = try fields.string("type")
        switch type {
        case "ByteLevel": self = .byteLevel
        case "ByteFallback": self = .byteFallback
        case "Fuse": self = .fuse
        case "Replace":
            let pattern = try fields.nested("pattern")
            guard let literal = pattern.object["String"] as? String else {
                let form = pattern.object.keys.sorted().joined(separator: ", ")
                throw TokenizerError.unsupported(field: pattern.field(form), value: JSONFields.describe(pattern.object[form]))
            }
            self = .replace(pattern: literal, content: try fields.string("content"))
        case "Strip":
            let content = try fields.string("content")
            guard content.count == 1, let character = content.first else {
                throw TokenizerError.malformed(field: fields.field("content"), problem: "expected one character, got \"\(content)\"")
            }
            self = .strip(content: character, start: try fields.int("start"), stop: try fields.int("stop"))
        case "Metaspace":
            let replacement = try fields.string("replacement")
            guard replacement.count == 1, let character = replacement.first else {
                throw TokenizerError.malformed(field: fields.field("replacement"), problem: "expected one character, got \"\(replacement)\"")
            }
            let scheme = try fields.optionalString("prepend_scheme")
            let legacyPrefix = try fields.bool("add_prefix_space", default: true)
            self = .metaspace(replacement: character, dropsFirstSpace: scheme.map { $0 != "never" } ?? legacyPrefix)
        case "Sequence":
            let items = try fields.array("decoders")
            self = .sequence(try items.enumerated().map { try TokenDecoder(json: $1, path: "\(path).decoders[\($0)]") })
        default:
            throw TokenizerError.unsupported(field: fields.field("type"), value: "\"\(type)\"")
        }
    }

    /// Whether this chain turns `<0xNN>` tokens into bytes (streaming must then wait for a run to end).
    var hasByteFallback: Bool {
        switch self {
        case .byteFallback: return true
        case let .sequence(steps): return steps.contains { $0.hasByteFallback }
        default: return false
        }
    }

    /// Decodes `tokens` to their text pieces. O(total length).
    func decodeChain(_ tokens: [String]) -> [String] {
        switch self {
        case .byteLevel:
            var bytes: [UInt8] = []
            for token in tokens { ByteLevel.decode(token, into: &bytes) }
            return [String(decoding: bytes, as: UTF8.self)]
        case let .replace(pattern, content):
            return tokens.map { $0.replacingLiteral(pattern, with: content) }
        case .byteFallback:
            var output: [String] = []
            var pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if let text = String(bytes: pending, encoding: .utf8) {
                    output.append(text)
                } else {
                    output.append(contentsOf: repeatElement("\u{FFFD}", count: pending.count))
                }
                pending.removeAll()
            }
            for token in tokens {
                if let byte = TokenDecoder.fallbackByte(token) {
                    pending.append(byte)
                } else {
                    flush()
                    output.append(token)
                }
            }
            flush()
            return output
        case .fuse:
            return [tokens.joined()]
        case let .strip(content, start, stop):
            return tokens.map { token in
                var characters = Substring(token)
                var removed = 0
                while removed < start, characters.first == content { characters.removeFirst(); removed += 1 }
                removed = 0
                while removed < stop, characters.last == content { characters.removeLast(); removed += 1 }
                return String(characters)
            }
        case let .metaspace(replacement, dropsFirstSpace):
            return tokens.enumerated().map { index, token in
                var text = String(token.map { $0 == replacement ? " " : $0 })
                if dropsFirstSpace, index == 0, text.first == " " { text.removeFirst() }
                return text
            }
        case let .sequence(steps):
            return steps.reduce(tokens) { $1.decodeChain($0) }
        }
    }

    /// The byte of a `<0xNN>` token, or nil for any other token.
    static func fallbackByte(_ token: String) -> UInt8? {
        let utf8 = token.utf8
        guard utf8.count == 6, token.hasPrefix("<0x"), token.hasSuffix(">") else { return nil }
        let hex = token.dropFirst(3).prefix(2)
        return UInt8(hex, radix: 16)
    }
}
