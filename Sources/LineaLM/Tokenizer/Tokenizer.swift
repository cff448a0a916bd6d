import Foundation

/// A Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) for BPE models: byte-level BPE as GPT-2,
/// Llama-3 and Qwen2/Qwen3 ship it, and sentencepiece-style BPE with byte fallback as Llama-2 ships it.
///
/// Encoding runs tokenizers' pipeline: added tokens are cut out of the raw text, each remaining piece is
/// normalized, split into words by the pre-tokenizer, and each word is merged by BPE (cached per word).
/// Thread-safe: the word cache is behind a lock.
public final class Tokenizer: @unchecked Sendable {
    /// The added and special tokens, by id.
    public let addedTokens: [AddedToken]
    /// The beginning- and end-of-sequence tokens of tokenizer_config.json, if it names them.
    public let bosToken: String?, eosToken: String?
    /// The chat template of tokenizer_config.json (or chat_template.jinja beside it), if any and if it parses.
    public var chatTemplate: ChatTemplate? { try? parsedTemplate?.get() }
    /// A template the renderer cannot parse does not stop encoding; `applyChatTemplate` reports why.
    private let parsedTemplate: Result<ChatTemplate, TokenizerError>?

    let model: BPEModel
    let normalizer: Normalizer?
    let preTokenizer: PreTokenizer?
    let decoder: TokenDecoder?
    let postProcessor: PostProcessor
    /// Token text by id; nil where no token has that id.
    let tokens: [String?]
    let specialIDs: Set<Int>
    private let addedIDs: [String: Int]
    private let rawMatcher: AddedTokenMatcher
    private let normalizedMatcher: AddedTokenMatcher
    private let cacheLock = NSLock()
    private var cache: [String: [Int]] = [:]

    /// Ids are 0..<vocabularySize (model and added tokens together).
    public var vocabularySize: Int { tokens.count }

