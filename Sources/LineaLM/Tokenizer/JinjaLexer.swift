/// A token inside `{{ }}` or `{% %}`.
enum JinjaToken: Equatable, Sendable {
    case name(String)
    case string(String)
    case int(Int)
    case double(Double)
    /// Operators and punctuation: + - * / // % ** ~ == != < <= > >= = ( ) [ ] { } , . : |
    case symbol(String)
}

/// One piece of a template after lexing, whitespace control already applied to the text around tags.
enum JinjaPart: Sendable {
    case text(String)
    /// `{{ expression }}`
    case output([JinjaToken], line: Int)
    /// `{% tag ... %}`
    case statement([JinjaToken], line: Int)
}

/// Splits a template into text, expressions and statements with transformers' settings: `trim_blocks`
/// (the newline after a block tag goes), `lstrip_blocks` (spaces before a block tag on its own line go),
/// `-` on either side of a tag strips all whitespace on that side, and one trailing newline of the
/// template goes (Jinja's `keep_trailing_newline=False`).
struct JinjaLexer {
    private let scalars: [Unicode.Scalar]
    private var position = 0
    private var line = 1

    init(_ source: String) { scalars = Array(source.unicodeScalars) }

    private func peek(_ offset: Int = 0) -> Unicode.Scalar? {
        position + offset < scalars.count ? scalars[position + offset] : nil
    }

    private mutating func advance(_ count: Int = 1) {
        for _ in 0..<count where position < scalars.count {
            if scalars[position] == "\n" { line += 1 }
            position += 1
        }
    }

    private func syntax(_ message: String) -> TokenizerError { .templateSyntax(construct: message, line: line) }

    /// The template's parts, in order. O(n).
    mutating func lex() throws -> [JinjaPart] {
        var parts: [JinjaPart] = []
        var text = String.UnicodeScalarView()
        var stripNextLeading = false
        var lineStarting = true

        func flushText() {
            if !text.isEmpty { parts.append(.text(String(text))) }
            text = String.UnicodeScalarView()
        }

        while position < scalars.count {
            let c = scalars[position]
            let next = peek(1)
            let isTag = c == "{" && (next == "{" || next == "%" || next == "#")
            if !isTag {
                if stripNextLeading, c.properties.isWhitespace {
                    advance()
                    continue
                }
                stripNextLeading = false
                text.append(c)
                advance()
                continue
            }
            stripNextLeading = false
            let kind = next!
            let modifier = peek(2)
            // Whitespace before the tag: `-` strips all of it; lstrip_blocks strips spaces and tabs back to
            // the line start for block and comment tags, unless the tag says `+`.
            if modifier == "-" {
                while let last = text.last, last.properties.isWhitespace { text.removeLast() }
            } else if kind != "{", modifier != "+" {
                var cut = text.endIndex
                while cut > text.startIndex, text[text.index(before: cut)] == " " || text[text.index(before: cut)] == "\t" {
                    cut = text.index(before: cut)
                }
                let atLineStart = cut == text.startIndex ? (lineStarting || parts.isEmpty) : text[text.index(before: cut)] == "\n"
                if atLineStart { text.removeSubrange(cut...) }
            }
            flushText()
            let tagLine = line
            advance(modifier == "-" || modifier == "+" ? 3 : 2)
            var trailingNewlineTrimmed = false
            switch kind {
            case "#":
                var closedWithMinus = false
                while true {
                    guard position < scalars.count else { throw syntax("unterminated comment {# ... #}") }
                    if scalars[position] == "-", peek(1) == "#", peek(2) == "}" { closedWithMinus = true; advance(3); break }
                    if scalars[position] == "#", peek(1) == "}" { advance(2); break }
                    advance()
                }
                if closedWithMinus { stripNextLeading = true } else if peek() == "\n" { advance(); trailingNewlineTrimmed = true }
            case "{":
                let (tokens, minus) = try lexTokens(closing: "}")
                parts.append(.output(tokens, line: tagLine))
                stripNextLeading = minus
            default:
                let (tokens, minus) = try lexTokens(closing: "%")
                parts.append(.statement(tokens, line: tagLine))
                if minus { stripNextLeading = true } else if peek() == "\n" { advance(); trailingNewlineTrimmed = true }
            }
            lineStarting = trailingNewlineTrimmed
        }
        if text.last == "\n" { text.removeLast() }
        flushText()
        return parts
    }

