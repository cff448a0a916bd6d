/// Decodes ids that arrive one at a time, returning text only once it is final: a character split across
/// tokens (or a run of `<0xNN>` byte tokens) is held back until it is complete, so nothing is ever printed
/// that a later token would change. The concatenation of everything returned, `finish()` included, equals
/// `decode` of all the ids.
///
/// It decodes a short window each step: the last token already printed (as context, so that start-of-text
/// rules such as sentencepiece's dropped first space apply only once) plus the tokens not yet printed.
public struct StreamingDecoder: Sendable {
    private let tokenizer: Tokenizer
    private let skipSpecialTokens: Bool
    private let holdsByteRuns: Bool
    /// The last printed token (empty before anything was printed) and its decoded text.
    private var context: [String] = []
    private var contextText = ""
    /// Tokens not printed yet.
    private var pending: [String] = []

    init(tokenizer: Tokenizer, skipSpecialTokens: Bool) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
        holdsByteRuns = tokenizer.decoder?.hasByteFallback ?? false
    }

    /// Adds one id and returns the text it completes (often empty while a character is incomplete).
    /// Throws for an id outside the vocabulary, naming it. O(window) per id.
    public mutating func next(_ id: Int) throws -> String {
        let texts = try tokenizer.tokenTexts([id], skipSpecialTokens: skipSpecialTokens)
        guard let text = texts.first else { return "" }
        pending.append(text)
        // A byte run decodes as one unit (invalid runs become one U+FFFD per byte), so wait for its end.
        if holdsByteRuns, TokenDecoder.fallbackByte(text) != nil { return "" }
        let full = tokenizer.decodeTokens(context + pending)
        // U+FFFD at the end is a character still missing bytes (or a truly invalid byte, printed once the
        // next token shows which).
        if full.unicodeScalars.last == "\u{FFFD}" { return "" }
        let emitted = StreamingDecoder.suffix(of: full, after: contextText)
        if emitted.isEmpty { return "" }
        context = [pending[pending.count - 1]]
        contextText = tokenizer.decodeTokens(context)
        pending.removeAll(keepingCapacity: true)
        return emitted
    }

    /// Returns whatever is still held back (incomplete characters become U+FFFD) and starts over. O(window).
    public mutating func finish() -> String {
        defer {
            context = []
            contextText = ""
            pending = []
        }
        guard !pending.isEmpty else { return "" }
        return StreamingDecoder.suffix(of: tokenizer.decodeTokens(context + pending), after: contextText)
    }

    /// `full` without its leading `prefix` (compared as UTF-8 bytes, which never splits a character here
    /// because the prefix ends on a complete one).
    private static func suffix(of full: String, after prefix: String) -> String {
        let prefixBytes = prefix.utf8
        guard full.utf8.starts(with: prefixBytes) else { return full }
        return String(decoding: full.utf8.dropFirst(prefixBytes.count), as: UTF8.self)
    }
}

extension Tokenizer {
    /// A decoder for ids that arrive one at a time (generation). O(1).
    public func streamingDecoder(skipSpecialTokens: Bool = false) -> StreamingDecoder {
        StreamingDecoder(tokenizer: self, skipSpecialTokens: skipSpecialTokens)
    }
}
