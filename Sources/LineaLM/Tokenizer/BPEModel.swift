import Foundation

/// The `model` of tokenizer.json when its type is BPE: a vocabulary and ranked merges, applied to one word.
struct BPEModel: Sendable {
    let vocab: [String: Int]
    /// (left id, right id) packed as `left << 32 | right` → (rank << 32 | merged id).
    let merges: [UInt64: UInt64]
    let unknownID: Int?
    let fuseUnknown: Bool
    /// The ids of `<0x00>`...`<0xFF>` when `byte_fallback` is on and all 256 exist.
    let byteFallbackIDs: [Int]?
    /// A word that is itself a token skips the merges (Llama-3's `ignore_merges`).
    let ignoreMerges: Bool
    let continuingSubwordPrefix: String
    let endOfWordSuffix: String
    /// Ids of the one-scalar tokens, which almost every word starts from.
    private let scalarIDs: [UInt32: Int]

    /// Reads `model`; another model type, dropout, or a merge of unknown tokens is an error naming the field.
    init(json: Any?, path: String) throws {
        let fields = try JSONFields(json, path: path)
        let type = fields.isNull("type") ? "BPE" : try fields.string("type")
        guard type == "BPE" else {
            throw TokenizerError.unsupported(field: fields.field("type"), value: "\"\(type)\" (only BPE is implemented)")
        }
        if let dropout = fields.object["dropout"] as? Double, dropout > 0 {
            throw TokenizerError.unsupported(field: fields.field("dropout"), value: "\(dropout) (BPE dropout is for training)")
        }
        guard let vocabObject = fields.object["vocab"] as? [String: Any] else {
            throw TokenizerError.malformed(field: fields.field("vocab"), problem: "expected an object of token → id")
        }
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(vocabObject.count)
        for (token, value) in vocabObject {
            guard let id = (value as? NSNumber)?.intValue else {
                throw TokenizerError.malformed(field: fields.field("vocab.\(token)"), problem: "expected an integer id")
            }
            vocab[token] = id
        }
        self.vocab = vocab
        continuingSubwordPrefix = try fields.optionalString("continuing_subword_prefix") ?? ""
        endOfWordSuffix = try fields.optionalString("end_of_word_suffix") ?? ""
        ignoreMerges = try fields.bool("ignore_merges", default: false)
        fuseUnknown = try fields.bool("fuse_unk", default: false)
        if let unk = try fields.optionalString("unk_token") {
            guard let id = vocab[unk] else {
                throw TokenizerError.malformed(field: fields.field("unk_token"), problem: "\"\(unk)\" is not in the vocabulary")
            }
            unknownID = id
        } else {
            unknownID = nil
        }
        if try fields.bool("byte_fallback", default: false) {
            let ids = (0..<256).compactMap { vocab[BPEModel.byteToken(UInt8($0))] }
            byteFallbackIDs = ids.count == 256 ? ids : nil
        } else {
            byteFallbackIDs = nil
        }
        var scalarIDs: [UInt32: Int] = [:]
        for (token, id) in vocab {
            var scalars = token.unicodeScalars.makeIterator()
            if let first = scalars.next(), scalars.next() == nil { scalarIDs[first.value] = id }
        }
        self.scalarIDs = scalarIDs

        let list = fields.isNull("merges") ? [] : try fields.array("merges")
        var merges: [UInt64: UInt64] = [:]
        merges.reserveCapacity(list.count)
        let prefixLength = continuingSubwordPrefix.count
        for (rank, item) in list.enumerated() {
            let pair: [String]
            if let text = item as? String {
                // The older form "left right": both halves are tokens, neither contains a space.
                pair = text.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            } else if let array = item as? [String] {
                pair = array
            } else {
                pair = []
            }
            guard pair.count == 2 else {
                throw TokenizerError.malformed(field: fields.field("merges[\(rank)]"), problem: "expected \"left right\" or [\"left\", \"right\"]")
            }
            let merged = pair[0] + String(pair[1].dropFirst(prefixLength))
            guard let left = vocab[pair[0]], let right = vocab[pair[1]], let result = vocab[merged] else {
                throw TokenizerError.malformed(
                    field: fields.field("merges[\(rank)]"),
                    problem: "merge \"\(pair[0])\" + \"\(pair[1])\" uses or makes a token missing from the vocabulary")
            }
            let key = UInt64(left) << 32 | UInt64(right)
            // The first (lowest) rank of a repeated merge wins.
            if merges[key] == nil { merges[key] = UInt64(rank) << 32 | UInt64(result) }
        }
        self.merges = merges
    }

