import Foundation
import Testing
import Linea

/// A fresh empty directory under the system temp directory, removed by `cleanup`.
private func makeTempDir() throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("linea-st-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// A safetensors file image: u64 LE length of `header`, the header bytes, then `data`.
private func fileBytes(_ header: String, _ data: [UInt8] = []) -> [UInt8] {
    let h = Array(header.utf8)
    let out = withUnsafeBytes(of: UInt64(h.count).littleEndian) { Array($0) }
    return out + h + data
}

/// Little-endian bytes of fixed-width values.
private func leBytes<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
    values.flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } }
}

private func writeFile(_ bytes: [UInt8], _ url: URL) throws {
    try Data(bytes).write(to: url)
}

/// The `problem` text of a thrown `LineaError.file`, or a description of what happened instead.
private func problemText(_ body: () throws -> Void) -> String {
    do {
        try body()
        return "<no error thrown>"
    } catch let LineaError.file(_, problem) {
        return problem
    } catch {
        return "<unexpected error \(error)>"
    }
}

/// A string shared between a test and a helper thread.
private final class LockedText: @unchecked Sendable {
    private let lock = NSLock()
    private var text = ""
    func set(_ value: String) { lock.withLock { text = value } }
    func get() -> String { lock.withLock { text } }
}

/// One malformed file image and the word its error must contain (described by the word, not the bytes).
struct MalformedCase: Sendable, CustomTestStringConvertible {
    let bytes: [UInt8]
    let word: String
    init(_ bytes: [UInt8], _ word: String) { self.bytes = bytes; self.word = word }
    var testDescription: String { "'\(word)' (\(bytes.count) bytes)" }
}

