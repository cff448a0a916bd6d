#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

#if _endian(big)
#error("SafeTensors assumes a little-endian host (the format is little-endian)")
#endif

/// Every dtype name of the safetensors spec with a whole-byte element size; Linea converts the `DType` ones.
private let specElementSizes: [String: Int] = [
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
]

/// The POSIX `write` (the name is shadowed inside `SafeTensors`).
private func posixWrite(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, bytes, count)
}

/// Throws `LineaError.file` unless nothing or a regular file is at `path`: an output written by rename would replace
/// a FIFO, a socket or (as root) /dev/null itself.
package func requireRegularOutput(_ path: String) throws {
    var info = stat()
    if stat(path, &info) == 0, let kind = nonRegularKind(info.st_mode) {
        throw LineaError.file(path: path, problem: "expected a regular file (or no file) to write, got \(kind)")
    }
}

/// What a non-regular file is ("a FIFO", "a directory", ...), or nil for a regular file; from `st_mode`.
private func nonRegularKind(_ mode: mode_t) -> String? {
    switch mode & S_IFMT {
    case S_IFREG: return nil
    case S_IFDIR: return "a directory"
    case S_IFIFO: return "a FIFO"
    case S_IFSOCK: return "a socket"
    case S_IFCHR: return "a character device"
    case S_IFBLK: return "a block device"
    case S_IFLNK: return "a symbolic link"
    default: return "a file of type 0o\(String(mode & S_IFMT, radix: 8))"
    }
}