    /// tokenizers writes byte tokens as `<0x0A>`: two upper-case hex digits.
    static func byteToken(_ byte: UInt8) -> String {
        let hex = String(byte, radix: 16, uppercase: true)
        return "<0x" + (hex.count == 1 ? "0" + hex : hex) + ">"
    }

    /// The ids of one word. O(n log n) in the word's length (a heap of candidate merges).
    func tokenize(_ word: String) -> [Int] {
        if ignoreMerges, let id = vocab[word] { return [id] }
        var symbols = initialSymbols(word)
        if symbols.count > 1 { mergeAll(&symbols) }
        return symbols
    }

    /// One symbol per scalar; a scalar outside the vocabulary becomes its byte tokens, else the unknown token.
    private func initialSymbols(_ word: String) -> [Int] {
        var ids: [Int] = []
        ids.reserveCapacity(word.unicodeScalars.count)
        let plain = continuingSubwordPrefix.isEmpty && endOfWordSuffix.isEmpty
        var pendingUnknown = false
        let scalars = Array(word.unicodeScalars)
        for (index, scalar) in scalars.enumerated() {
            var id: Int?
            var piece = ""
            if plain {
                id = scalarIDs[scalar.value]
            } else {
                piece = String(scalar)
                if index > 0 { piece = continuingSubwordPrefix + piece }
                if index == scalars.count - 1 { piece += endOfWordSuffix }
                id = vocab[piece]
            }
            if let id {
                if pendingUnknown, let unk = unknownID { ids.append(unk); pendingUnknown = false }
                ids.append(id)
                continue
            }
            if let byteIDs = byteFallbackIDs {
                let bytes = plain ? Array(String(scalar).utf8) : Array(piece.utf8)
                ids.append(contentsOf: bytes.map { byteIDs[Int($0)] })
                continue
            }
            if let unk = unknownID {
                // fuse_unk folds a run of unknown scalars into one unknown token.
                if pendingUnknown, !fuseUnknown { ids.append(unk) }
                pendingUnknown = true
            }
        }
        if pendingUnknown, let unk = unknownID { ids.append(unk) }
        return ids
    }

    /// Applies merges lowest rank first (leftmost among equal ranks) until none applies, as tokenizers does.
    private func mergeAll(_ symbols: inout [Int]) {
        let n = symbols.count
        var prev = Array(-1..<(n - 1))
        var next = Array(1...n)
        next[n - 1] = -1
        var alive = [Bool](repeating: true, count: n)
        var heap = MergeHeap()
        func push(_ position: Int) {
            let right = next[position]
            guard right >= 0, let merge = merges[UInt64(symbols[position]) << 32 | UInt64(symbols[right])] else { return }
            heap.push(rank: UInt32(merge >> 32), position: UInt32(position), result: UInt32(truncatingIfNeeded: merge))
        }
        for i in 0..<(n - 1) { push(i) }
        while let top = heap.pop() {
            let position = Int(top.position)
            guard alive[position], next[position] >= 0 else { continue }
            let right = next[position]
            // A queued merge is stale when its pair has changed since; the pair's merged id tells.
            guard let merge = merges[UInt64(symbols[position]) << 32 | UInt64(symbols[right])],
                  UInt32(truncatingIfNeeded: merge) == top.result else { continue }
            symbols[position] = Int(top.result)
            alive[right] = false
            next[position] = next[right]
            if next[right] >= 0 { prev[next[right]] = position }
            if prev[position] >= 0 { push(prev[position]) }
            push(position)
        }
        var merged: [Int] = []
        var i = 0
        while i >= 0 {
            merged.append(symbols[i])
            i = next[i]
        }
        symbols = merged
    }
}

/// A binary min-heap of candidate merges ordered by (rank, position).
private struct MergeHeap {
    struct Entry { var key: UInt64; var result: UInt32 }
    private var entries: [Entry] = []

    mutating func push(rank: UInt32, position: UInt32, result: UInt32) {
        entries.append(Entry(key: UInt64(rank) << 32 | UInt64(position), result: result))
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child].key < entries[parent].key else { break }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> (position: UInt32, result: UInt32)? {
        guard let top = entries.first else { return nil }
        let last = entries.removeLast()
        if !entries.isEmpty {
            entries[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1, right = left + 1
                var smallest = parent
                if left < entries.count, entries[left].key < entries[smallest].key { smallest = left }
                if right < entries.count, entries[right].key < entries[smallest].key { smallest = right }
                if smallest == parent { break }
                entries.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return (UInt32(truncatingIfNeeded: top.key), top.result)
    }
}
