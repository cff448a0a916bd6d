#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Linea
import Testing

/// How a bounded `linea` run ended.
struct BoundedRun {
    var status: Int32
    /// Killed by a signal (`status` is the signal number).
    var signaled: Bool
    /// Still running at the deadline, then killed.
    var timedOut: Bool
    var stderr: String
}

/// Runs the `linea` built next to the test runner with `arguments`; kills it (SIGKILL) after `timeout` seconds.
/// Output goes to files, so a chatty run cannot block on a full pipe.
func runLineaBounded(_ arguments: [String], timeout: Double, in dir: URL) throws -> BoundedRun {
    // Same search as LineaCLITests.runLinea: the runner is <build>/LineaPackageTests.xctest, `linea` sits in <build>.
    var binary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    while !FileManager.default.isExecutableFile(atPath: binary.appendingPathComponent("linea").path), binary.path != "/" {
        binary = binary.deletingLastPathComponent()
    }
    binary.appendPathComponent("linea")
    let outPath = dir.appendingPathComponent("stdout").path, errPath = dir.appendingPathComponent("stderr").path
    FileManager.default.createFile(atPath: outPath, contents: nil)
    FileManager.default.createFile(atPath: errPath, contents: nil)
    let process = Process()
    process.executableURL = binary
    process.arguments = arguments
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = FileHandle(forWritingAtPath: outPath)
    process.standardError = FileHandle(forWritingAtPath: errPath)
    let done = DispatchSemaphore(value: 0)
    process.terminationHandler = { _ in done.signal() }
    try process.run()
    var timedOut = false
    if done.wait(timeout: .now() + timeout) == .timedOut {
        timedOut = true
        kill(process.processIdentifier, SIGKILL)
        done.wait()
    }
    let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "<stderr not UTF-8>"
    return BoundedRun(status: process.terminationStatus, signaled: process.terminationReason == .uncaughtSignal,
                      timedOut: timedOut, stderr: stderr)
}

@Suite struct CLIFuzzTests {
    /// Seconds one `linea` run may take before it counts as hung (the sizes below finish in well under a second;
    /// `verify`, which checks a whole grid, in about 10).
    static let runTimeout = 60.0

