import Foundation
import Linea
import Testing

@Suite struct NeighborhoodCLITests {
    /// `linea op neighborhood --kernel-size 5,3 --dilation 1,2 --stride 2,3 --causal 1,0` on a 9 x 11 grid writes o and
    /// lse equal to the Float64 reference with the same settings, in both forms.
    @Test func opNeighborhoodMatchesTheReference() throws {
        let dir = try temporaryDirectory()
        let x = ["q": try Tensor.randomNormal([2, 9, 11, 4, 16], seed: 1), "k": try Tensor.randomNormal([2, 9, 11, 2, 16], seed: 2),
                 "v": try Tensor.randomNormal([2, 9, 11, 2, 16], seed: 3)]
        let input = dir.appendingPathComponent("in.safetensors").path
        try SafeTensors.write(x, to: input)
        let options = NeighborhoodOptions(kernelSize: [5, 3], stride: [2, 3], dilation: [1, 2], causal: [true, false])
        let want = try NeighborhoodAttention.forward(q: x["q"]!, k: x["k"]!, v: x["v"]!, options: options, form: .reference)
        for (form, flags) in [("fused", ["--causal", "1,0"]), ("reference", ["--causal-axes=true,false"])] {
            let output = dir.appendingPathComponent("out-\(form).safetensors").path
            let r = try runLinea(["op", "neighborhood", "--inputs", input, "--output", output, "--form", form, "--kernel-size", "5,3",
                                  "--dilation", "1,2", "--stride", "2,3"] + flags)
            #expect(r.code == 0, "\(form): \(r.err)")
            let got = try SafeTensors.read(path: output)
            let eo = ErrorStats(got["o"]!, want.o), el = ErrorStats(got["lse"]!, want.lse)
            #expect(eo.relativeRMS <= 1e-5 && el.relativeRMS <= 1e-5, "\(form): o \(eo); lse \(el)")
        }
    }

    /// Settings that do not fit: usage errors (exit 2) for bad lists, data errors (exit 1) for a kernel the grid cannot
    /// hold; each names the option.
    @Test func badSettingsNameTheOption() throws {
        let dir = try temporaryDirectory()
        let input = dir.appendingPathComponent("in.safetensors").path
        let qkv = try Tensor.randomNormal([1, 9, 11, 2, 8], seed: 1)
        try SafeTensors.write(["q": qkv, "k": qkv, "v": qkv], to: input)
        let out = dir.appendingPathComponent("out.safetensors").path
        for (flags, code, text) in [
            (["--kernel-size", "12,3"], Int32(1), "kernel_size: expected at most the grid's length 9 on axis 0"),
            (["--kernel-size", "5,3", "--dilation", "3,1"], 1, "dilation: expected kernel_size · dilation <= 9"),
            (["--kernel-size", "5,3,3"], 1, "rank 6 for 3 kernel sizes"),
            (["--kernel-size", "5,3", "--stride", "6,1"], 2, "stride"),
            (["--kernel-size", "5,3", "--causal", "1,0,1"], 2, "--causal"),
            (["--stride", "2"], 2, "expected with --kernel-size"),
            ([], 1, "--kernel-size"),
        ] {
            let r = try runLinea(["op", "neighborhood", "--inputs", input, "--output", out] + flags)
            #expect(r.code == code && r.err.contains(text), "\(flags): \(r.code) \(r.err)")
        }
        #expect(!FileManager.default.fileExists(atPath: out))
    }
}
