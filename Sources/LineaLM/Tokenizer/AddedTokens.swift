/// One entry of `added_tokens` in tokenizer.json (or `added_tokens_decoder` in tokenizer_config.json).
public struct AddedToken: Sendable, Equatable {
    /// The token's id.
    public let id: Int
    /// The exact text the token stands for.
    public let content: String
    /// Special tokens are dropped by `decode(_:skipSpecialTokens: true)`.
    public let special: Bool
    /// Whitespace before (`lstrip`) or after (`rstrip`) a match is swallowed into the token.
    public let lstrip: Bool, rstrip: Bool
    /// Matches only as a whole word.
    public let singleWord: Bool
    /// Matched against the normalized text (with the normalized content) rather than the raw text.
    public let normalized: Bool

    init(json: Any?, path: String, id: Int? = nil) throws {
        let fields = try JSONFields(json, path: path)
        self.id = try id ?? fields.int("id")
        content = try fields.string("content")
        special = try fields.bool("special", default: false)
        lstrip = try fields.bool("lstrip", default: false)
        rstrip = try fields.bool("rstrip", default: false)
        singleWord = try fields.bool("single_word", default: false)
        normalized = try fields.bool("normalized", default: !special)
    }
}

/// A piece of input after the added tokens are cut out: text still to tokenize, or an added token's id.
enum Segment {
    case text(String)
    case token(Int)
}

/// Finds added tokens in text, leftmost first and longest at a position, as tokenizers' Aho-Corasick
/// (leftmost-longest) does, then widens matches over whitespace for `lstrip`/`rstrip`.
struct AddedTokenMatcher: Sendable {
    private struct Pattern: Sendable {
        let scalars: [Unicode.Scalar]
        let token: AddedToken
    }
    /// Patterns by first scalar, longest first.
    private let byFirst: [UInt32: [Pattern]]

    /// A matcher for `tokens`, each spelled by `spelling` (the content, or its normalized form).
    init(_ tokens: [AddedToken], spelling: (AddedToken) -> String) {
        var byFirst: [UInt32: [Pattern]] = [:]
        for token in tokens {
            let scalars = Array(spelling(token).unicodeScalars)
            guard let first = scalars.first else { continue }
            byFirst[first.value, default: []].append(Pattern(scalars: scalars, token: token))
        }
        self.byFirst = byFirst.mapValues { $0.sorted { $0.scalars.count > $1.scalars.count } }
    }

    var isEmpty: Bool { byFirst.isEmpty }

    /// `text` cut at every added token. O(n · k) for k tokens sharing a first scalar.
    func split(_ text: String) -> [Segment] {
        guard !byFirst.isEmpty else { return [.text(text)] }
        let scalars = Array(text.unicodeScalars)
        var segments: [Segment] = []
        var textStart = 0
        var i = 0
        func emitText(_ range: Range<Int>) {
            if !range.isEmpty { segments.append(.text(String(String.UnicodeScalarView(scalars[range])))) }
        }
        search: while i < scalars.count {
            if let candidates = byFirst[scalars[i].value] {
                for pattern in candidates {
                    let end = i + pattern.scalars.count
                    guard end <= scalars.count, scalars[i..<end].elementsEqual(pattern.scalars) else { continue }
                    let token = pattern.token
                    if token.singleWord {
                        let before = i > 0 && AddedTokenMatcher.isWordScalar(scalars[i - 1])
                        let after = end < scalars.count && AddedTokenMatcher.isWordScalar(scalars[end])
                        if before || after { continue }
                    }
                    var start = i, stop = end
                    if token.lstrip {
                        while start > textStart, scalars[start - 1].properties.isWhitespace { start -= 1 }
                    }
                    if token.rstrip {
                        while stop < scalars.count, scalars[stop].properties.isWhitespace { stop += 1 }
                    }
                    emitText(textStart..<start)
                    segments.append(.token(token.id))
                    textStart = stop
                    i = stop
                    continue search
                }
            }
            i += 1
        }
        emitText(textStart..<scalars.count)
        return segments
    }

    private static func isWordScalar(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isAlphabetic || scalar.properties.numericType != nil || scalar == "_"
    }
}