    /// Loads `tokenizer.json`, and `tokenizer_config.json` and `chat_template.jinja` when present, from a
    /// checkpoint folder. O(vocabulary + merges).
    public convenience init(directory: URL) throws {
        func read(_ name: String, required: Bool) throws -> Data? {
            let url = directory.appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: url.path) else {
                if required { throw TokenizerError.file(path: url.path, problem: "not found") }
                return nil
            }
            do { return try Data(contentsOf: url) } catch {
                throw TokenizerError.file(path: url.path, problem: "cannot be read (\(error.localizedDescription))")
            }
        }
        let template = try read("chat_template.jinja", required: false).map { String(decoding: $0, as: UTF8.self) }
        try self.init(tokenizerJSON: read("tokenizer.json", required: true)!,
                      configJSON: read("tokenizer_config.json", required: false),
                      chatTemplate: template)
    }

    /// Builds a tokenizer from the contents of tokenizer.json and, optionally, tokenizer_config.json; a
    /// `chatTemplate` given here wins over the config's. Anything unsupported throws, naming the JSON field.
    /// O(vocabulary + merges).
    public init(tokenizerJSON: Data, configJSON: Data? = nil, chatTemplate templateOverride: String? = nil) throws {
        let root = try JSONFields(Tokenizer.parse(tokenizerJSON, name: "tokenizer.json"), path: "")
        model = try BPEModel(json: root.object["model"], path: "model")
        normalizer = root.isNull("normalizer") ? nil : try Normalizer(json: root.object["normalizer"], path: "normalizer")
        preTokenizer = root.isNull("pre_tokenizer") ? nil : try PreTokenizer(json: root.object["pre_tokenizer"], path: "pre_tokenizer")
        decoder = root.isNull("decoder") ? nil : try TokenDecoder(json: root.object["decoder"], path: "decoder")
        postProcessor = try PostProcessor(json: root.object["post_processor"], path: "post_processor")

        var added: [Int: AddedToken] = [:]
        if !root.isNull("added_tokens") {
            for (index, item) in try root.array("added_tokens").enumerated() {
                let token = try AddedToken(json: item, path: "added_tokens[\(index)]")
                added[token.id] = token
            }
        }
        var config: JSONFields?
        if let configJSON {
            config = try JSONFields(Tokenizer.parse(configJSON, name: "tokenizer_config.json"), path: "")
            // transformers also adds the tokens of `added_tokens_decoder` that tokenizer.json lacks.
            if let decoderTokens = config?.object["added_tokens_decoder"] as? [String: Any] {
                for (key, value) in decoderTokens {
                    guard let id = Int(key) else {
                        throw TokenizerError.malformed(field: "added_tokens_decoder.\(key)", problem: "expected an integer id as the key")
                    }
                    if added[id] == nil { added[id] = try AddedToken(json: value, path: "added_tokens_decoder.\(key)", id: id) }
                }
            }
        }
        addedTokens = added.values.sorted { $0.id < $1.id }
        specialIDs = Set(addedTokens.filter(\.special).map(\.id))
        addedIDs = Dictionary(addedTokens.map { ($0.content, $0.id) }) { first, _ in first }

        let size = max(model.vocab.values.max().map { $0 + 1 } ?? 0, addedTokens.last.map { $0.id + 1 } ?? 0)
        var tokens = [String?](repeating: nil, count: size)
        for (token, id) in model.vocab where id >= 0 { tokens[id] = token }
        for token in addedTokens where token.id >= 0 { tokens[token.id] = token.content }
        self.tokens = tokens

        let normalizer = self.normalizer
        rawMatcher = AddedTokenMatcher(addedTokens.filter { !$0.normalized }) { $0.content }
        normalizedMatcher = AddedTokenMatcher(addedTokens.filter(\.normalized)) { normalizer?.apply($0.content) ?? $0.content }

        bosToken = try config.flatMap { try Tokenizer.tokenText($0, "bos_token") }
        eosToken = try config.flatMap { try Tokenizer.tokenText($0, "eos_token") }
        let templateText = try templateOverride ?? config.flatMap { try Tokenizer.templateText($0) }
        parsedTemplate = templateText.map { text in Result { try ChatTemplate(text) }.mapError { ($0 as? TokenizerError) ?? .templateRender(problem: "\($0)") } }
    }

    private static func parse(_ data: Data, name: String) throws -> Any {
        do { return try JSONSerialization.jsonObject(with: data) } catch {
            throw TokenizerError.file(path: name, problem: "is not valid JSON (\(error.localizedDescription))")
        }
    }

    /// `bos_token`/`eos_token` are written as a string or as an AddedToken object with a `content`.
    private static func tokenText(_ config: JSONFields, _ key: String) throws -> String? {
        if config.isNull(key) { return nil }
        if let text = config.object[key] as? String { return text }
        return try config.nested(key).string("content")
    }

    /// `chat_template` is a string, or a list of named templates of which "default" is the one used.
    private static func templateText(_ config: JSONFields) throws -> String? {
        if config.isNull("chat_template") { return nil }
        if let text = config.object["chat_template"] as? String { return text }
        for (index, item) in try config.array("chat_template").enumerated() {
            let entry = try JSONFields(item, path: "chat_template[\(index)]")
            if try entry.string("name") == "default" { return try entry.string("template") }
        }
        throw TokenizerError.malformed(field: "chat_template", problem: "a list of templates without one named \"default\"")
    }

    /// The id of a token's exact text (vocabulary or added token), or nil. O(1).
    public func id(of token: String) -> Int? {
        addedIDs[token] ?? model.vocab[token]
    }

    /// The text of the token with this id, or nil when no token has it. O(1).
    public func token(of id: Int) -> String? { id >= 0 && id < tokens.count ? tokens[id] : nil }

    /// Whether the id is a special added token (dropped when decoding with `skipSpecialTokens`). O(1).
    public func isSpecial(_ id: Int) -> Bool { specialIDs.contains(id) }

    /// The ids of `bosToken` and `eosToken`, when the config names them and they exist. O(1).
    public var bosTokenID: Int? { bosToken.flatMap { id(of: $0) } }
    /// See `bosTokenID`.
    public var eosTokenID: Int? { eosToken.flatMap { id(of: $0) } }

    /// The ids of `text`; with `addSpecialTokens`, the post-processor's tokens around them (e.g. a BOS).
    /// O(n) in the text's length for cached words, O(w log w) per new word of length w.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var ids: [Int] = []
        ids.reserveCapacity(text.utf8.count / 3 + 4)
        if addSpecialTokens { ids += postProcessor.prefix }
        for segment in rawMatcher.split(text) {
            switch segment {
            case let .token(id): ids.append(id)
            case let .text(piece):
                let normalized = normalizer?.apply(piece) ?? piece
                for inner in normalizedMatcher.split(normalized) {
                    switch inner {
                    case let .token(id): ids.append(id)
                    case let .text(piece):
                        for word in preTokenizer?.words(piece) ?? [piece] where !word.isEmpty {
                            ids += tokenize(word)
                        }
                    }
                }
            }
        }
        if addSpecialTokens { ids += postProcessor.suffix }
        return ids
    }

    /// BPE of one word through the cache; long words skip the cache, as they rarely repeat.
    private func tokenize(_ word: String) -> [Int] {
        let cacheable = word.utf8.count <= 256
        if cacheable {
            cacheLock.lock()
            let hit = cache[word]
            cacheLock.unlock()
            if let hit { return hit }
        }
        let ids = model.tokenize(word)
        if cacheable {
            cacheLock.lock()
            if cache.count >= 500_000 { cache.removeAll(keepingCapacity: true) }
            cache[word] = ids
            cacheLock.unlock()
        }
        return ids
    }

    /// The text of `ids`; an id outside the vocabulary throws, naming it and the vocabulary size. O(n).
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) throws -> String {
        try decodeTokens(tokenTexts(ids, skipSpecialTokens: skipSpecialTokens))
    }

    /// The token strings of `ids`, special ones left out when asked.
    func tokenTexts(_ ids: [Int], skipSpecialTokens: Bool) throws -> [String] {
        var texts: [String] = []
        texts.reserveCapacity(ids.count)
        for id in ids {
            guard let text = token(of: id) else { throw TokenizerError.idOutOfRange(id: id, vocabularySize: tokens.count) }
            if skipSpecialTokens, specialIDs.contains(id) { continue }
            texts.append(text)
        }
        return texts
    }

    /// Runs the decoder chain; without a decoder, tokens are joined with spaces as tokenizers does.
    func decodeTokens(_ texts: [String]) -> String {
        guard let decoder else { return texts.joined(separator: " ") }
        return decoder.decodeChain(texts).joined()
    }
}

extension Tokenizer {
    /// Renders the tokenizer's chat template with its bos and eos tokens; throws when it has no template.
    /// O(template work).
    public func applyChatTemplate(_ messages: [ChatMessage], addGenerationPrompt: Bool = true,
                                  variables: [String: TemplateValue] = [:]) throws -> String {
        guard let parsedTemplate else {
            throw TokenizerError.malformed(field: "chat_template", problem: "tokenizer_config.json has no chat template")
        }
        return try parsedTemplate.get().render(messages: messages, addGenerationPrompt: addGenerationPrompt,
                                       bosToken: bosToken, eosToken: eosToken, variables: variables)
    }
}
