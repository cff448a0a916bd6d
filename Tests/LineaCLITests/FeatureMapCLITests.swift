import Foundation
import Linea
import Testing

@Suite struct FeatureMapCLITests {
    /// `linea op scan_order` writes perm and inverse (I64, one row per scan) equal to the library's, for a 2-D and a
    /// 3-D grid.
    @Test func opScanOrderWritesPermAndInverse() throws {
        let dir = try temporaryDirectory()
        for (order, grid, sizes) in [("cross", "4,6", [4, 6]), ("rotary-major", "3,4,5", [3, 4, 5]), ("hilbert", "5,7", [5, 7])] {
            let output = dir.appendingPathComponent("\(order).safetensors").path
            let r = try runLinea(["op", "scan_order", "--order", order, "--grid", grid, "--output", output])
            #expect(r.code == 0, "\(order): \(r.err)")
            let file = try SafeTensorsFile(path: output)
            let want = try ScanOrder(named: order, grid: sizes)
            let n = sizes.reduce(1, *)
            for (name, rows) in [("perm", want.permutations), ("inverse", want.inverses)] {
                let t = try file.deviceTensor(name)
                #expect(t.dtype == .int64 && t.shape == [rows.count, n], "\(order) \(name): \(t.dtype) \(t.shape)")
                #expect(try t.hostIntegers() == rows.flatMap { $0 }, "\(order) \(name)")
            }
        }
    }

    /// Bad scan_order options are usage errors (exit 2) naming the option; no file is written.
    @Test func badScanOrderOptionsNameTheOption() throws {
        let dir = try temporaryDirectory()
        let out = dir.appendingPathComponent("out.safetensors").path
        for (flags, text) in [
            (["--order", "spiral", "--grid", "4,4"], "--order: expected one of raster, bidirectional, cross, hilbert, zigzag, rotary-major, got 'spiral'"),
            (["--order", "cross", "--grid", "0,4"], "--grid: expected sizes >= 1, got '0,4'"),
            (["--order", "cross", "--grid", "4,-1,2"], "--grid: expected sizes >= 1"),
            (["--order", "cross", "--grid", "16"], "--grid: expected 2 or 3 sizes"),
            (["--order", "cross", "--grid", "a,b"], "--grid: expected 2 or 3 comma-separated integers"),
            (["--order", "cross"], "--grid: expected 2 or 3 comma-separated sizes"),
            (["--grid", "4,4"], "--order: expected one of"),
        ] {
            let r = try runLinea(["op", "scan_order", "--output", out] + flags)
            #expect(r.code == 2 && r.err.contains(text), "\(flags): \(r.code) \(r.err)")
        }
        let r = try runLinea(["op", "linear_attn", "--output", out, "--order", "cross"])
        #expect(r.code == 2 && r.err.contains("--order, --grid: expected with scan_order"), "\(r.err)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    /// `linea op linear_attn_performer --set features=32 --no-causal --normalize` equals the library's reference.
    @Test func opFeatureMapMatchesTheReference() throws {
        let dir = try temporaryDirectory()
        let x = try FeatureMapFamily.inputs(.performer, B: 1, T: 20, H: 2, HV: 2, K: 8, V: 8, seed: 3)
        let input = dir.appendingPathComponent("in.safetensors").path, output = dir.appendingPathComponent("out.safetensors").path
        try SafeTensors.write(x, to: input)
        let r = try runLinea(["op", "linear_attn_performer", "--inputs", input, "--output", output, "--set", "features=32", "--set", "seed=4",
                              "--no-causal", "--normalize"])
        #expect(r.code == 0, "\(r.err)")
        let want = try FeatureMapAttention.forward(q: x["q"]!, k: x["k"]!, v: x["v"]!, map: FeatureMap(.performer, features: 32, seed: 4),
                                                   options: FeatureMapOptions(causal: false, normalize: true), form: .reference)
        #expect(ErrorStats(try SafeTensors.read(path: output)["o"]!, want).relativeRMS <= 1e-5)
        let bad = try runLinea(["op", "linear_attn_hedgehog", "--inputs", input, "--output", output])
        #expect(bad.code == 1 && bad.err.contains("hedgehog_weight"), "\(bad.err)")
    }

    /// `linea verify --approx` prints every map's error against softmax (Performer at 16 to 1024 features) and exits 0.
    @Test func verifyApproxPrintsEveryMap() throws {
        let r = try runLinea(["verify", "--approx"])
        #expect(r.code == 0, "\(r.err)")
        for label in FeatureMapKind.allCases.map(\.rawValue) + ["performer m16", "performer m1024", "rel RMS vs softmax"] {
            #expect(r.out.contains(label), "\(label) missing from: \(r.out)")
        }
        #expect(!r.out.contains("FAIL"))
        // A fast form off its reference (here: any difference at all) is the one failure: exit 1.
        let strict = try runLinea(["verify", "--approx", "--tolerance", "0"])
        #expect(strict.code == 1 && strict.out.contains("FAIL"), "\(strict.code) \(strict.out)")
    }
}