    /// `linea op/verify/bench/list` with mutated input files, odd paths and random option values: every run exits
    /// with 0, 1 or 2 (never a signal), within the timeout, and says something on stderr when it fails.
    @Test func lineaExitsCleanlyOnMutatedFilesAndOptions() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("linea-fuzz-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let fifo = dir.appendingPathComponent("fifo").path
        // q, k, v of 32 GiB each in a sparse file of a few disk blocks: must be refused under --max-memory 1G.
        let sparse = dir.appendingPathComponent("sparse.safetensors").path
        let gib32 = 1 << 35, header = [UInt8](#"{"k":{"dtype":"F32","shape":[1,1048576,64,128],"data_offsets":[34359738368,68719476736]},"#
            .utf8) + [UInt8](#""q":{"dtype":"F32","shape":[1,1048576,64,128],"data_offsets":[0,34359738368]},"#.utf8)
            + [UInt8](#""v":{"dtype":"F32","shape":[1,1048576,64,128],"data_offsets":[68719476736,103079215104]}}"#.utf8)
        try Data(withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header).write(to: URL(fileURLWithPath: sparse))
        #expect(truncate(sparse, off_t(8 + header.count + 3 * gib32)) == 0)
        let input = dir.appendingPathComponent("in.safetensors").path
        let output = dir.appendingPathComponent("out.safetensors").path
        var exits: [String: Int] = [:]
        try Fuzz.run("lineaExitsCleanlyOnMutatedFilesAndOptions", slot: 2) { rng, fuzzCase in
            // A fresh FIFO each case: `bench --json fifo` renames a regular file over it (issue 15 report).
            var info = stat()
            if stat(fifo, &info) != 0 || info.st_mode & S_IFMT != S_IFIFO {
                unlink(fifo)
                #expect(mkfifo(fifo, 0o600) == 0)
            }
            let (arguments, bytes) = try makeCase(&rng, input: input, output: output, fifo: fifo, sparse: sparse, dir: dir)
            if let bytes { try Data(bytes).write(to: URL(fileURLWithPath: input)) }
            let shown = arguments.map { $0.isEmpty || $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " ")
            let file = bytes.map { " with \(input) = base64 \(Data($0).base64EncodedString())" } ?? ""
            fuzzCase.describe("linea \(shown)\(file)")
            // `verify` checks a family's whole grid: about 10 s of one core for delta_rule, 38 s seen on a loaded
            // 2-core host, so only the run's own timeout bounds it.
            if arguments.first == "verify" { fuzzCase.slowSeconds = Self.runTimeout }
            let run = try runLineaBounded(arguments, timeout: Self.runTimeout, in: dir)
            let tail = run.stderr.suffix(600)
            if run.timedOut {
                fuzzCase.fail("linea ran longer than \(Self.runTimeout) s; killed")
            } else if run.signaled {
                fuzzCase.fail("linea died on signal \(run.status); stderr: \(tail)")
            } else if ![0, 1, 2].contains(run.status) {
                fuzzCase.fail("linea exited with \(run.status), expected 0, 1 or 2; stderr: \(tail)")
            } else if run.status != 0, run.stderr.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                fuzzCase.fail("linea exited with \(run.status) and wrote nothing to stderr")
            } else if run.stderr.contains("Fatal error") {
                fuzzCase.fail("linea printed a Swift runtime error: \(tail)")
            }
            exits["\(arguments.first ?? "") exit \(run.status)", default: 0] += 1
        }
        print("fuzz cli: \(exits.sorted { $0.key < $1.key })")
    }

    /// One argv and, when it reads `input`, that file's bytes (nil: the path is used as it is).
    private func makeCase(_ rng: inout SeededRandom, input: String, output: String, fifo: String, sparse: String, dir: URL) throws
        -> ([String], [UInt8]?) {
        let mechanisms = ["attention"] + RecurrentMechanism.allCases.map(\.rawValue)
        // The other op families: long convolutions, feature maps, block-sparse with a selector choosing its mask.
        let others = ["long_conv", "linear_attn_elu", "linear_attn_performer", "linear_attn_cosformer", "linear_attn_taylor2", "block_sparse"]
        let junk = ["", "abc", "-1", "0", "nan", "1e400", "--", "-", "9223372036854775808", "\u{7}", "é"]
        func maybe(_ p: Double, _ args: [String]) -> [String] { rng.chance(p) ? args : [] }
        // Mostly valid values, so that most runs get past option parsing; junk one time in eight.
        func value(_ valid: [String]) -> String { rng.chance(0.875) ? rng.pick(valid) : rng.pick(junk) }
        // Sizes no run can hold: they must be refused up front under --max-memory 1G, not allocated or looped over.
        let huge = ["1000000000", "4294967296", "9223372036854775807"]
        // A 1 GiB budget on every run that takes one (sometimes a malformed or tiny one).
        let memory = ["--max-memory", rng.chance(0.9) ? "1G" : rng.pick(["64M", "1k", "0", "-1G", "abc", "8E"])]
        switch rng.below(10) {
        case 0...5:
            let name = rng.chance(0.95) ? rng.pick(rng.chance(0.75) ? mechanisms : others) : rng.pick(junk)
            var bytes: [UInt8]? = try inputBytes(&rng, for: name)
            var inputPath = input
            if rng.chance(0.08) {
                inputPath = rng.pick([fifo, sparse, sparse, dir.path, "/dev/null", "/dev/zero", dir.appendingPathComponent("missing").path, ""])
                bytes = nil
            }
            let outputPath = rng.chance(0.92) ? output
                : rng.pick([fifo, dir.path, dir.appendingPathComponent("no/such/dir/o.safetensors").path, ""])
            var args = ["op", name, "--inputs", inputPath, "--output", outputPath]
            let attentionForms = ["flash", "reference", "split_kv", "split_kv:\(rng.pick(["1", "3", "0", "-2", "1000", "x"] + huge))"]
            let recurrenceForms = ["reference", "recurrent", "chunked", "chunked:\(rng.pick(["1", "5", "0", "x"] + huge))", "auto"]
            let forms = rng.chance(0.9) == (name == "attention") ? attentionForms : recurrenceForms
            args += maybe(0.4, ["--form", value(forms)])
            args += memory
            args += maybe(0.2, ["--chunk-size", value(["1", "2", "3", "16", "64", "1000"] + huge)])
            args += maybe(0.2, ["--scale", value(["1", "0.125", "0", "-1", "inf", "-inf", "1e38", "3.4e39", "1e-45"])])
            args += maybe(0.2, ["--window", value(["1", "2", "17", "1000", "2147483648"] + huge)])
            args += maybe(0.2, ["--allow-nonfinite"])
            args += maybe(0.2, [rng.pick(["--causal", "--no-causal", "--normalize", "--qk-l2-norm"])])
            args += maybe(0.05, ["--backend", value(["cpu", "cuda"])])
            args += maybe(0.05, ["--dtype", value(["f32", "bf16", "f16"])])
            args += maybe(0.1, ["--context-parallel", value(["1", "2", "3", "8", "257", "0"] + huge)])
            args += maybe(name == "block_sparse" ? 0.8 : 0.05, ["--selector", value(["xattention", "minference", "topk"])])
            args += maybe(0.1, ["--tau", value(["0.5", "0.9", "1", "0", "1.5", "nan"])])
            args += maybe(0.1, ["--top-k", value(["1", "2", "0", "-1"] + huge)])
            args += maybe(0.1, ["--block-size", value(["1", "2", "16", "64", "0"] + huge)])
            args += maybe(0.1, ["--xattn-stride", value(["1", "2", "8", "0"] + huge)])
            args += maybe(0.05, ["--pattern", value(["a-shape", "vertical-slash", "block-sparse", "search"])])
            args += maybe(0.1, ["--set", value(["features=16", "seed=3", "features=0", "block_rows=7", "features=4294967296"])])
            args += maybe(0.03, [rng.pick(junk + ["--frobnicate", "--inputs"])])
            return (args, bytes)
        case 9 where rng.chance(0.5):
            let grids = ["16,16", "3,5,7", "1,1", "1,4096", "0,4", "4", "2,2,2,2", "100000,100000", "9223372036854775807,2", "16,x"]
            let orders = ["raster", "bidirectional", "cross", "hilbert", "zigzag", "rotary-major"]
            return (["op", "scan_order", "--order", value(orders), "--grid", value(grids), "--output", output] + memory, nil)
        case 6:
            var args = ["verify", "--mechanism", rng.chance(0.95) ? rng.pick(mechanisms) : rng.pick(junk)] + memory
            args += maybe(0.3, ["--tolerance", value(["0", "1e-5", "1", "-1", "inf"])])
            args += maybe(0.3, ["--seed", value(["0", "1", "18446744073709551615", "18446744073709551616"])])
            args += maybe(0.1, ["--dtype", value(["f32", "bf16", "f16"])])
            args += maybe(0.05, ["--backend", value(["cpu", "cuda"])])
            return (args, nil)
        case 7, 8:
            // Small sizes or impossible ones: a legitimate large bench would run for minutes.
            func small() -> String {
                rng.chance(0.9) ? String(1 + rng.below(rng.pick([2, 4, 8]))) : rng.pick(rng.chance(0.5) ? huge : junk)
            }
            var args = ["bench", "--mechanism", rng.chance(0.95) ? rng.pick(mechanisms) : rng.pick(junk),
                        "--lengths", rng.chance(0.85) ? (0..<(1 + rng.below(3))).map { _ in String(1 + rng.below(96)) }.joined(separator: ",")
                            : rng.pick(junk + huge + ["1,,2", ",", "16, 32", "0,16", "16,1000000000"]),
                        "--heads", small(), "--dim", rng.chance(0.9) ? String(rng.pick([1, 2, 3, 8, 16, 32])) : rng.pick(huge),
                        "--batch", small()] + memory
            args += maybe(0.3, ["--form", value(["flash", "reference", "split_kv", "recurrent", "chunked"])])
            args += maybe(0.2, ["--chunk-size", value(["1", "3", "16", "64"] + huge)])
            args += maybe(0.05, ["--tokens", value(["1", "64"] + huge)])
            args += maybe(0.1, ["--json", rng.pick([dir.appendingPathComponent("b.json").path, fifo, dir.path, ""])])
            args += maybe(0.1, ["--svg", rng.pick([dir.appendingPathComponent("b.svg").path, fifo, dir.path, ""])])
            args += maybe(0.05, ["--backend", value(["cpu", "cuda"])])
            return (args, nil)
        default:
            return (rng.pick([["list"], ["list", rng.pick(junk)], [rng.pick(junk)], ["--help"], ["op", "--help"], []]), nil)
        }
    }

    /// Input bytes for `linea op name`: valid tensors for it, the same with one tensor dropped, reshaped or
    /// filled with NaN/Inf/1e19, a mutated byte image, or a random structure-mutated file.
    private func inputBytes(_ rng: inout SeededRandom, for name: String) throws -> [UInt8] {
        let (B, T, H, K, V) = (1 + rng.below(2), rng.below(20), 1 + rng.below(3), 1 + rng.below(8), 1 + rng.below(8))
        var tensors: [String: Tensor]
        if name == "long_conv" {
            let L = rng.below(40), Lk = rng.chance(0.7) ? L : rng.below(60)
            tensors = ["u": try .randomNormal([B, H, L], seed: 1), "k": try .randomNormal([H, Lk], seed: 2)]
            if rng.chance(0.5) { tensors["D"] = try .randomNormal([H], seed: 3) }
        } else if let mechanism = RecurrentMechanism(rawValue: name) {
            let x = try RecurrenceInputs.random(mechanism, B: B, T: T, H: H, K: K, V: V, seed: rng.next() >> 1,
                                                initialState: rng.chance(0.3))
            tensors = ["q": x.q, "k": x.k, "v": x.v]
            tensors["g"] = x.g
            tensors["beta"] = x.beta
            tensors["initial_state"] = x.initialState
        } else {
            let S = rng.chance(0.7) ? T : rng.below(20)
            let queryHeads = name.hasPrefix("linear_attn_") ? H : H * 2  // feature maps: as many q heads as k heads
            tensors = ["q": try .randomNormal([B, T, queryHeads, K], seed: 1), "k": try .randomNormal([B, S, H, K], seed: 2),
                       "v": try .randomNormal([B, S, H, V], seed: 3)]
        }
        switch rng.below(8) {
        case 0: tensors.removeValue(forKey: rng.pick(tensors.keys.sorted()))
        case 1:
            let key = rng.pick(tensors.keys.sorted())
            let shape = (0..<rng.below(5)).map { _ in rng.below(5) }
            tensors[key] = try Tensor(zeros: shape, value: 1)
        case 2:
            let key = rng.pick(tensors.keys.sorted())
            let special = rng.pick([Float.nan, .infinity, -.infinity, 1e19, -1e19, 2, -2])
            for i in tensors[key]!.scalars.indices where rng.chance(0.3) { tensors[key]!.scalars[i] = special }
        case 3:
            var model = FileModel.random(&rng)
            for _ in 0..<(1 + rng.below(3)) { Mutator.mutateStructure(&model, &rng) }
            return model.bytes(padding: rng.below(8))
        default: break
        }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("linea-fuzz-\(getpid())-\(UUID().uuidString)").path
        defer { unlink(path) }
        try SafeTensors.write(tensors, to: path)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        if rng.chance(0.3) { for _ in 0..<(1 + rng.below(3)) { Mutator.mutateBytes(&bytes, &rng) } }
        return bytes
    }
}
