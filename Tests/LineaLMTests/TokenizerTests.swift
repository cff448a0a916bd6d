import Foundation
import LineaLM
import Testing

/// The fixtures of scripts/tokenizer_fixtures.py, next to this file (no SwiftPM resources).
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    static func json(_ path: String) throws -> [String: Any] {
        let data = try Data(contentsOf: root.appendingPathComponent(path))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    static func tokenizer(_ name: String) throws -> Tokenizer {
        try Tokenizer(directory: root.appendingPathComponent(name))
    }

    /// A tokenizer.json of a fixture with one field replaced, to probe the loader's errors.
    static func modified(_ name: String, _ edit: (inout [String: Any]) -> Void) throws -> Data {
        var object = try json("\(name)/tokenizer.json")
        edit(&object)
        return try JSONSerialization.data(withJSONObject: object)
    }
}

struct TokenizerCase: CustomStringConvertible {
    let text: String
    let ids: [Int]
    let idsNoSpecial: [Int]
    let decoded: String
    let decodedSkipSpecial: String
    var description: String { text.count > 40 ? "\(text.prefix(40).debugDescription)… (\(text.count) characters)" : text.debugDescription }

    static func load(_ name: String) throws -> (vocabularySize: Int, cases: [TokenizerCase]) {
        let expected = try Fixtures.json("\(name)/expected.json")
        let cases = try #require(expected["cases"] as? [[String: Any]]).map { item in
            TokenizerCase(text: item["text"] as! String, ids: item["ids"] as! [Int], idsNoSpecial: item["ids_no_special"] as! [Int],
                          decoded: item["decoded"] as! String, decodedSkipSpecial: item["decoded_skip_special"] as! String)
        }
        return (expected["vocab_size"] as! Int, cases)
    }
}

@Suite struct TokenizerTests {
    static let names = ["qwen2", "gpt2", "llama3", "spbpe"]

    @Test(arguments: names)
    func encodesAndDecodesLikeTokenizers(name: String) throws {
        let tokenizer = try Fixtures.tokenizer(name)
        let (vocabularySize, cases) = try TokenizerCase.load(name)
        #expect(tokenizer.vocabularySize == vocabularySize)
        for item in cases {
            #expect(tokenizer.encode(item.text, addSpecialTokens: true) == item.ids, "\(name): \(item)")
            #expect(tokenizer.encode(item.text, addSpecialTokens: false) == item.idsNoSpecial, "\(name): \(item)")
            #expect(try tokenizer.decode(item.ids, skipSpecialTokens: false) == item.decoded, "\(name): \(item)")
            #expect(try tokenizer.decode(item.ids, skipSpecialTokens: true) == item.decodedSkipSpecial, "\(name): \(item)")
        }
    }

    /// Feeds ids one at a time: the pieces must add up to the full decode, and no piece may show a
    /// replacement character for a character that is merely incomplete.
    static func checkStreaming(_ tokenizer: Tokenizer, _ ids: [Int], skipSpecialTokens: Bool, label: String) throws {
        let full = try tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        var stream = tokenizer.streamingDecoder(skipSpecialTokens: skipSpecialTokens)
        var pieces: [String] = []
        for id in ids { pieces.append(try stream.next(id)) }
        pieces.append(stream.finish())
        #expect(pieces.joined() == full, "\(label): streamed \(pieces.joined().debugDescription) vs \(full.debugDescription)")
        if !full.contains("\u{FFFD}") {
            #expect(!pieces.contains { $0.contains("\u{FFFD}") }, "\(label): a piece printed U+FFFD: \(pieces)")
        }
    }

    @Test(arguments: names)
    func streamingDecodeMatchesFullDecode(name: String) throws {
        let tokenizer = try Fixtures.tokenizer(name)
        for item in try TokenizerCase.load(name).cases {
            for skip in [false, true] {
                try TokenizerTests.checkStreaming(tokenizer, item.ids, skipSpecialTokens: skip, label: "\(name) \(item) skip=\(skip)")
            }
        }
        // Arbitrary id sequences: byte tokens that never complete a character, specials in the middle.
        var state: UInt64 = 0x9E3779B97F4A7C15
        for trial in 0..<200 {
            let ids = (0..<(1 + trial % 17)).map { _ -> Int in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return Int((state >> 33) % UInt64(tokenizer.vocabularySize))
            }
            try TokenizerTests.checkStreaming(tokenizer, ids, skipSpecialTokens: trial % 2 == 0, label: "\(name) random \(ids)")
        }
    }

    @Test func streamingHoldsBackPartialCharacters() throws {
        let tokenizer = try Fixtures.tokenizer("qwen2")
        let ids = tokenizer.encode("日本語のテキスト", addSpecialTokens: false)
        var stream = tokenizer.streamingDecoder()
        var outputs: [String] = []
        for id in ids { outputs.append(try stream.next(id)) }
        // The small vocabulary splits these characters across tokens, so some steps must print nothing.
        #expect(ids.count > "日本語のテキスト".count)
        #expect(outputs.contains(""))
        #expect(outputs.joined() + stream.finish() == "日本語のテキスト")
    }

