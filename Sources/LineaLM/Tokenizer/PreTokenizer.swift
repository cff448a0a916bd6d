/// The `pre_tokenizer` of tokenizer.json: splits a normalized piece of text into the words BPE sees.
indirect enum PreTokenizer: Sendable {
    /// Spells each word's UTF-8 bytes with GPT-2's printable characters, after an optional GPT-2 split.
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    /// Isolates the matches of a known pattern.
    case split(SplitPattern)
    case sequence([PreTokenizer])

    /// Reads a pre-tokenizer object; an unknown type, pattern or behavior is an error naming the field.
    init(json: Any?, path: String) throws {
        let fields = try JSONFields(json, path: path)
        let type = try fields.string("type")
        switch type {
        case "ByteLevel":
            self = .byteLevel(addPrefixSpace: try fields.bool("add_prefix_space", default: true),
                              useRegex: try fields.bool("use_regex", default: true))
        case "Split":
            let behavior = try fields.string("behavior")
            guard behavior == "Isolated" else {
                throw TokenizerError.unsupported(field: fields.field("behavior"), value: "\"\(behavior)\" (only \"Isolated\" is implemented)")
            }
            if try fields.bool("invert", default: false) {
                throw TokenizerError.unsupported(field: fields.field("invert"), value: "true")
            }
            let pattern = try fields.nested("pattern")
            if let regex = pattern.object["Regex"] as? String {
                guard let known = SplitPattern(regex: regex) else {
                    throw TokenizerError.unsupported(
                        field: pattern.field("Regex"),
                        value: "\"\(regex)\" (implemented: the GPT-2, Llama-3 and Qwen2 split patterns)")
                }
                self = .split(known)
            } else if let literal = pattern.object["String"] as? String {
                self = .split(.literal(Array(literal.unicodeScalars)))
            } else {
                throw TokenizerError.malformed(field: fields.field("pattern"), problem: "expected {\"Regex\": ...} or {\"String\": ...}")
            }
        case "Sequence":
            let items = try fields.array("pretokenizers")
            self = .sequence(try items.enumerated().map { try PreTokenizer(json: $1, path: "\(path).pretokenizers[\($0)]") })
        default:
            throw TokenizerError.unsupported(field: fields.field("type"), value: "\"\(type)\"")
        }
    }

    /// Whether words come out in the byte-level spelling (then the decoder must be ByteLevel to undo it).
    var isByteLevel: Bool {
        switch self {
        case .byteLevel: return true
        case .split: return false
        case let .sequence(steps): return steps.contains { $0.isByteLevel }
        }
    }

    /// The words of `text`, in order. O(n).
    func words(_ text: String) -> [String] {
        var pieces = [Array(text.unicodeScalars)]
        apply(to: &pieces)
        return pieces.map { String(String.UnicodeScalarView($0)) }
    }

    /// Splits each piece in place; byte-level steps also respell the pieces.
    private func apply(to pieces: inout [[Unicode.Scalar]]) {
        switch self {
        case let .split(pattern):
            pieces = pieces.flatMap { piece in pattern.split(piece).map { Array(piece[$0]) } }
        case let .byteLevel(addPrefixSpace, useRegex):
            pieces = pieces.flatMap { piece -> [[Unicode.Scalar]] in
                var piece = piece
                if addPrefixSpace, !piece.isEmpty, piece.first != " " { piece.insert(" ", at: 0) }
                let words = useRegex ? SplitPattern.gpt2.split(piece).map { Array(piece[$0]) } : [piece]
                return words.map { word in
                    var bytes: [UInt8] = []
                    bytes.reserveCapacity(word.count)
                    for scalar in word { bytes.append(contentsOf: UTF8.encode(scalar)!) }
                    return bytes.map { ByteLevel.byteToScalar[Int($0)] }
                }
            }
        case let .sequence(steps):
            for step in steps { step.apply(to: &pieces) }
        }
    }
}
