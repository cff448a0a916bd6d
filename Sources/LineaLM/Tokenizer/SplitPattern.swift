/// The split regexes of GPT-2, Llama-3 and Qwen2 (the `Split` pre-tokenizer's pattern, or ByteLevel's
/// `use_regex`), each matched by a hand-written scanner with exactly the regex's leftmost-first semantics.
///
/// A general regex engine is slower than these scanners by an order of magnitude, and the checkpoints this
/// runtime loads all use one of these three patterns; any other pattern is rejected by name at load time.
enum SplitPattern: Sendable, Equatable {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case gpt2
    /// Qwen2's and Llama-3's pattern: case-insensitive contractions, a letter run with one leading non-letter,
    /// runs of at most `maxDigits` digits, punctuation with trailing newlines, newline-ended whitespace.
    case letterRuns(maxDigits: Int)
    /// A literal string, isolated wherever it occurs (`{"String": ...}`).
    case literal([Unicode.Scalar])

    static let gpt2Regex = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let qwen2Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let llama3Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// The scanner for a regex string of tokenizer.json, or nil for a pattern it does not know.
    init?(regex: String) {
        switch regex {
        case SplitPattern.gpt2Regex: self = .gpt2
        case SplitPattern.qwen2Regex: self = .letterRuns(maxDigits: 1)
        case SplitPattern.llama3Regex: self = .letterRuns(maxDigits: 3)
        default: return nil
        }
    }

    /// Character classes, one byte per scalar, so the scanners test bits instead of Unicode properties.
    private static let letter: UInt8 = 1, number: UInt8 = 2, space: UInt8 = 4, lineBreak: UInt8 = 8

    private static let asciiClasses: [UInt8] = (0..<128).map { classify(Unicode.Scalar(UInt8($0))) }

    private static func classify(_ scalar: Unicode.Scalar) -> UInt8 {
        if scalar == "\r" || scalar == "\n" { return space | lineBreak }
        if scalar.properties.isWhitespace { return space }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return letter
        case .decimalNumber, .letterNumber, .otherNumber: return number
        default: return 0
        }
    }

    /// The ranges the pattern isolates in `text`, covering it end to end (text between matches, which these
    /// patterns never leave, would be its own piece as `Isolated` keeps it). O(n).
    func split(_ text: [Unicode.Scalar]) -> [Range<Int>] {
        if case let .literal(needle) = self { return SplitPattern.splitLiteral(text, needle) }
        let classes = text.map { $0.value < 128 ? SplitPattern.asciiClasses[Int($0.value)] : SplitPattern.classify($0) }
        var pieces: [Range<Int>] = []
        pieces.reserveCapacity(text.count / 3 + 1)
        var i = 0
        while i < text.count {
            let end: Int
            switch self {
            case .gpt2: end = SplitPattern.gpt2Match(text, classes, i)
            case let .letterRuns(maxDigits): end = SplitPattern.letterRunsMatch(text, classes, i, maxDigits)
            case .literal: end = i + 1
            }
            // Every scalar starts some alternative of these patterns; the max only guards against a stall.
            let next = max(end, i + 1)
            pieces.append(i..<next)
            i = next
        }
        return pieces
    }

    private static func runEnd(_ classes: [UInt8], from start: Int, while mask: UInt8) -> Int {
        var j = start
        while j < classes.count, classes[j] & mask != 0 { j += 1 }
        return j
    }

    /// Scalars that are neither whitespace, letter nor number (`[^\s\p{L}\p{N}]`).
    private static func isOther(_ classes: [UInt8], _ j: Int) -> Bool { j < classes.count && classes[j] == 0 }

    /// The end of an English contraction at `i` ('s 't 're 've 'm 'll 'd), or nil.
    private static func contraction(_ text: [Unicode.Scalar], _ i: Int, caseInsensitive: Bool) -> Int? {
        guard text[i] == "'", i + 1 < text.count else { return nil }
        func letter(_ j: Int) -> Unicode.Scalar? {
            guard j < text.count else { return nil }
            let c = text[j]
            guard caseInsensitive else { return c }
            // Oniguruma folds case the Unicode way: the long s (U+017F) matches 's' too.
            if c == "\u{017F}" { return "s" }
            return ("A"..."Z").contains(c) ? Unicode.Scalar(c.value + 32) : c
        }
        switch letter(i + 1) {
        case "s", "t", "m", "d": return i + 2
        case "r", "v": return letter(i + 2) == "e" ? i + 3 : nil
        case "l": return letter(i + 2) == "l" ? i + 3 : nil
        default: return nil
        }
    }

    /// Whitespace alternatives shared by both patterns: `\s+(?!\S)` then `\s+`, from a whitespace scalar at `i`.
    private static func whitespaceMatch(_ classes: [UInt8], _ i: Int) -> Int {
        let end = runEnd(classes, from: i, while: space)
        // Before a non-space, the run gives its last scalar back so that " word" keeps its space.
        if end == classes.count || end - i < 2 { return end }
        return end - 1
    }

    private static func gpt2Match(_ text: [Unicode.Scalar], _ classes: [UInt8], _ i: Int) -> Int {
        if let end = contraction(text, i, caseInsensitive: false) { return end }
        let j = (text[i] == " " && i + 1 < text.count) ? i + 1 : i
        for mask in [letter, number] where classes[j] & mask != 0 {
            return runEnd(classes, from: j, while: mask)
        }
        if isOther(classes, j) {
            var end = j
            while isOther(classes, end) { end += 1 }
            return end
        }
        if classes[i] & space != 0 { return whitespaceMatch(classes, i) }
        return i + 1
    }

    private static func letterRunsMatch(_ text: [Unicode.Scalar], _ classes: [UInt8], _ i: Int, _ maxDigits: Int) -> Int {
        if let end = contraction(text, i, caseInsensitive: true) { return end }
        let c = classes[i]
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if c & (letter | number | lineBreak) == 0, i + 1 < text.count, classes[i + 1] & letter != 0 {
            return runEnd(classes, from: i + 1, while: letter)
        }
        if c & letter != 0 { return runEnd(classes, from: i, while: letter) }
        // \p{N}{1,maxDigits}
        if c & number != 0 { return min(runEnd(classes, from: i, while: number), i + maxDigits) }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        let j = (text[i] == " " && isOther(classes, i + 1)) ? i + 1 : i
        if isOther(classes, j) {
            var end = j
            while isOther(classes, end) { end += 1 }
            return runEnd(classes, from: end, while: lineBreak)
        }
        // \s*[\r\n]+ : the whitespace run up to and including its last line break.
        let end = runEnd(classes, from: i, while: space)
        var lastBreak = end - 1
        while lastBreak >= i, classes[lastBreak] & lineBreak == 0 { lastBreak -= 1 }
        if lastBreak >= i { return lastBreak + 1 }
        return whitespaceMatch(classes, i)
    }

    private static func splitLiteral(_ text: [Unicode.Scalar], _ needle: [Unicode.Scalar]) -> [Range<Int>] {
        guard !needle.isEmpty else { return text.isEmpty ? [] : [0..<text.count] }
        var pieces: [Range<Int>] = []
        var start = 0, i = 0
        while i + needle.count <= text.count {
            if text[i..<(i + needle.count)].elementsEqual(needle) {
                if start < i { pieces.append(start..<i) }
                pieces.append(i..<(i + needle.count))
                i += needle.count
                start = i
            } else {
                i += 1
            }
        }
        if start < text.count { pieces.append(start..<text.count) }
        return pieces
    }
}
