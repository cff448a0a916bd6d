import Foundation
import Linea
import Testing

@Suite struct HostCLITests {
    /// `linea list` and `linea bench` say which CPU features and which BLAS core the numbers come from.
    @Test func listAndBenchNameTheBLASCore() throws {
        let list = try runLinea(["list"])
        #expect(list.code == 0, "\(list.err)")
        let core = BLAS.core(for: .current) ?? BLAS.info.core
        #expect(list.out.contains("blas: ") && list.out.lowercased().contains("core \(core.lowercased())"), "\(list.out)")
        #expect(list.out.contains("cpu: \(CPUFeatures.vendor)") && list.out.contains("kernels: \(CPUKernels.width)"), "\(list.out)")
        let bench = try runLinea(["bench", "--mechanism", "simple_gla", "--lengths", "64"])
        #expect(bench.code == 0, "\(bench.err)")
        #expect(bench.out.contains("blas: ") && bench.out.contains("% sgemm"), "\(bench.out)")
    }

    /// `linea bench --decode` on the CPU: one row per batch size with the state traffic beside a copy; `--matmul` is a
    /// GPU benchmark, so without `--backend cuda` it is a usage error.
    @Test func decodeBenchPrintsItsTable() throws {
        let r = try runLinea(["bench", "--decode", "--layers", "2", "--heads", "2", "--dim", "16"])
        #expect(r.code == 0, "\(r.err)")
        #expect(r.out.contains("decode: 2 layers of gated_delta_rule steps, H = 2, K = V = 16, fp32 state on cpu"), "\(r.out)")
        let rows = r.out.split(separator: "\n").filter { $0.hasPrefix("1 ") || $0.hasPrefix("64 ") }
        #expect(rows.count == 2 && rows.allSatisfy { $0.contains("%") }, "\(r.out)")
        let matmul = try runLinea(["bench", "--matmul"])
        #expect(matmul.code == 2 && matmul.err.contains("--matmul: expected --backend cuda"), "\(matmul.err)")
    }
}

@Suite struct BenchOutputTests {
    /// `--json` and `--svg` write by rename: onto a FIFO (or a device, as root) that would replace it, so it is refused.
    @Test func benchRefusesToReplaceAFIFO() throws {
        let dir = try temporaryDirectory()
        for option in ["--json", "--svg"] {
            let fifo = dir.appendingPathComponent("out\(option)").path
            #expect(mkfifo(fifo, 0o600) == 0)
            let r = try runLinea(["bench", "--mechanism", "simple_gla", "--lengths", "64", option, fifo])
            #expect(r.code == 1 && r.err.contains("expected a regular file (or no file) to write, got a FIFO"), "\(option): \(r.err)")
            var info = stat()
            #expect(stat(fifo, &info) == 0 && info.st_mode & S_IFMT == S_IFIFO, "\(option): the FIFO was replaced")
        }
    }
}
