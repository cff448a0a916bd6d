import Foundation
import Linea
import Testing

/// A safetensors file as the mutator sees it: header entries with numbers kept as raw JSON tokens (so a mutation can
/// write `1e308`, `-0` or 30 digits), optional metadata, and the data buffer.
struct FileModel {
    struct Entry {
        var name: String
        var dtype: String
        var shape: [String]
        var offsets: [String]
        /// Raw JSON for the whole value (replaces the object) when set.
        var raw: String?
        /// Extra raw `"key": value` members inside the object.
        var extra: [String] = []
    }
    var entries: [Entry]
    /// Raw JSON of the `__metadata__` value, or nil for none.
    var metadata: String?
    var data: [UInt8]

    /// The header JSON (keys in entry order) with `padding` spaces after it.
    func header(padding: Int) -> [UInt8] {
        var members: [String] = []
        if let metadata { members.append("\"__metadata__\":\(metadata)") }
        for e in entries {
            let value = e.raw ?? "{" + (["\"dtype\":\"\(e.dtype)\"", "\"shape\":[\(e.shape.joined(separator: ","))]",
                                         "\"data_offsets\":[\(e.offsets.joined(separator: ","))]"] + e.extra)
                .joined(separator: ",") + "}"
            members.append("\(quoted(e.name)):\(value)")
        }
        return Array(("{" + members.joined(separator: ",") + "}" + String(repeating: " ", count: padding)).utf8)
    }

    /// The whole file: 8-byte little-endian header length (`lengthDelta` added, wrapping), header, data.
    func bytes(padding: Int = 0, lengthDelta: UInt64 = 0) -> [UInt8] {
        let h = header(padding: padding)
        return withUnsafeBytes(of: (UInt64(h.count) &+ lengthDelta).littleEndian) { Array($0) } + h + data
    }