@Suite struct SafeTensorsTests {
    @Test func roundTripFloat32WithMetadata() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("model.safetensors").path
        var special = try Tensor(shape: [5], scalars: [.nan, .infinity, -.infinity, -0.0, .leastNonzeroMagnitude])
        special.scalars[0] = Float(bitPattern: 0x7FC1_2345)  // a NaN payload must survive
        let tensors: [String: Tensor] = [
            "b.weight": try Tensor.randomNormal([3, 7, 2], seed: 1),
            "a.bias": try Tensor.randomNormal([7], seed: 2),
            "scalar": try Tensor(shape: [], scalars: [42.5]),
            "empty": try Tensor(zeros: [0, 3]),
            "special": special,
            "naïve \"quoted\"\n": try Tensor(shape: [1], scalars: [1]),
        ]
        let metadata = ["format": "pt", "note": "tab\there, quote \" and ünïcode", "empty": ""]
        try SafeTensors.write(tensors, to: path, metadata: metadata)

        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let headerLength = bytes[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect(headerLength % 8 == 0, "header length \(headerLength) must be a multiple of 8")
        let dataBytes = tensors.values.reduce(0) { $0 + 4 * $1.count }
        #expect(bytes.count == 8 + headerLength + dataBytes, "no gaps, no trailing bytes")

        let file = try SafeTensorsFile(path: path)
        #expect(file.names == tensors.keys.sorted())
        #expect(file.metadata == metadata)
        for (name, expected) in tensors {
            #expect(try file.dtype(of: name) == .float32)
            #expect(try file.shape(of: name) == expected.shape)
            let actual = try file.tensor(name)
            #expect(actual.shape == expected.shape)
            #expect(actual.scalars.map(\.bitPattern) == expected.scalars.map(\.bitPattern), "tensor \(name) differs bitwise")
        }
        let all = try SafeTensors.read(path: path)
        #expect(Set(all.keys) == Set(tensors.keys))
        let stats = ErrorStats(all["b.weight"]!, tensors["b.weight"]!)
        #expect(stats.relativeRMS == 0 && stats.maxAbs == 0, "\(stats)")

        // Writing twice gives identical bytes (sorted keys, no randomness in the layout).
        let path2 = dir.appendingPathComponent("again.safetensors").path
        try SafeTensors.write(tensors, to: path2, metadata: metadata)
        #expect(try Data(contentsOf: URL(fileURLWithPath: path2)) == Data(bytes))
        // No metadata and no tensors is still a valid file: "{}" padded with 6 spaces.
        try SafeTensors.write([String: Tensor](), to: path2)
        #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: path2))) == [8, 0, 0, 0, 0, 0, 0, 0] + Array("{}      ".utf8))
        let emptyFile = try SafeTensorsFile(path: path2)
        #expect(emptyFile.names.isEmpty && emptyFile.metadata.isEmpty)
        // Headers of every length are space-padded to a multiple of 8 and the data follows directly.
        for nameLength in 1...8 {
            let one = [String(repeating: "x", count: nameLength): try Tensor(shape: [1], scalars: [2.5])]
            try SafeTensors.write(one, to: path2)
            let image = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path2)))
            let n = image[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
            let json = String(decoding: image[8..<(8 + n)], as: UTF8.self)
            #expect(n % 8 == 0 && image.count == 8 + n + 4, "header length \(n), file \(image.count) bytes")
            #expect(json.trimmingCharacters(in: .whitespaces).hasSuffix("}") && !json.contains("\n"), "header: \(json)")
            #expect(try SafeTensors.read(path: path2) == one)
        }
        // The temporary files are gone.
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix(".") }
        #expect(leftovers.isEmpty, "temporary files left: \(leftovers)")
    }

    @Test func readsHandBuiltHalfBFloatAndDoubleFiles() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        // F16: 1, -2, 65504 (max), 2^-24 (smallest subnormal), +inf, 0x3555 = 1365/4096.
        let f16Bits: [UInt16] = [0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00, 0x3555]
        let f16Expected: [Float] = [1, -2, 65504, 0x1p-24, .infinity, 1365.0 / 4096.0]
        // BF16: 1, -5, 3.140625 (0x4049), smallest subnormal 2^-133, -inf, 0.
        let bf16Bits: [UInt16] = [0x3F80, 0xC0A0, 0x4049, 0x0001, 0xFF80, 0x0000]
        let bf16Expected: [Float] = [1, -5, 3.140625, 0x1p-133, -.infinity, 0]
        // F64: exactly representable values, one rounded (0.1), one overflowing to inf.
        let f64Values: [Double] = [1.5, -0.25, 0x1p-20, 1e300, 0.1, 123456.0]
        let f64Expected: [Float] = [1.5, -0.25, 0x1p-20, .infinity, Float(0.1), 123456]
        // Layout: f16 [0,12), bf16 [12,24), a 2-byte gap, then f64 [26,74): unaligned for 8-byte loads.
        var data = leBytes(f16Bits) + leBytes(bf16Bits) + [0xAA, 0xBB]  // 2-byte gap: F64 starts at 26
        data += leBytes(f64Values.map(\.bitPattern))
        let header = #"  {"h": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 12]},"#
            + #" "__metadata__": {"k": "v\u00e9\n"}, "d":{"shape":[3,2],"dtype":"F64","data_offsets":[26,74]},"#
            + #""b": {"dtype": "BF16", "shape": [6], "data_offsets": [12, 24], "extra": [1, {"x": null}]}}   "#
        let url = dir.appendingPathComponent("mixed.safetensors")
        try writeFile(fileBytes(header, data), url)

        let file = try SafeTensorsFile(path: url.path)
        #expect(file.names == ["b", "d", "h"])
        #expect(file.metadata == ["k": "vé\n"])
        #expect(try file.dtype(of: "h") == .float16)
        #expect(try file.dtype(of: "b") == .bfloat16)
        #expect(try file.dtype(of: "d") == .float64)
        #expect(try file.shape(of: "d") == [3, 2])
        let h = try file.tensor("h"), b = try file.tensor("b"), d = try file.tensor("d")
        #expect(h.shape == [2, 3] && h.scalars == f16Expected, "F16 got \(h.scalars)")
        #expect(b.shape == [6] && b.scalars == bf16Expected, "BF16 got \(b.scalars)")
        #expect(d.shape == [3, 2] && d.scalars == f64Expected, "F64 got \(d.scalars)")
        #expect(try SafeTensors.read(path: url.path)["d"] == d)
    }

    @Test func vectorAndTailPathsAtUnalignedOffsets() throws {
        // 37 elements per dtype (4 vectors of 8 + a tail of 5) at odd byte offsets; random bit patterns cover
        // normals, subnormals, infinities and NaNs. Expected values come from scalar conversions.
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        var rng = SeededRandom(seed: 11)
        let n = 37
        var halfBits = (0..<n).map { _ in UInt16(truncatingIfNeeded: rng.next()) }
        halfBits[0...5] = [0x0001, 0x83FF, 0x7C00, 0xFC00, 0x7E01, 0x3C00]
        var brainBits = (0..<n).map { _ in UInt16(truncatingIfNeeded: rng.next()) }
        brainBits[30...36] = [0x0001, 0x807F, 0x7F80, 0xFF80, 0x7FC1, 0x3F80, 0x0000]
        let doubles = (0..<n).map { i in Double(bitPattern: rng.next()) * (i % 2 == 0 ? 1 : 1e-300) }
        let data = [0x55] + leBytes(halfBits) + [0x55, 0x55, 0x55] + leBytes(brainBits) + [0x55] + leBytes(doubles.map(\.bitPattern))
        let (h0, b0) = (1, 1 + 2 * n + 3)
        let d0 = b0 + 2 * n + 1
        let header = #"{"h":{"dtype":"F16","shape":[\#(n)],"data_offsets":[\#(h0),\#(h0 + 2 * n)]},"#
            + #""b":{"dtype":"BF16","shape":[\#(n)],"data_offsets":[\#(b0),\#(b0 + 2 * n)]},"#
            + #""d":{"dtype":"F64","shape":[1,\#(n)],"data_offsets":[\#(d0),\#(d0 + 8 * n)]}}"#
        let url = dir.appendingPathComponent("odd.safetensors")
        try writeFile(fileBytes(header, data), url)
        let file = try SafeTensorsFile(path: url.path)
        func same(_ a: [Float], _ b: [Float]) -> Bool {
            a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern || ($0.isNaN && $1.isNaN) }
        }
        let h = try file.tensor("h").scalars, b = try file.tensor("b").scalars, d = try file.tensor("d").scalars
        let hExpected = halfBits.map { HalfPrecision.float(float16Bits: $0) }
        let bExpected = brainBits.map { HalfPrecision.float(bfloat16Bits: $0) }
        let dExpected = doubles.map { Float($0) }
        #expect(same(h, hExpected), "F16: \(ErrorStats(h, hExpected))\n\(h)\n\(hExpected)")
        #expect(same(b, bExpected), "BF16: \(ErrorStats(b, bExpected))\n\(b)\n\(bExpected)")
        #expect(same(d, dExpected), "F64: \(ErrorStats(d, dExpected))\n\(d)\n\(dExpected)")
        #expect(h.contains { $0.isNaN } && b.contains { $0.isNaN } && d.contains { $0 != 0 && abs($0) < 1e-30 })
    }

    @Test func largeHalfTensorConvertsInParallelChunks() throws {
        // 3 M + 5 elements: several 1 M-element chunks and a ragged tail, all checked exactly.
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let count = 3 << 20 + 5
        let bits = (0..<count).map { UInt16(truncatingIfNeeded: $0 &* 40503) & 0x7BFF }  // finite halves
        let header = #"{"x":{"dtype":"F16","shape":[\#(count)],"data_offsets":[0,\#(2 * count)]}}"#
        let url = dir.appendingPathComponent("big.safetensors")
        try writeFile(fileBytes(header, leBytes(bits)), url)
        let x = try SafeTensorsFile(path: url.path).tensor("x")
        let expected = bits.map { Float(Float16(bitPattern: $0)) }
        let stats = ErrorStats(x.scalars, expected)
        let same = x.scalars == expected
        #expect(same, "F16 conversion differs: \(stats)")
    }

    @Test func missingNameAndUnsupportedDtype() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("ints.safetensors")
        let header = #"{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},"q8":{"dtype":"I8","shape":[2],"data_offsets":[20,22]},"w":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}}"#
        let ids = leBytes([Int64(151_643), Int64(-2)])
        try writeFile(fileBytes(header, ids + [UInt8](repeating: 0, count: 6)), url)
        let file = try SafeTensorsFile(path: url.path)  // I64 and I8 are valid spec dtypes: open succeeds
        #expect(file.names == ["ids", "q8", "w"])
        #expect(try file.shape(of: "ids") == [2])
        // Integers are read as stored, never as Float32 (a token id is not a float).
        #expect(try file.dtype(of: "ids") == .int64)
        #expect(try file.deviceTensor("ids").hostIntegers() == [151_643, -2])
        #expect(problemText { _ = try file.tensor("ids") }.contains("holds I64 integers, not floats"))
        #expect(problemText { _ = try file.dtype(of: "q8") }.contains("not supported"))
        #expect(problemText { _ = try file.tensor("nope") } == "no tensor named 'nope'; the file has: ids, q8, w")
        #expect(problemText { _ = try file.shape(of: "nope") }.contains("no tensor named"))
        #expect(try file.tensor("w").scalars == [0])
    }

    /// Every malformed file is refused at open with a `LineaError.file` whose problem names the cause.
    @Test(arguments: [
        // (file bytes, word expected in the problem)
        MalformedCase([], "shorter than"),
        MalformedCase([1, 0, 0, 0, 0], "shorter than"),
        MalformedCase(leBytes([UInt64(64)]) + Array("{}".utf8), "larger than"),
        MalformedCase(leBytes([UInt64.max]) + Array("{}".utf8), "limit"),
        MalformedCase(leBytes([UInt64(200_000_000)]) + Array("{}".utf8), "limit"),
        MalformedCase(fileBytes(#"{"a": "#), "JSON"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F32",}}"#), "JSON"),
        MalformedCase(fileBytes(#"[1, 2]"#), "object"),
        MalformedCase(fileBytes(#"{"a": 5}"#), "object"),
        MalformedCase(fileBytes(#"{}{}"#), "whitespace padding"),
        MalformedCase(fileBytes("{}\0\0"), "whitespace padding"),
        MalformedCase(fileBytes(#"{"a": {"shape": [1], "data_offsets": [0, 4]}}"#, [0, 0, 0, 0]), "no dtype"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F32", "data_offsets": [0, 4]}}"#, [0, 0, 0, 0]), "no shape"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F32", "shape": [1]}}"#, [0, 0, 0, 0]), "no data_offsets"),
        MalformedCase(fileBytes(#"{"a": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}}"#, [0, 0, 0, 0]), "dtype must be a string"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}}"#, [0, 0, 0, 0]), "shape must be an array"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}}"#, [0, 0, 0, 0]), "shape must contain integers"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, true]}}"#, [0, 0, 0, 0]), "data_offsets must contain"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}}"#, [0, 0, 0, 0]), "2 elements"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F33", "shape": [1], "data_offsets": [0, 4]}}"#, [0, 0, 0, 0]), "unknown dtype"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#, [0, 0, 0, 0]), "negative"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}"#, [0, 0, 0, 0]), "needs 8 bytes"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}}"#, [0, 0, 0, 0]), "begin 4 is after end 0"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, [0, 0, 0, 0]), "beyond"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 99999999999999999999]}}"#), "too large"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 4], "data_offsets": [0, 4]}}"#), "too many elements"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F32", "shape": [0, 4294967296, 4294967296], "data_offsets": [0, 0]}}"#), "too many elements"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [-99999999999999999999, 4]}}"#), "is negative"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#,
                   [UInt8](repeating: 0, count: 8)), "overlap"),
        MalformedCase(fileBytes(#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#,
                   [0, 0, 0, 0]), "duplicate key"),
        MalformedCase(fileBytes(#"{"__metadata__": {"k": 1}}"#), "__metadata__"),
        MalformedCase(fileBytes(#"{"__metadata__": ["k"]}"#), "__metadata__"),
        MalformedCase(fileBytes(#"{"a\u": 1}"#), "JSON"),
        MalformedCase(fileBytes("{\"\u{1}\": 1}"), "control character"),
        MalformedCase(leBytes([UInt64(1)]) + Array("{".utf8), "too small"),
        MalformedCase(fileBytes(String(repeating: "[", count: 10_000)), "nested"),
        MalformedCase(leBytes([UInt64(4)]) + [0x7B, 0x22, 0xFF, 0x22], "JSON"),
    ])
    func malformedFilesThrow(_ c: MalformedCase) throws {
        let (bytes, word) = (c.bytes, c.word)
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("bad.safetensors")
        try writeFile(bytes, url)
        let problem = problemText { _ = try SafeTensorsFile(path: url.path) }
        #expect(problem.contains(word), "expected '\(word)' in: \(problem)")
        let viaRead = problemText { _ = try SafeTensors.read(path: url.path) }
        #expect(viaRead == problem)
    }

    /// Names from a file reach the terminal through error messages: control characters are escaped, long names cut.
    @Test func namesInErrorsAreEscapedAndCut() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("names.safetensors")
        let long = String(repeating: "x", count: 5000)
        try writeFile(fileBytes(#"{"a\u001b[2J\#(long)": {"dtype": "\u001b]0;", "shape": [1], "data_offsets": [0, 4]}}"#, [0, 0, 0, 0]), url)
        let problem = problemText { _ = try SafeTensorsFile(path: url.path) }
        #expect(problem.hasPrefix("entry 'a\\u{1b}[2Jxxx") && problem.contains("(5005 characters)"), "\(problem)")
        #expect(problem.hasSuffix("unknown dtype '\\u{1b}]0;'"), "\(problem)")
        #expect(!problem.contains("\u{1b}") && problem.count < 300, "\(problem)")
    }

    /// A sparse file declaring a 1 TiB tensor opens (the header is consistent) but reading it throws instead of
    /// trapping in the allocation.
    @Test func sparseTerabyteTensorIsRefusedBeforeAllocating() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("sparse.safetensors").path
        let header = fileBytes(#"{"big":{"dtype":"F32","shape":[1024,268435456],"data_offsets":[0,1099511627776]}}"#)
        try writeFile(header, URL(fileURLWithPath: path))
        #expect(truncate(path, off_t(header.count) + (1 << 40)) == 0)
        let file = try SafeTensorsFile(path: path)
        #expect(try file.shape(of: "big") == [1024, 268_435_456])
        #expect {
            _ = try file.tensor("big")
        } throws: { error in
            guard case let LineaError.overMemoryLimit(what, _, _) = error else { return false }
            return what.contains("sparse.safetensors: tensor 'big'")
        }
    }

    @Test func missingFileAndDirectoryThrow() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = dir.appendingPathComponent("nope.safetensors").path
        #expect(problemText { _ = try SafeTensorsFile(path: missing) }.contains("No such file"))
        #expect(problemText { _ = try SafeTensorsFile(path: dir.path) }.contains("directory"))
        // Writing into a missing directory fails cleanly.
        let deep = dir.appendingPathComponent("no/such/dir/x.safetensors").path
        #expect(problemText { try SafeTensors.write([String: Tensor](), to: deep) }.contains("temporary file"))
    }

    /// A FIFO, a socket, a device or a directory is refused at once, naming what it is; a FIFO with no writer
    /// must not block open() (it did: `linea op --inputs fifo` hung).
    @Test func nonRegularInputsAreRefusedWithoutBlocking() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fifo = dir.appendingPathComponent("fifo").path
        #expect(mkfifo(fifo, 0o600) == 0)
        let done = DispatchSemaphore(value: 0)
        let result = LockedText()
        Thread.detachNewThread {
            result.set(problemText { _ = try SafeTensorsFile(path: fifo) })
            done.signal()
        }
        if done.wait(timeout: .now() + 10) == .timedOut {
            Issue.record("opening a FIFO blocked for 10 s")
            let writer = open(fifo, O_WRONLY | O_NONBLOCK)  // a writer appears: the blocked open returns
            done.wait()
            close(writer)
        }
        #expect(result.get() == "expected a regular file, got a FIFO")

        let socketPath = dir.appendingPathComponent("sock").path
        let sock = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(sock) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(socketPath.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: bytes)
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(sock, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(bound == 0)
        #expect(problemText { _ = try SafeTensorsFile(path: socketPath) } == "expected a regular file, got a socket")
        #expect(problemText { _ = try SafeTensorsFile(path: "/dev/null") } == "expected a regular file, got a character device")
        #expect(problemText { _ = try SafeTensors.read(path: dir.path) } == "expected a regular file, got a directory")
    }

    /// Writing onto a FIFO (or a device) must not replace it by a regular file: as root that could be /dev/null.
    @Test func writeRefusesNonRegularTargets() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fifo = dir.appendingPathComponent("out.fifo").path
        #expect(mkfifo(fifo, 0o600) == 0)
        let problem = problemText { try SafeTensors.write(["x": try Tensor(zeros: [2])], to: fifo) }
        #expect(problem == "expected a regular file (or no file) to write, got a FIFO")
        var info = stat()
        #expect(stat(fifo, &info) == 0 && info.st_mode & S_IFMT == S_IFIFO, "the FIFO was replaced")
    }

    @Test func failedWriteKeepsTheOldFile() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("keep.safetensors").path
        let good = ["w": try Tensor.randomNormal([4, 4], seed: 3)]
        try SafeTensors.write(good, to: path)
        let before = try Data(contentsOf: URL(fileURLWithPath: path))

        var broken = try Tensor.randomNormal([2, 2], seed: 4)
        broken.scalars.append(1)  // 5 scalars for shape [2, 2]
        #expect(problemText { try SafeTensors.write(["w": broken], to: path) }.contains("5 scalars"))
        #expect(problemText { try SafeTensors.write(["__metadata__": good["w"]!], to: path) }.contains("__metadata__"))
        // The target is a directory: the rename fails and the temporary file is removed.
        let sub = dir.appendingPathComponent("sub")
        try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: false)
        _ = FileManager.default.createFile(atPath: sub.appendingPathComponent("x").path, contents: Data([1]))
        #expect(problemText { try SafeTensors.write(good, to: sub.path) }.contains("got a directory"))

        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        #expect(names == ["keep.safetensors", "sub"], "unexpected files: \(names)")
    }

    /// Truncating a valid file anywhere always throws; flipping any byte never crashes (it throws or reads).
    @Test func truncatedAndCorruptedFilesNeverCrash() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("v.safetensors").path
        try SafeTensors.write(
            ["a": try Tensor.randomNormal([3, 2], seed: 5), "b": try Tensor.randomNormal([4], seed: 6)],
            to: path, metadata: ["k": "v"])
        let valid = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let probe = dir.appendingPathComponent("p.safetensors")

        for length in 0..<valid.count {
            try writeFile(Array(valid[0..<length]), probe)
            let problem = problemText { _ = try SafeTensors.read(path: probe.path) }
            #expect(!problem.hasPrefix("<"), "truncated at \(length): \(problem)")
        }
        var rng = SeededRandom(seed: 9)
        for position in 0..<valid.count {
            for mask: UInt8 in [0xFF, 1 << UInt8(rng.next() % 8)] {
                var bytes = valid
                bytes[position] ^= mask
                try writeFile(bytes, probe)
                do {
                    let tensors = try SafeTensors.read(path: probe.path)
                    #expect(tensors.count <= 2)
                } catch {
                    #expect(error is LineaError, "flip at \(position): \(error)")
                }
            }
        }
    }
}

@Suite struct SafeTensorsCheckpointTests {
    /// A sharded checkpoint folder: two shards and an index, each tensor read from its shard as stored.
    @Test func shardsThroughTheIndex() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let a = try Tensor.randomNormal([2, 3], seed: 1), b = try Tensor.randomNormal([4], seed: 2)
        try SafeTensors.write(["model.embed.weight": a], to: dir.appendingPathComponent("model-00001-of-00002.safetensors").path)
        try SafeTensors.write(["lm_head.weight": b, "unlisted": b], to: dir.appendingPathComponent("model-00002-of-00002.safetensors").path)
        let index = #"{"metadata": {"total_size": 40}, "weight_map": {"model.embed.weight": "model-00001-of-00002.safetensors", "lm_head.weight": "model-00002-of-00002.safetensors"}}"#
        try writeFile(Array(index.utf8), dir.appendingPathComponent("model.safetensors.index.json"))
        let checkpoint = try SafeTensorsCheckpoint(directory: dir.path)
        #expect(checkpoint.names == ["lm_head.weight", "model.embed.weight"])
        #expect(try checkpoint.deviceTensor("model.embed.weight").host() == a)
        #expect(try checkpoint.deviceTensor("lm_head.weight").host() == b)
        #expect(try checkpoint.shape(of: "model.embed.weight") == [2, 3])
        #expect(try checkpoint.dtype(of: "lm_head.weight") == .float32)
        #expect(problemText { _ = try checkpoint.deviceTensor("unlisted") }.contains("no tensor named 'unlisted'"))
        // Errors name what is wrong: a shard outside the folder, a listed tensor its shard lacks, a missing shard.
        for (map, expected) in [(#"{"x": "../model.safetensors"}"#, "expected a file name inside the folder"),
                                (#"{"nope": "model-00001-of-00002.safetensors"}"#, "no tensor named 'nope'"),
                                (#"{"x": "gone.safetensors"}"#, "cannot open"), (#"{"x": 3}"#, "expected a shard file name")] {
            try writeFile(Array(#"{"weight_map": \#(map)}"#.utf8), dir.appendingPathComponent("model.safetensors.index.json"))
            #expect(problemText { _ = try SafeTensorsCheckpoint(directory: dir.path) }.contains(expected), "\(map)")
        }
        try writeFile(Array("{".utf8), dir.appendingPathComponent("model.safetensors.index.json"))
        #expect(problemText { _ = try SafeTensorsCheckpoint(directory: dir.path) }.contains("not JSON"))
    }

    @Test func singleFileOrNothing() throws {
        let dir = try makeTempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(problemText { _ = try SafeTensorsCheckpoint(directory: dir.path) }.contains("found neither"))
        try SafeTensors.write(["w": Tensor(zeros: [3], value: 2)], to: dir.appendingPathComponent("model.safetensors").path)
        let checkpoint = try SafeTensorsCheckpoint(directory: dir.path)
        #expect(checkpoint.names == ["w"])
        #expect(try checkpoint.deviceTensor("w").host().scalars == [2, 2, 2])
    }
}