    @Test func largeTextRoundTrips() throws {
        let tokenizer = try Fixtures.tokenizer("qwen2")
        let (_, cases) = try TokenizerCase.load("qwen2")
        // <mask> swallows the spaces around it (lstrip/rstrip), so it would not round-trip.
        let pieces = cases.map(\.text).filter { !$0.contains("<mask>") }
        var text = ""
        while text.utf8.count < 100_000 { text += pieces.joined(separator: "\n") }
        let start = Date()
        let ids = tokenizer.encode(text, addSpecialTokens: false)
        let seconds = Date().timeIntervalSince(start)
        print("qwen2 fixture: encoded \(text.utf8.count) bytes into \(ids.count) ids in \(String(format: "%.3f", seconds)) s")
        #expect(try tokenizer.decode(ids) == text.precomposedStringWithCanonicalMapping)
    }

    @Test func specialTokensAndConfig() throws {
        let qwen = try Fixtures.tokenizer("qwen2")
        #expect(qwen.bosToken == nil)
        #expect(qwen.eosToken == "<|im_end|>")
        #expect(qwen.eosTokenID == qwen.id(of: "<|im_end|>"))
        #expect(qwen.isSpecial(qwen.id(of: "<|im_start|>")!))
        #expect(!qwen.isSpecial(qwen.id(of: "<think>")!))
        #expect(qwen.chatTemplate != nil)
        let llama = try Fixtures.tokenizer("llama3")
        #expect(llama.eosToken == "<|im_end|>")  // written as {"content": ...}
        #expect(llama.encode("hi").first == llama.id(of: "<|endoftext|>"))
        #expect(llama.encode("hi", addSpecialTokens: false).first != llama.id(of: "<|endoftext|>"))
    }
}

@Suite struct TokenizerErrorTests {
    static func loadError(_ data: Data) -> TokenizerError? {
        do {
            _ = try Tokenizer(tokenizerJSON: data)
            return nil
        } catch {
            return error as? TokenizerError
        }
    }

    @Test func unknownModelTypeNamesTheField() throws {
        let data = try Fixtures.modified("qwen2") { object in
            var model = object["model"] as! [String: Any]
            model["type"] = "WordPiece"
            object["model"] = model
        }
        let error = try #require(TokenizerErrorTests.loadError(data))
        #expect(error.description.contains("model.type"))
        #expect(error.description.contains("WordPiece"))
    }

    @Test func unknownPreTokenizerNamesTheField() throws {
        let data = try Fixtures.modified("gpt2") { $0["pre_tokenizer"] = ["type": "Whitespace"] }
        let error = try #require(TokenizerErrorTests.loadError(data))
        #expect(error == .unsupported(field: "pre_tokenizer.type", value: "\"Whitespace\""))
    }

    @Test func unknownSplitRegexNamesThePattern() throws {
        let data = try Fixtures.modified("qwen2") { object in
            object["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [
                ["type": "Split", "pattern": ["Regex": "\\w+|\\d"], "behavior": "Isolated", "invert": false],
                ["type": "ByteLevel", "add_prefix_space": false, "use_regex": false],
            ]]
        }
        let error = try #require(TokenizerErrorTests.loadError(data))
        #expect(error.description.contains("pre_tokenizer.pretokenizers[0].pattern.Regex"))
        #expect(error.description.contains("\\w+|\\d"))
    }

    @Test func unknownNormalizerAndDecoderNameTheField() throws {
        let normalizer = try Fixtures.modified("qwen2") { $0["normalizer"] = ["type": "Precompiled", "precompiled_charsmap": ""] }
        #expect(TokenizerErrorTests.loadError(normalizer) == .unsupported(field: "normalizer.type", value: "\"Precompiled\""))
        let decoder = try Fixtures.modified("spbpe") { $0["decoder"] = ["type": "Sequence", "decoders": [["type": "CTC"]]] }
        #expect(TokenizerErrorTests.loadError(decoder) == .unsupported(field: "decoder.decoders[0].type", value: "\"CTC\""))
    }

    @Test func idOutOfRangeNamesTheIdAndVocabularySize() throws {
        let tokenizer = try Fixtures.tokenizer("qwen2")
        let size = tokenizer.vocabularySize
        #expect(throws: TokenizerError.idOutOfRange(id: size, vocabularySize: size)) { try tokenizer.decode([1, size]) }
        #expect(throws: TokenizerError.idOutOfRange(id: -1, vocabularySize: size)) { try tokenizer.decode([-1]) }
        var stream = tokenizer.streamingDecoder()
        #expect(throws: TokenizerError.idOutOfRange(id: size + 5, vocabularySize: size)) { try stream.next(size + 5) }
        #expect(TokenizerError.idOutOfRange(id: size, vocabularySize: size).description.contains("\(size)"))
    }
}
