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
