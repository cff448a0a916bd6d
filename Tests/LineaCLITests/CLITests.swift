import Foundation
import Linea
import Testing

/// Runs the `linea` binary built next to the test runner with extra `environment` variables; returns exit code,
/// stdout and stderr.
func runLinea(_ arguments: [String], environment: [String: String] = [:]) throws -> (code: Int32, out: String, err: String) {
    let runner = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    // The runner is <build>/LineaPackageTests.xctest (or inside a bundle); `linea` sits in <build>.
    var dir = runner.deletingLastPathComponent()
    while !FileManager.default.isExecutableFile(atPath: dir.appendingPathComponent("linea").path), dir.path != "/" {
        dir = dir.deletingLastPathComponent()
    }
    let binary = dir.appendingPathComponent("linea")
    guard FileManager.default.isExecutableFile(atPath: binary.path) else {
        throw Failure("linea binary not found near \(runner.path)")
    }
    let process = Process()
    process.executableURL = binary
    process.arguments = arguments
    if !environment.isEmpty {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ text: String) { description = text }
}

/// `linea-cli-<pid>` in the temporary directory: every test's files go inside, and it is removed when the test process
/// exits (one folder per test would otherwise be left in /tmp by every run).
let scratchFolder: URL = {
    atexit { try? FileManager.default.removeItem(at: FileManager.default.temporaryDirectory.appendingPathComponent("linea-cli-\(getpid())")) }
    return FileManager.default.temporaryDirectory.appendingPathComponent("linea-cli-\(getpid())")
}()

/// A fresh directory for one test, inside `scratchFolder`.
func temporaryDirectory() throws -> URL {
    let dir = scratchFolder.appendingPathComponent(UUID().uuidString)
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

@Suite struct CLITests {
    @Test func listNamesMechanismsAndBackends() throws {
        let r = try runLinea(["list"])
        #expect(r.code == 0)
        #expect(r.out.contains("attention") && r.out.contains("flash") && r.out.contains("backends"))
    }

    @Test func usageErrorsExitTwoWithoutStackTrace() throws {
        for args in [["frobnicate"], ["bench", "--lengths", "12,abc"], ["bench", "--mechanism", "nope"],
                     ["verify", "--mechanism", "nope"], ["bench", "--heads", "0"], ["bench", "--backend", "tpu"],
                     ["bench", "--form", "sideways"], ["verify", "--backend", "tpu"], ["verify", "--dtype", "f8"]] {
            let r = try runLinea(args)
            #expect(r.code == 2, "\(args): exit \(r.code), stderr: \(r.err)")
            #expect(r.err.contains("rror"), "\(args): \(r.err)")
            #expect(!r.err.contains("Fatal error") && !r.err.contains("Stack dump"), "\(args): \(r.err)")
        }
    }

    @Test func verifyPassesForEveryMechanism() throws {
        let r = try runLinea(["verify"])
        #expect(r.code == 0, "\(r.out)\(r.err)")
        #expect(r.out.contains(" 0 failed"))
    }

    @Test(.enabled(if: !FileManager.default.fileExists(atPath: "/dev/nvidiactl"), "this machine has an NVIDIA device"))
    func verifyOnCUDAWithoutAGPUSaysWhy() throws {
        let r = try runLinea(["verify", "--backend", "cuda", "--mechanism", "attention"])
        #expect(r.code == 1, "\(r.err)")
        #expect(r.err.contains("CUDA backend is unavailable"), "\(r.err)")
    }

    @Test func verifyFailsWithExitOneWhenToleranceIsImpossible() throws {
        let r = try runLinea(["verify", "--mechanism", "attention", "--tolerance", "0"])
        #expect(r.code == 1)
        #expect(r.out.contains("FAIL"))
    }

    @Test func benchWritesJSONAndSVG() throws {
        let dir = try temporaryDirectory()
        let json = dir.appendingPathComponent("b.json").path, svg = dir.appendingPathComponent("b.svg").path
        let r = try runLinea(["bench", "--mechanism", "attention", "--lengths", "128,256", "--heads", "2", "--dim", "32",
                              "--json", json, "--svg", svg])
        #expect(r.code == 0, "\(r.err)")
        #expect(r.out.contains("time ~ T^") && r.out.contains("sgemm"))
        #expect(r.err.contains("bench: attention flash B = 1 T = 256"))  // progress on stderr
        let rows = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [[String: Any]]
        #expect(rows?.count == 2)
        let keys: Set<String> = ["mechanism", "form", "backend", "B", "T", "H", "K", "V", "ms", "tokens_per_s", "gflops", "peak_bytes",
                                "sgemm_gflops"]
        #expect(rows.map { $0.allSatisfy { Set($0.keys) == keys } } == true)
        #expect(rows?.last?["T"] as? Int == 256)
        let drawing = try String(contentsOfFile: svg, encoding: .utf8)
        #expect(drawing.hasPrefix("<svg") && drawing.contains("polyline") && drawing.contains("attention flash"))
    }
}
