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
