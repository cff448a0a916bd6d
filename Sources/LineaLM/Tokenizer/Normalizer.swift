import Foundation

/// The `normalizer` of tokenizer.json: rewrites each piece of text between added tokens before it is split.
indirect enum Normalizer: Sendable {
    case nfc, nfd, nfkc, nfkd, lowercase
    /// Prepends the string to non-empty text (sentencepiece-style BPE: "▁" before the first word).
    case prepend(String)
    /// Replaces every occurrence of a literal string.
    case replace(pattern: String, content: String)
    /// Trims whitespace on the chosen sides.
    case strip(left: Bool, right: Bool)
    case sequence([Normalizer])

    /// Reads a normalizer object; a type or pattern form it does not implement is an error naming the field.
    init(json: Any?, path: String) throws {
        let fields = try JSONFields(json, path: path)
        let type = try fields.string("type")
        switch type {
        case "NFC": self = .nfc
        case "NFD": self = .nfd
        case "NFKC": self = .nfkc
        case "NFKD": self = .nfkd
        case "Lowercase": self = .lowercase
        case "Prepend": self = .prepend(try fields.string("prepend"))
        case "Strip":
            self = .strip(left: try fields.bool("strip_left", default: true), right: try fields.bool("strip_right", default: true))
        case "Replace":
            let pattern = try fields.nested("pattern")
            guard let literal = pattern.object["String"] as? String else {
                let form = pattern.object.keys.sorted().joined(separator: ", ")
                throw TokenizerError.unsupported(field: pattern.field(form), value: JSONFields.describe(pattern.object[form]))
            }
            self = .replace(pattern: literal, content: try fields.string("content"))
        case "Sequence":
            let items = try fields.array("normalizers")
            self = .sequence(try items.enumerated().map { try Normalizer(json: $1, path: "\(path).normalizers[\($0)]") })
        default:
            throw TokenizerError.unsupported(field: fields.field("type"), value: "\"\(type)\"")
        }
    }

    /// The normalized text. O(n) in the text's length.
    func apply(_ text: String) -> String {
        switch self {
        case .nfc: return Normalizer.isASCII(text) ? text : text.precomposedStringWithCanonicalMapping
        case .nfd: return Normalizer.isASCII(text) ? text : text.decomposedStringWithCanonicalMapping
        case .nfkc: return Normalizer.isASCII(text) ? text : text.precomposedStringWithCompatibilityMapping
        case .nfkd: return Normalizer.isASCII(text) ? text : text.decomposedStringWithCompatibilityMapping
        case .lowercase: return text.lowercased()
        case let .prepend(prefix): return text.isEmpty ? text : prefix + text
        case let .replace(pattern, content):
            return text.replacingLiteral(pattern, with: content)
        case let .strip(left, right):
            var scalars = Substring(text).unicodeScalars
            if left { while let first = scalars.first, first.properties.isWhitespace { scalars.removeFirst() } }
            if right { while let last = scalars.last, last.properties.isWhitespace { scalars.removeLast() } }
            return String(scalars)
        case let .sequence(steps):
            return steps.reduce(text) { $1.apply($0) }
        }
    }

    /// ASCII is unchanged by every Unicode normalization form, and most text is ASCII.
    private static func isASCII(_ text: String) -> Bool { text.utf8.allSatisfy { $0 < 0x80 } }
}