/// `text` for an error message: control and format characters escaped (a name read from a file could hold terminal
/// escape sequences) and cut after 100 characters (a name may be megabytes long).
private func printable(_ text: String) -> String {
    var out = ""
    for (i, scalar) in text.unicodeScalars.enumerated() {
        if i == 100 { return out + "... (\(text.unicodeScalars.count) characters)" }
        switch scalar.properties.generalCategory {
        case .control, .format: out += "\\u{\(String(scalar.value, radix: 16))}"
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out
}

/// Header length above which a file is refused as not a safetensors file (the reference implementation's limit).
private let maxHeaderBytes = 100_000_000

/// A memory-mapped safetensors file: header parsed and validated at open, tensors converted to Float32 on access.
///
/// Layout: u64 little-endian header length `N`, `N` bytes of JSON header (may end in whitespace padding),
/// then the data buffer; `data_offsets` are relative to the buffer start. Opening costs O(header size);
/// the data is only read by `tensor(_:)`. Tensors may leave gaps in the buffer but must not overlap.
/// Dtypes of the spec outside `DType` (I8, U16, F8_E4M3, ...) are accepted at open and refused by `dtype(of:)`; integer
/// and bool tensors are read as stored by `deviceTensor(_:)`, never as Float32.
/// The mapping is private and read-only; truncating the file on disk while it is open is not supported.
public final class SafeTensorsFile: @unchecked Sendable {
    /// One tensor's header entry after validation.
    private struct Entry {
        let dtypeName: String
        let shape: [Int]
        let begin: Int
        let end: Int
    }

    /// The path given at open, used in every error.
    public let path: String
    private let base: UnsafeRawPointer
    private let mappedLength: Int
    private let dataStart: Int
    private let entries: [String: Entry]
    /// Sorted tensor names (the `__metadata__` key excluded).
    public let names: [String]
    /// The header's `__metadata__` string map (empty when absent).
    public let metadata: [String: String]

    /// Maps the file at `path` (PROT_READ, MAP_PRIVATE) and validates its header; throws `LineaError.file` naming
    /// the problem for a missing/unreadable/non-regular file, a truncated file, bad JSON or an inconsistent entry.
    public init(path: String) throws {
        self.path = path
        func problem(_ text: String) -> LineaError { .file(path: path, problem: text) }

        // O_NONBLOCK: a FIFO without a writer would block open() forever; fstat then refuses it.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            var info = stat()  // a socket fails open() with ENXIO: say what the path is instead
            if stat(path, &info) == 0, let kind = nonRegularKind(info.st_mode) {
                throw problem("expected a regular file, got \(kind)")
            }
            throw problem("cannot open for reading: \(reason)")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw problem("cannot stat: \(String(cString: strerror(errno)))") }
        if let kind = nonRegularKind(info.st_mode) { throw problem("expected a regular file, got \(kind)") }
        let fileSize = Int(info.st_size)
        guard fileSize >= 8 else {
            throw problem("file is \(fileSize) bytes, shorter than the 8-byte header length: truncated or not a safetensors file")
        }
        guard let raw = mmap(nil, fileSize, PROT_READ, MAP_PRIVATE, fd, 0), raw != MAP_FAILED else {
            throw problem("cannot mmap \(fileSize) bytes: \(String(cString: strerror(errno)))")
        }
        let base = UnsafeRawPointer(raw)
        do {
            let parsed = try SafeTensorsFile.parseHeader(base: base, fileSize: fileSize, problem: problem)
            self.base = base
            self.mappedLength = fileSize
            self.dataStart = parsed.dataStart
            self.entries = parsed.entries
            self.names = parsed.entries.keys.sorted()
            self.metadata = parsed.metadata
        } catch {
            munmap(raw, fileSize)
            throw error
        }
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), mappedLength)
    }

    /// Parses and validates the header; returns the buffer start, the entries and the metadata. O(header size).
    private static func parseHeader(
        base: UnsafeRawPointer, fileSize: Int, problem: (String) -> LineaError
    ) throws -> (dataStart: Int, entries: [String: Entry], metadata: [String: String]) {
        let declared = base.loadUnaligned(as: UInt64.self)
        guard declared <= UInt64(maxHeaderBytes) else {
            throw problem("header length \(declared) exceeds the \(maxHeaderBytes)-byte limit: not a safetensors file")
        }
        let headerLength = Int(declared)
        guard headerLength <= fileSize - 8 else {
            throw problem("header length \(headerLength) is larger than the \(fileSize - 8) bytes after the length field: "
                + "file truncated or not a safetensors file")
        }
        guard headerLength >= 2 else { throw problem("header length \(headerLength) is too small for a JSON object") }
        let bufferSize = fileSize - 8 - headerLength
        let headerBytes = UnsafeBufferPointer(start: (base + 8).assumingMemoryBound(to: UInt8.self), count: headerLength)

        let root: JSONValue
        do {
            root = try JSONParser.parse(headerBytes)
        } catch {
            throw problem("header is not valid JSON: \(error.message)")
        }
        guard case let .object(members) = root else {
            throw problem("header JSON must be an object, found \(root.kindDescription)")
        }

        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in members {
            if name == "__metadata__" {
                switch value {
                case .null: break
                case let .object(pairs):
                    for (key, item) in pairs {
                        guard case let .string(text) = item else {
                            throw problem("__metadata__ value for \"\(printable(key))\" must be a string, found \(item.kindDescription)")
                        }
                        metadata[key] = text
                    }
                default:
                    throw problem("__metadata__ must be an object of strings, found \(value.kindDescription)")
                }
                continue
            }
            entries[name] = try parseEntry(name: name, value: value, bufferSize: bufferSize, problem: problem)
        }

        // Overlaps: sort the non-empty ranges by start and compare neighbours. O(n log n).
        let ranges = entries.filter { $0.value.end > $0.value.begin }
            .map { (name: $0.key, begin: $0.value.begin, end: $0.value.end) }
            .sorted { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        for (a, b) in zip(ranges, ranges.dropFirst()) where b.begin < a.end {
            throw problem("tensors '\(printable(a.name))' (data_offsets [\(a.begin), \(a.end)]) and '\(printable(b.name))' "
                + "(data_offsets [\(b.begin), \(b.end)]) overlap")
        }
        return (8 + headerLength, entries, metadata)
    }

    /// Validates one tensor entry: dtype, shape, data_offsets and their consistency with the buffer size.
    private static func parseEntry(
        name: String, value: JSONValue, bufferSize: Int, problem: (String) -> LineaError
    ) throws -> Entry {
        let name = printable(name)  // only used in messages
        guard case let .object(fields) = value else {
            throw problem("entry '\(name)' must be an object with dtype, shape and data_offsets, found \(value.kindDescription)")
        }
        func field(_ key: String) throws -> JSONValue {
            guard let found = fields.first(where: { $0.key == key }) else {
                throw problem("entry '\(name)' has no \(key)")
            }
            return found.value
        }
        func integers(_ key: String, _ value: JSONValue) throws -> [Int] {
            guard case let .array(items) = value else {
                throw problem("entry '\(name)': \(key) must be an array of integers, found \(value.kindDescription)")
            }
            return try items.map { item in
                switch item {
                case let .integer(n):
                    guard n >= 0 else { throw problem("entry '\(name)': \(key) has a negative value \(n)") }
                    return n
                case let .bigInteger(text):
                    let sign = text.hasPrefix("-") ? "negative" : "too large"
                    throw problem("entry '\(name)': \(key) value \(text) is \(sign) (expected an integer in 0..<2^63)")
                default:
                    throw problem("entry '\(name)': \(key) must contain integers, found \(item.kindDescription)")
                }
            }
        }

        let dtypeValue = try field("dtype")
        guard case let .string(dtypeName) = dtypeValue else {
            throw problem("entry '\(name)': dtype must be a string, found \(dtypeValue.kindDescription)")
        }
        guard let elementSize = specElementSizes[dtypeName] else {
            throw problem("entry '\(name)': unknown dtype '\(printable(dtypeName))'")
        }
        let shape = try integers("shape", try field("shape"))
        let offsets = try integers("data_offsets", try field("data_offsets"))
        guard offsets.count == 2 else {
            throw problem("entry '\(name)': data_offsets must have 2 elements [begin, end], found \(offsets.count)")
        }
        let (begin, end) = (offsets[0], offsets[1])
        guard begin <= end else {
            throw problem("entry '\(name)': data_offsets begin \(begin) is after end \(end)")
        }
        // The non-zero extents must multiply without overflow too: a zero-size tensor [0, 2^40, 2^40] would
        // otherwise trap later in every stride or size computed over its other axes.
        var extent = elementSize
        for n in shape where n > 0 {
            let (product, overflow) = extent.multipliedReportingOverflow(by: n)
            guard !overflow else {
                throw problem("entry '\(name)': shape \(shape) has too many elements (expected the product of its "
                    + "extents times \(elementSize) bytes to fit in 2^63)")
            }
            extent = product
        }
        let byteCount = shape.contains(0) ? 0 : extent
        guard byteCount == end - begin else {
            throw problem("entry '\(name)': shape \(shape) of \(dtypeName) (\(elementSize) bytes each) needs "
                + "\(byteCount) bytes but data_offsets [\(begin), \(end)] give a size of \(end - begin)")
        }
        guard end <= bufferSize else {
            throw problem("entry '\(name)': data_offsets end \(end) is beyond the \(bufferSize)-byte data buffer: "
                + "file truncated or header corrupt")
        }
        return Entry(dtypeName: dtypeName, shape: shape, begin: begin, end: end)
    }

    private func entry(_ name: String) throws -> Entry {
        if let found = entries[name] { return found }
        let shown = names.prefix(20).map(printable).joined(separator: ", ")
        let more = names.count > 20 ? ", ... (\(names.count - 20) more)" : ""
        throw LineaError.file(path: path, problem: "no tensor named '\(printable(name))'; the file has: \(shown)\(more)")
    }

    /// The stored element type of `name`; throws for a missing name or a dtype Linea cannot convert. O(1).
    public func dtype(of name: String) throws -> DType {
        let found = try entry(name)
        guard let dtype = DType(rawValue: found.dtypeName) else {
            throw LineaError.file(path: path, problem: "tensor '\(name)' has dtype \(found.dtypeName), which is not supported "
                + "(supported: \(DType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return dtype
    }

    /// The shape of `name` as stored (empty for a scalar); throws for a missing name. O(1).
    public func shape(of name: String) throws -> [Int] {
        try entry(name).shape
    }

    /// Reads `name` and converts it to a Float32 tensor (F32, F16, BF16 exact; F64 rounded to nearest); throws
    /// `LineaError.overMemoryLimit` when the copy exceeds `MemoryBudget.limit`. O(elements), parallel over chunks.
    public func tensor(_ name: String) throws -> Tensor {
        let found = try entry(name)
        let dtype = try dtype(of: name)
        guard dtype.isFloatingPoint else {
            throw LineaError.file(path: path, problem: "tensor '\(printable(name))' holds \(dtype.rawValue) integers, not floats: "
                + "read it with deviceTensor(_:) (as stored) instead of as Float32")
        }
        // A sparse file declares terabytes in a few disk blocks: check the Float32 copy before allocating it.
        try MemoryBudget.check([.init("\(path): tensor '\(printable(name))'", found.shape)])
        let count = (found.end - found.begin) / dtype.byteCount
        let scalars = SafeTensorsFile.floats(dtype, from: base.advanced(by: dataStart + found.begin), count: count)
        return Tensor(uncheckedShape: found.shape, scalars: scalars)
    }

    /// `name` as stored (any supported dtype: bf16 stays bf16, I64 token ids, U8 masks), viewing the read-only file
    /// mapping without a copy; the file stays mapped while the tensor lives. Move it with `to(_:)`. O(1).
    public func deviceTensor(_ name: String) throws -> DeviceTensor {
        let found = try entry(name)
        let dtype = try dtype(of: name)
        let storage = TensorStorage(device: .cpu, address: UInt(bitPattern: base.advanced(by: dataStart + found.begin)),
                                    byteCount: found.end - found.begin, isWritable: false, owner: self)
        guard UInt(bitPattern: base.advanced(by: dataStart + found.begin)) % UInt(dtype.byteCount) == 0 else {
            // Kernels load whole elements: an odd offset (allowed by the format) gets an aligned copy.
            let copy = try DeviceTensor.zeros(found.shape, dtype: dtype)
            copy.storage.hostPointer!.copyMemory(from: UnsafeRawPointer(bitPattern: storage.address)!, byteCount: storage.byteCount)
            return copy
        }
        return try DeviceTensor(storage: storage, dtype: dtype, shape: found.shape)
    }

    /// The 2-D tensors `names` (one dtype, equal columns) as one `[sum of rows, columns]` view when the file stores
    /// them back to back in that order (a sorted writer puts `gate_proj` just before `up_proj`), else nil: one matmul
    /// can then read several projections of the same input. O(names).
    public func adjacentRows(_ names: [String]) throws -> DeviceTensor? {
        guard let first = names.first else { return nil }
        let found = try names.map(entry)
        let dtype = try self.dtype(of: first)
        for (i, e) in found.enumerated() {
            guard e.shape.count == 2, e.shape[1] == found[0].shape[1], try self.dtype(of: names[i]) == dtype,
                  i == 0 || found[i - 1].end == e.begin else { return nil }
        }
        let address = UInt(bitPattern: base.advanced(by: dataStart + found[0].begin))
        guard address % UInt(dtype.byteCount) == 0 else { return nil }
        let storage = TensorStorage(device: .cpu, address: address, byteCount: found.last!.end - found[0].begin, isWritable: false, owner: self)
        return try DeviceTensor(storage: storage, dtype: dtype, shape: [found.reduce(0) { $0 + $1.shape[0] }, found[0].shape[1]])
    }

    /// `count` little-endian float elements of `dtype` at `source` (any alignment) as Float32 (F32, F16, BF16 exact; F64
    /// rounded to nearest), converted in parallel chunks of 1M elements. O(count).
    static func floats(_ dtype: DType, from source: UnsafeRawPointer, count: Int) -> [Float] {
        let source = SendableConstPointer(source.assumingMemoryBound(to: UInt8.self))
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            let target = SendablePointer(buffer.baseAddress ?? UnsafeMutablePointer<Float>(bitPattern: 16)!)
            let chunk = 1 << 20
            let chunks = (count + chunk - 1) / chunk
            let body: @Sendable (Int) -> Void = { c in
                let lo = c * chunk, hi = min(count, lo + chunk)
                SafeTensorsFile.convert(dtype, from: UnsafeRawPointer(source.base), to: target.base, range: lo..<hi)
            }
            if chunks <= 1 {
                if count > 0 { body(0) }
            } else {
                Parallel.forEach(chunks, body)
            }
            initialized = count
        }
    }

    /// Converts elements `range` of little-endian `dtype` data at `source` (any alignment) into `target`.
    /// Eight elements per step (F16C `vcvtph2ps` / shifts / `vcvtpd2ps` under the haswell target), scalar tail.
    private static func convert(_ dtype: DType, from source: UnsafeRawPointer, to target: UnsafeMutablePointer<Float>,
                                range: Range<Int>) {
        let out = UnsafeMutableRawPointer(target)
        var i = range.lowerBound
        switch dtype {
        case .float32:
            memcpy(target + i, source + i * 4, range.count * 4)
        case .float16:
            while i + 8 <= range.upperBound {
                let bits = source.loadUnaligned(fromByteOffset: 2 * i, as: SIMD8<UInt16>.self)
                let halves = unsafeBitCast(bits, to: SIMD8<Float16>.self)
                out.storeBytes(of: SIMD8<Float>(halves), toByteOffset: 4 * i, as: SIMD8<Float>.self)
                i += 8
            }
            for j in i..<range.upperBound {
                target[j] = Float(Float16(bitPattern: source.loadUnaligned(fromByteOffset: 2 * j, as: UInt16.self)))
            }
        case .bfloat16:
            while i + 8 <= range.upperBound {
                let bits = SIMD8<UInt32>(truncatingIfNeeded: source.loadUnaligned(fromByteOffset: 2 * i, as: SIMD8<UInt16>.self))
                out.storeBytes(of: bits &<< 16, toByteOffset: 4 * i, as: SIMD8<UInt32>.self)
                i += 8
            }
            for j in i..<range.upperBound {
                target[j] = Float(bitPattern: UInt32(source.loadUnaligned(fromByteOffset: 2 * j, as: UInt16.self)) << 16)
            }
        case .float64:
            while i + 8 <= range.upperBound {
                let doubles = source.loadUnaligned(fromByteOffset: 8 * i, as: SIMD8<Double>.self)
                out.storeBytes(of: SIMD8<Float>(doubles), toByteOffset: 4 * i, as: SIMD8<Float>.self)
                i += 8
            }
            for j in i..<range.upperBound {
                target[j] = Float(source.loadUnaligned(fromByteOffset: 8 * j, as: Double.self))
            }
        case .int32, .int64, .uint8, .bool:
            preconditionFailure("tensor(_:) refuses integer dtypes before converting")
        }
    }
}

/// Whole-file safetensors reading and writing (Float32 tensors).
public enum SafeTensors {
    /// Reads every tensor of the file at `path`, converted to Float32; throws `LineaError.file` on any problem.
    /// O(file size).
    public static func read(path: String) throws -> [String: Tensor] {
        let file = try SafeTensorsFile(path: path)
        var result: [String: Tensor] = [:]
        for name in file.names { result[name] = try file.tensor(name) }
        return result
    }

    /// Writes `tensors` as F32 to `path` with optional string `metadata` (see `write(_:to:metadata:)` on device
    /// tensors). O(total bytes).
    public static func write(_ tensors: [String: Tensor], to path: String, metadata: [String: String] = [:]) throws {
        var entries: [Entry] = []
        for name in tensors.keys.sorted() {
            let t = tensors[name]!
            guard t.shape.allSatisfy({ $0 >= 0 }), t.scalars.count == t.shape.reduce(1, *) else {
                throw LineaError.file(path: path, problem: "tensor '\(name)' has \(t.scalars.count) scalars for shape \(t.shape)")
            }
            entries.append(Entry(name: name, dtype: .float32, shape: t.shape, byteCount: 4 * t.scalars.count) { body in
                try t.withUnsafeBufferPointer { try body(UnsafeRawBufferPointer($0)) }
            })
        }
        try write(entries, to: path, metadata: metadata)
    }

    /// Writes `tensors` in their own dtypes (brought to the host) to `path` with optional string `metadata`.
    /// O(total bytes).
    public static func write(_ tensors: [String: DeviceTensor], to path: String, metadata: [String: String] = [:]) throws {
        let entries = try tensors.keys.sorted().map { name in
            let t = try tensors[name]!.to(.cpu).contiguous()
            return Entry(name: name, dtype: t.dtype, shape: t.shape, byteCount: t.byteCount) { body in
                try body(UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: t.address), count: t.byteCount))
            }
        }
        try write(entries, to: path, metadata: metadata)
    }

    /// One tensor to write: its header fields and a way to reach its bytes.
    private struct Entry {
        let name: String, dtype: DType, shape: [Int], byteCount: Int
        let bytes: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void
    }

    /// Writes `entries` (sorted by name) to `path`: keys sorted, header space-padded to a multiple of 8 bytes, tensors
    /// packed back to back. Writes a temporary file in the same directory and renames it over `path`, so an existing
    /// file is replaced whole or not at all. O(total bytes).
    private static func write(_ entries: [Entry], to path: String, metadata: [String: String]) throws {
        func problem(_ text: String) -> LineaError { .file(path: path, problem: text) }
        var parts: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { "\(JSONWriter.quoted($0)):\(JSONWriter.quoted(metadata[$0]!))" }
            parts.append("\"__metadata__\":{" + pairs.joined(separator: ",") + "}")
        }
        var offset = 0
        for e in entries {
            guard e.name != "__metadata__" else { throw problem("a tensor may not be named '__metadata__'") }
            let shape = e.shape.map(String.init).joined(separator: ",")
            parts.append("\(JSONWriter.quoted(e.name)):{\"dtype\":\"\(e.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + e.byteCount)]}")
            offset += e.byteCount
        }
        var headerBytes = Array(("{" + parts.joined(separator: ",") + "}").utf8)
        headerBytes += [UInt8](repeating: 0x20, count: (8 - headerBytes.count % 8) % 8)
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { headerBytes.insert(contentsOf: $0, at: 0) }

        try requireRegularOutput(path)
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        let temp = directory + "/." + url.lastPathComponent + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw problem("cannot create temporary file in \(directory): \(String(cString: strerror(errno)))")
        }
        var closed = false
        do {
            try writeAll(fd, headerBytes, problem: problem)
            for e in entries where e.byteCount > 0 {
                try e.bytes { try writeAll(fd, $0, problem: problem) }
            }
            guard fsync(fd) == 0 else { throw problem("fsync failed: \(String(cString: strerror(errno)))") }
            closed = true
            guard close(fd) == 0 else { throw problem("close failed: \(String(cString: strerror(errno)))") }
            guard rename(temp, path) == 0 else { throw problem("cannot rename the temporary file onto it: \(String(cString: strerror(errno)))") }
        } catch {
            if !closed { close(fd) }
            unlink(temp)
            throw error
        }
    }

    /// Writes all of `bytes` to `fd`, retrying short writes and EINTR.
    private static func writeAll(_ fd: Int32, _ bytes: some ContiguousBytes, problem: (String) -> LineaError) throws {
        try bytes.withUnsafeBytes { buffer in
            var done = 0
            while done < buffer.count {
                let n = posixWrite(fd, buffer.baseAddress! + done, min(buffer.count - done, 1 << 30))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw problem("write failed: \(String(cString: strerror(errno)))")
                }
                done += n
            }
        }
    }
}
