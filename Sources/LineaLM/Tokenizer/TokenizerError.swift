/// Why a tokenizer or chat template could not be loaded or used; each case names the field, id or construct at fault.
public enum TokenizerError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A JSON field holds a value this runtime does not implement (`field` is a dotted path such as `model.type`).
    case unsupported(field: String, value: String)
    /// A JSON field is missing or has the wrong shape.
    case malformed(field: String, problem: String)
    /// A token id outside the vocabulary was given to decode.
    case idOutOfRange(id: Int, vocabularySize: Int)
    /// A file could not be read.
    case file(path: String, problem: String)
    /// The chat template uses a Jinja construct this renderer does not implement, or fails to parse.
    case templateSyntax(construct: String, line: Int)
    /// Rendering the chat template failed (a `raise_exception` call, an undefined operation, a type error).
    case templateRender(problem: String)

    /// The message, naming the field, id or construct.
    public var description: String {
        switch self {
        case let .unsupported(field, value):
            return "\(field): unsupported value \(value)"
        case let .malformed(field, problem):
            return "\(field): \(problem)"
        case let .idOutOfRange(id, size):
            return "token id \(id) is out of range: the vocabulary has \(size) ids (0..<\(size))"
        case let .file(path, problem):
            return "\(path): \(problem)"
        case let .templateSyntax(construct, line):
            return "chat template, line \(line): \(construct)"
        case let .templateRender(problem):
            return "chat template: \(problem)"
        }
    }
}
