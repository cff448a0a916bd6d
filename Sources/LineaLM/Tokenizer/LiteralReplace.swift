extension String {
    /// Replaces every occurrence of a literal string, scalar by scalar: Character-level search would miss a
    /// space that a combining mark follows, and tokenizers matches bytes.
    func replacingLiteral(_ pattern: String, with content: String) -> String {
        let needle = Array(pattern.unicodeScalars)
        guard let first = needle.first else { return self }
        let scalars = Array(unicodeScalars)
        var output = String.UnicodeScalarView()
        var i = 0
        while i < scalars.count {
            if scalars[i] == first, i + needle.count <= scalars.count, scalars[i..<(i + needle.count)].elementsEqual(needle) {
                output.append(contentsOf: content.unicodeScalars)
                i += needle.count
            } else {
                output.append(scalars[i])
                i += 1
            }
        }
        return String(output)
    }
}