    /// Tokens up to the closing `}}` or `%}` (with an optional `-` before it). Returns whether `-` was there.
    private mutating func lexTokens(closing: Unicode.Scalar) throws -> ([JinjaToken], Bool) {
        var tokens: [JinjaToken] = []
        while true {
            guard let c = peek() else { throw syntax("unterminated tag: expected \(closing)}") }
            if c.properties.isWhitespace { advance(); continue }
            if c == "-", peek(1) == closing, peek(2) == "}" { advance(3); return (tokens, true) }
            if c == closing, peek(1) == "}" { advance(2); return (tokens, false) }
            if c == "'" || c == "\"" {
                tokens.append(.string(try lexString(quote: c)))
            } else if c.properties.numericType != nil, ("0"..."9").contains(c) {
                tokens.append(lexNumber())
            } else if c == "_" || c.properties.isAlphabetic {
                var name = String.UnicodeScalarView()
                while let d = peek(), d == "_" || d.properties.isAlphabetic || ("0"..."9").contains(d) {
                    name.append(d)
                    advance()
                }
                tokens.append(.name(String(name)))
            } else {
                let two = peek(1).map { String(c) + String($0) } ?? ""
                if ["//", "**", "==", "!=", "<=", ">="].contains(two) {
                    tokens.append(.symbol(two))
                    advance(2)
                } else if "+-*/%~<>=()[]{},.:|".unicodeScalars.contains(c) {
                    tokens.append(.symbol(String(c)))
                    advance()
                } else {
                    throw syntax("unexpected character \"\(c)\" in a tag")
                }
            }
        }
    }

    private mutating func lexNumber() -> JinjaToken {
        var digits = ""
        var isDouble = false
        while let d = peek(), ("0"..."9").contains(d) || d == "_" || (d == "." && !isDouble && peek(1).map { ("0"..."9").contains($0) } == true) {
            if d == "." { isDouble = true }
            if d != "_" { digits.unicodeScalars.append(d) }
            advance()
        }
        if let e = peek(), e == "e" || e == "E" {
            var exponent = "e"
            var offset = 1
            if let sign = peek(1), sign == "+" || sign == "-" { exponent.unicodeScalars.append(sign); offset = 2 }
            if let d = peek(offset), ("0"..."9").contains(d) {
                advance(offset)
                while let d = peek(), ("0"..."9").contains(d) { exponent.unicodeScalars.append(d); advance() }
                digits += exponent
                isDouble = true
            }
        }
        if isDouble { return .double(Double(digits) ?? 0) }
        return Int(digits).map(JinjaToken.int) ?? .double(Double(digits) ?? 0)
    }

    /// A quoted string with Python's escapes (\n \t \\ \' \" \xNN \uNNNN ...), as Jinja decodes them.
    private mutating func lexString(quote: Unicode.Scalar) throws -> String {
        advance()
        var value = String.UnicodeScalarView()
        while true {
            guard let c = peek() else { throw syntax("unterminated string literal") }
            advance()
            if c == quote { return String(value) }
            guard c == "\\", let e = peek() else { value.append(c); continue }
            advance()
            switch e {
            case "n": value.append("\n")
            case "t": value.append("\t")
            case "r": value.append("\r")
            case "0": value.append("\0")
            case "a": value.append("\u{07}")
            case "b": value.append("\u{08}")
            case "f": value.append("\u{0C}")
            case "v": value.append("\u{0B}")
            case "\\", "'", "\"": value.append(e)
            case "\n": break  // a backslash-newline continues the line
            case "x", "u", "U":
                let count = e == "x" ? 2 : e == "u" ? 4 : 8
                var hex = ""
                for _ in 0..<count {
                    guard let h = peek(), h.properties.isASCIIHexDigit else { throw syntax("bad \\\(e) escape in a string literal") }
                    hex.unicodeScalars.append(h)
                    advance()
                }
                guard let code = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(code) else {
                    throw syntax("bad \\\(e) escape in a string literal")
                }
                value.append(scalar)
            default:
                value.append("\\")
                value.append(e)
            }
        }
    }
}
