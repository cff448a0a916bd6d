import Foundation
import Linea
import Testing

/// `linea op long_conv`: both forms against the Float64 reference, D optional, bad inputs named; `linea list` shows it.
@Suite struct LongConvCLITests {
    @Test func bothFormsMatchTheReference() throws {
        let dir = try temporaryDirectory()
        let (B, H, L) = (2, 3, 301)
        let u = try Tensor.randomNormal([B, H, L], seed: 1), k = try Tensor.randomNormal([H, L], seed: 2, scale: 0.3)
        let D = try Tensor.randomNormal([H], seed: 3)
        for (label, tensors) in [("with D", ["u": u, "k": k, "D": D]), ("without D", ["u": u, "k": k])] {
            let input = dir.appendingPathComponent("in.safetensors").path
            try SafeTensors.write(tensors, to: input)
            let want = try LongConv.reference(u: u, k: k, D: tensors["D"])
            for form in [nil, "fft", "direct"] {
                let output = dir.appendingPathComponent("out.safetensors").path
                let r = try runLinea(["op", "long_conv", "--inputs", input, "--output", output] + (form.map { ["--form", $0] } ?? []))
                #expect(r.code == 0, "\(label) \(form ?? "default"): \(r.err)")
                let got = try SafeTensors.read(path: output)
                #expect(got.keys.sorted() == ["o"])
                let e = ErrorStats(got["o"]!, want)
                #expect(e.relativeRMS <= 1e-5, "\(label) \(form ?? "default"): \(e)")
            }
        }
    }

    @Test func badInputsAreNamed() throws {
        let dir = try temporaryDirectory()
        let out = dir.appendingPathComponent("out.safetensors").path
        func run(_ tensors: [String: Tensor], _ extra: [String] = []) throws -> (Int32, String) {
            let path = dir.appendingPathComponent("bad.safetensors").path
            try SafeTensors.write(tensors, to: path)
            let r = try runLinea(["op", "long_conv", "--inputs", path, "--output", out] + extra)
            return (r.code, r.err)
        }
        let u = try Tensor.randomNormal([1, 2, 8], seed: 1), k = try Tensor.randomNormal([2, 8], seed: 2)
        var (code, err) = try run(["u": u, "k": try Tensor.randomNormal([3, 8], seed: 2)])
        #expect(code == 1 && err.contains("k: expected shape [2, Lk]"), "\(err)")
        (code, err) = try run(["u": u, "k": k, "D": try Tensor.randomNormal([3], seed: 3)])
        #expect(code == 1 && err.contains("D: expected shape [2]"), "\(err)")
        var nan = u
        nan.scalars[3] = .nan
        (code, err) = try run(["u": nan, "k": k])
        #expect(code == 1 && err.contains("u: expected finite values"), "\(err)")
        (code, err) = try run(["u": u])
        #expect(code == 1 && err.contains("'k'"), "\(err)")
        (code, err) = try run(["u": u, "k": k], ["--form", "chunked"])
        #expect(code == 2 && err.contains("--form"), "\(err)")
        (code, err) = try run(["u": u, "k": k], ["--scale", "2"])
        #expect(code == 2 && err.contains("--scale: expected no attention or linear-attention option for long_conv"), "\(err)")
        #expect(!FileManager.default.fileExists(atPath: out), "no output is written on failure")
        let list = try runLinea(["list"])
        #expect(list.code == 0 && list.out.contains("long_conv"), "\(list.out)")
    }
}
