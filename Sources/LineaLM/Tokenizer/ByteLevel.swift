/// GPT-2's reversible map between bytes and printable characters, which byte-level BPE vocabularies are written in.
///
/// Bytes that are printable Latin-1 map to themselves; the other 68 map to U+0100 onwards in byte order, so
/// every token is a printable string and every byte sequence has a spelling.
enum ByteLevel {
    /// The character spelling byte `b`.
    static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            if printable {
                table[b] = Unicode.Scalar(UInt32(b))!
            } else {
                table[b] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return table
    }()

    /// The byte a character spells, or nil for characters outside the map.
    static let scalarToByte: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for (b, scalar) in byteToScalar.enumerated() { map[scalar.value] = UInt8(b) }
        return map
    }()

    /// The byte-level spelling of `text`'s UTF-8 bytes.
    static func encode<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var scalars = String.UnicodeScalarView()
        for b in bytes { scalars.append(byteToScalar[Int(b)]) }
        return String(scalars)
    }

    /// The bytes a token spells; a token holding any character outside the map (an added token such as
    /// "<｜begin▁of▁sentence｜>") contributes its own UTF-8 bytes instead, as tokenizers' ByteLevel decoder does.
    static func decode(_ token: String, into bytes: inout [UInt8]) {
        let start = bytes.count
        for scalar in token.unicodeScalars {
            guard let b = scalarToByte[scalar.value] else {
                bytes.removeSubrange(start...)
                bytes.append(contentsOf: token.utf8)
                return
            }
            bytes.append(b)
        }
    }
}
