import Foundation

/// The `post_processor` of tokenizer.json for single sequences: the special ids put before and after the
/// text's ids when `addSpecialTokens` is on (Llama's `<|begin_of_text|>`; nothing for Qwen's ByteLevel).
struct PostProcessor: Sendable {
    var prefix: [Int] = []
    var suffix: [Int] = []

    init() {}

    /// Reads a post-processor object; an unknown type is an error naming the field.
    init(json: Any?, path: String) throws {
        if json == nil || json is NSNull { return }
        let fields = try JSONFields(json, path: path)
        let type = try fields.string("type")
        switch type {
        case "ByteLevel":
            return  // only adjusts offsets
        case "TemplateProcessing":
            let specials = try fields.nested("special_tokens")
            var beforeSequence = true
            for (index, item) in try fields.array("single").enumerated() {
                let itemFields = try JSONFields(item, path: fields.field("single[\(index)]"))
                if let special = itemFields.object["SpecialToken"] as? [String: Any] {
                    let name = try JSONFields(special, path: itemFields.field("SpecialToken")).string("id")
                    let entry = try specials.nested(name)
                    let ids = try entry.array("ids").map { value -> Int in
                        guard let id = (value as? NSNumber)?.intValue else {
                            throw TokenizerError.malformed(field: entry.field("ids"), problem: "expected integer ids")
                        }
                        return id
                    }
                    if beforeSequence { prefix += ids } else { suffix += ids }
                } else if itemFields.object["Sequence"] != nil {
                    beforeSequence = false
                } else {
                    throw TokenizerError.malformed(field: itemFields.path, problem: "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}")
                }
            }
        case "BertProcessing", "RobertaProcessing":
            // Both write [token, id] pairs: cls before the text, sep after it.
            func id(_ key: String) throws -> Int {
                guard let pair = fields.object[key] as? [Any], pair.count == 2, let id = (pair[1] as? NSNumber)?.intValue else {
                    throw TokenizerError.malformed(field: fields.field(key), problem: "expected [token, id]")
                }
                return id
            }
            prefix = [try id("cls")]
            suffix = [try id("sep")]
        case "Sequence":
            for (index, item) in try fields.array("processors").enumerated() {
                // Each processor wraps what the ones before it produced.
                let inner = try PostProcessor(json: item, path: fields.field("processors[\(index)]"))
                prefix = inner.prefix + prefix
                suffix += inner.suffix
            }
        default:
            throw TokenizerError.unsupported(field: fields.field("type"), value: "\"\(type)\"")
        }
    }
}