    private func quoted(_ s: String) -> String {
        "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    /// A valid file of a few tensors of random dtypes and small shapes (scalars and zero-size ones included),
    /// packed in random order with optional gaps, with or without metadata.
    static func random(_ rng: inout SeededRandom) -> FileModel {
        let sizes = ["F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "U8": 1, "BOOL": 1, "I32": 4]
        var model = FileModel(entries: [], metadata: nil, data: [])
        for i in 0..<(1 + rng.below(5)) {
            let dtype = rng.chance(0.6) ? rng.pick(["F32", "F16", "BF16", "F64"]) : rng.pick(Array(sizes.keys).sorted())
            let shape = (0..<rng.below(4)).map { _ in rng.chance(0.1) ? 0 : 1 + rng.below(5) }
            if rng.chance(0.3) { model.data += [UInt8](repeating: 0xA5, count: rng.below(7)) }  // a gap
            let begin = model.data.count
            let count = shape.reduce(1, *) * sizes[dtype]!
            model.data += (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            model.entries.append(Entry(name: rng.pick(["q", "k", "v", "g", "beta", "w\(i)", "naïve \"x\"", ""]) + "\(i)",
                                       dtype: dtype, shape: shape.map(String.init), offsets: ["\(begin)", "\(model.data.count)"]))
        }
        if rng.chance(0.5) { model.metadata = #"{"format":"pt","note":"tab\there"}"# }
        return model
    }
}

/// Structural and byte-level mutations of safetensors files.
enum Mutator {
    /// Numbers that sit on boundaries: signs, powers of two, Int/UInt64 limits, floats, overlong literals.
    static let numbers = ["0", "1", "-1", "2", "3", "4", "7", "8", "255", "65536", "4294967296", "4294967297",
                          "1152921504606846976", "2305843009213693951", "4611686018427387904", "9223372036854775807",
                          "9223372036854775808", "-9223372036854775808", "-9223372036854775809", "18446744073709551615",
                          "99999999999999999999999999999", "1e308", "1e309", "-1e308", "1e-400", "-0", "0.5", "1E2",
                          "1.0", "00", "-", "1.", "NaN", "Infinity", "0x10"]
    static let dtypes = ["F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "C64", "I32", "U64",
                         "", "f32", "F32 ", "F4", "\\u0046\\u0033\\u0032", "é"]
    static let values = ["null", "true", "{}", "[]", "\"\"", "\"F32\"", "[[]]", "{\"a\":{}}", "-1", "1e999", "[1,2,3]"]

    /// A number token: an edge value, or one near `current`.
    static func number(_ rng: inout SeededRandom, near current: String) -> String {
        if rng.chance(0.6) { return rng.pick(numbers) }
        let n = Int(current) ?? 0
        return String(rng.pick([n &+ 1, n &- 1, n &* 2, n / 2, n &+ 8, n &- 8, n &* 1_000_003, Int(rng.next() >> 1)]))
    }

    /// One structural mutation of the header model (JSON stays well-formed except where a raw token breaks it).
    static func mutateStructure(_ m: inout FileModel, _ rng: inout SeededRandom) {
        if m.entries.isEmpty {
            m.entries.append(.init(name: "x", dtype: "F32", shape: ["1"], offsets: ["0", "4"]))
        }
        let i = rng.below(m.entries.count)
        switch rng.below(14) {
        case 0, 1:  // a shape extent
            if m.entries[i].shape.isEmpty { m.entries[i].shape = ["1"] }
            let j = rng.below(m.entries[i].shape.count)
            m.entries[i].shape[j] = number(&rng, near: m.entries[i].shape[j])
        case 2:  // add or drop a dimension; zero-size with huge others
            if rng.chance(0.5), !m.entries[i].shape.isEmpty {
                m.entries[i].shape.removeLast()
            } else {
                m.entries[i].shape.insert(rng.pick(["0", "1", "4294967296", "9223372036854775807"]), at: 0)
            }
            if rng.chance(0.3) { m.entries[i].shape = ["0"] + (0..<rng.below(40)).map { _ in rng.pick(numbers) } }
        case 3, 4:  // an offset
            if m.entries[i].offsets.isEmpty { m.entries[i].offsets = ["0"] }
            let j = rng.below(m.entries[i].offsets.count)
            m.entries[i].offsets[j] = number(&rng, near: m.entries[i].offsets[j])
        case 5:  // offsets swapped, equal, extra or missing
            switch rng.below(4) {
            case 0: m.entries[i].offsets.reverse()
            case 1: m.entries[i].offsets = Array(repeating: m.entries[i].offsets.first ?? "0", count: 2)
            case 2: m.entries[i].offsets.append(rng.pick(numbers))
            default: m.entries[i].offsets.removeLast(min(m.entries[i].offsets.count, 1 + rng.below(2)))
            }
        case 6:
            m.entries[i].dtype = rng.pick(dtypes)
        case 7:  // a duplicate or overlapping entry
            var copy = m.entries[i]
            if rng.chance(0.5) { copy.name += "'" }
            m.entries.insert(copy, at: rng.below(m.entries.count + 1))
        case 8:  // the entry replaced by another JSON value, or a nesting bomb
            let depth = rng.pick([10, 63, 64, 65, 1000, 100_000])
            m.entries[i].raw = rng.chance(0.5) ? rng.pick(values)
                : String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        case 9:  // extra members: unknown keys, a repeated dtype, a deep value
            m.entries[i].extra.append(rng.pick([#""dtype":"F16""#, #""shape":[1]"#, #""extra":"#
                + String(repeating: "{\"a\":", count: 70) + "1" + String(repeating: "}", count: 70),
                #""x":[1e999,-1e999]"#, #""data_offsets":[0,0]"#]))
        case 10:  // field values of the wrong kind
            let v = rng.pick(values)
            switch rng.below(3) {
            case 0: m.entries[i].dtype = "\"" + v.dropFirst()
            case 1: m.entries[i].shape = [v]
            default: m.entries[i].offsets = [v, v]
            }
        case 11:  // metadata abuse
            m.metadata = rng.pick(["null", "1", "[]", #"{"a":1}"#, #"{"a":"b","a":"c"}"#, #"{"a":{"b":"c"}}"#,
                                   "{\"big\":\"" + String(repeating: "x", count: 1 << rng.below(20)) + "\"}",
                                   #"{"\ud800":"x"}"#, #"{"a":"\u0000"}"#])
        case 12:  // names: empty, escapes, __metadata__ twice, very long
            m.entries[i].name = rng.pick(["", "__metadata__", "\\u0000", "\u{7}", String(repeating: "n", count: 1 << 16), "🙂"])
        default:  // the entry removed
            m.entries.remove(at: i)
        }
    }

    /// One byte-level mutation of a whole file image.
    static func mutateBytes(_ b: inout [UInt8], _ rng: inout SeededRandom) {
        if b.isEmpty { b = [0] }
        let p = rng.below(b.count)
        switch rng.below(9) {
        case 0: b[p] ^= 1 << UInt8(rng.below(8))
        case 1: b[p] = rng.pick([0x00, 0xFF, 0x7F, 0x80, 0xC0, 0xED, 0xF4, 0x22, 0x5C, 0x7B, 0x5B, 0x2C, 0x3A, 0x2D, 0x39, 0x20])
        case 2: b.insert(contentsOf: (0..<(1 + rng.below(8))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, at: p)
        case 3: b.removeSubrange(p..<min(b.count, p + 1 + rng.below(16)))
        case 4: b.removeSubrange(rng.below(b.count + 1)...)  // truncation
        case 5: b += (0..<rng.below(64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        case 6:  // a range duplicated in place
            let q = min(b.count, p + 1 + rng.below(32))
            b.insert(contentsOf: Array(b[p..<q]), at: q)
        case 7:  // the header length field replaced
            let value: UInt64 = rng.pick([0, 1, 2, 7, UInt64.max, UInt64.max - 7, 1 << 63, UInt64(Int.max),
                                          100_000_000, 100_000_001, UInt64(max(0, b.count - 8)), UInt64(b.count), rng.next()])
            while b.count < 8 { b.append(0) }
            withUnsafeBytes(of: value.littleEndian) { b.replaceSubrange(0..<8, with: $0) }
        default:  // invalid UTF-8 inside a string
            if let quote = b.indices.dropFirst(8).filter({ b[$0] == 0x22 }).randomElement(using: &rng) {
                b.insert(contentsOf: rng.pick([[0xFF], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82]]),
                         at: quote + 1)
            }
        }
    }
}

@Suite struct SafeTensorsFuzzTests {
    /// Mutated files: every read either returns tensors whose sizes match their shapes (and that write and read
    /// back unchanged) or throws a `LineaError.file` naming the path; never a trap, never another error type.
    @Test func mutatedFilesReadOrThrowLineaError() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("linea-fuzz-st-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("case.safetensors").path
        let again = dir.appendingPathComponent("again.safetensors").path
        var accepted = 0
        let cases = try Fuzz.run("mutatedFilesReadOrThrowLineaError", slot: 0) { rng, fuzzCase in
            var model = FileModel.random(&rng)
            for _ in 0..<rng.below(4) { Mutator.mutateStructure(&model, &rng) }
            var bytes = model.bytes(padding: rng.chance(0.8) ? rng.below(8) : rng.pick([0, 1, 4096]),
                                    lengthDelta: rng.chance(0.9) ? 0 : rng.pick([1, 2, 8, UInt64.max, UInt64.max - 1]))
            if rng.chance(0.5) { for _ in 0..<(1 + rng.below(4)) { Mutator.mutateBytes(&bytes, &rng) } }
            fuzzCase.describe("file bytes (base64): \(Data(bytes).base64EncodedString())")
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            do {
                let tensors = try SafeTensors.read(path: path)
                for (name, t) in tensors where t.scalars.count != t.shape.reduce(1, *) {
                    fuzzCase.fail("tensor '\(name)': \(t.scalars.count) scalars for shape \(t.shape)")
                }
                try SafeTensors.write(tensors, to: again)
                let back = try SafeTensors.read(path: again)
                let same = back.keys == tensors.keys && tensors.allSatisfy { name, t in
                    back[name]!.shape == t.shape && back[name]!.scalars.map(\.bitPattern) == t.scalars.map(\.bitPattern)
                }
                if !same { fuzzCase.fail("tensors read, written and read again differ") }
                accepted += 1
            } catch let error as LineaError {
                if case let .file(errorPath, problem) = error, errorPath == path || errorPath == again, !problem.isEmpty {
                    return
                }
                fuzzCase.fail("a LineaError that does not name the file: \(error)")
            } catch {
                fuzzCase.fail("threw \(type(of: error)), not LineaError: \(error)")
            }
        }
        print("fuzz safetensors: \(accepted) of \(cases) mutated files read")
    }
}
