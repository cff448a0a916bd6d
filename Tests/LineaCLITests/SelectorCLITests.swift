import Foundation
import Linea
import Testing

/// `linea op block_sparse --selector ...` and `linea bench --mechanism block_sparse --density ...`.
@Suite struct SelectorCLITests {
    @Test func selectorsWriteTheirMaskDensityAndTheAttentionThroughIt() throws {
        let dir = try temporaryDirectory()
        let (T, Hq, Hkv, D) = (96, 2, 1, 16)
        let t = ["q": try Tensor.randomNormal([1, T, Hq, D], seed: 1), "k": try Tensor.randomNormal([1, T, Hkv, D], seed: 2),
                 "v": try Tensor.randomNormal([1, T, Hkv, D], seed: 3)]
        let input = dir.appendingPathComponent("in.safetensors").path
        try SafeTensors.write(t, to: input)
        for (selector, flags) in [("topk", ["--top-k", "2"]), ("xattention", ["--tau", "0.8", "--xattn-stride", "4"]),
                                  ("minference", ["--pattern", "a-shape", "--sinks", "4", "--local", "16"])] {
            let output = dir.appendingPathComponent("out-\(selector).safetensors").path
            let r = try runLinea(["op", "block_sparse", "--inputs", input, "--output", output, "--selector", selector, "--block-size", "16"] + flags)
            #expect(r.code == 0, "\(selector): \(r.err)")
            #expect(r.err.contains("density") && r.err.contains("rel-RMS against dense attention"), "\(r.err)")
            let got = try SafeTensors.read(path: output)
            #expect(got.keys.sorted() == ["density", "lse", "mask", "o"])
            let mask = try BlockMask(tensor: got["mask"]!, blockRows: 16, blockKeys: 16)
            #expect(mask.shape == [1, Hq, 6, 6])
            let want = try BlockSparseAttention.reference(q: t["q"]!, k: t["k"]!, v: t["v"]!, mask: mask)
            #expect(ErrorStats(got["o"]!, want.o).relativeRMS <= 1e-5)
            let kept = mask.values.filter { $0 != 0 }.count
            #expect(abs(Double(got["density"]!.scalars[0]) - Double(kept) / Double(Hq * 21)) < 1e-6)  // 21 causal blocks of 6 x 6
        }
        // Vertical-slash attends its exact keys: the mask written (and run) has blocks of 16 queries x 1 key.
        let exactOut = dir.appendingPathComponent("out-vs.safetensors").path
        let vs = try runLinea(["op", "block_sparse", "--inputs", input, "--output", exactOut, "--selector", "minference", "--block-size", "16",
                               "--pattern", "vertical-slash", "--vertical", "30", "--slash", "50"])
        #expect(vs.code == 0 && vs.err.contains("exact keys"), "\(vs.err)")
        let got = try SafeTensors.read(path: exactOut)
        let mask = try BlockMask(tensor: got["mask"]!, blockRows: 16, blockKeys: 1)
        #expect(mask.shape == [1, Hq, 6, T])
        let sel = try BlockSelector.mInference(q: t["q"]!, k: t["k"]!, blockSize: 16, patterns: [.verticalSlash(vertical: 30, slash: 50)])
        #expect(mask == (try sel.exactMask()))
        #expect(ErrorStats(got["o"]!, try BlockSparseAttention.reference(q: t["q"]!, k: t["k"]!, v: t["v"]!, mask: mask).o).relativeRMS <= 1e-5)
        #expect(abs(Double(got["density"]!.scalars[0]) - sel.density) < 1e-6 && sel.pairs != nil)
        // T != S: the search leaves vertical-slash out; naming it is refused.
        let uneven = dir.appendingPathComponent("uneven.safetensors").path
        try SafeTensors.write(["q": try Tensor.randomNormal([1, 64, Hq, D], seed: 4), "k": t["k"]!, "v": t["v"]!], to: uneven)
        let searched = try runLinea(["op", "block_sparse", "--inputs", uneven, "--output", exactOut, "--selector", "minference", "--block-size", "16"])
        #expect(searched.code == 0 && !searched.err.contains("vertical-slash"), "\(searched.err)")
        let refused = try runLinea(["op", "block_sparse", "--inputs", uneven, "--output", exactOut, "--selector", "minference", "--block-size", "16",
                                    "--pattern", "vertical-slash"])
        #expect(refused.code == 1 && refused.err.contains("T == S"), "\(refused.err)")
        let output = dir.appendingPathComponent("bad.safetensors").path
        for (flags, message) in [(["--selector", "xattention", "--tau", "1.5"], "--tau"), (["--selector", "topk", "--top-k", "0"], "--top-k"),
                                 (["--selector", "magic"], "--selector"), (["--selector", "topk", "--block-size", "0"], "--block-size"),
                                 (["--selector", "topk", "--set", "block_rows=32"], "use --block-size")] {
            let r = try runLinea(["op", "block_sparse", "--inputs", input, "--output", output] + flags)
            #expect(r.code == 2 && r.err.contains(message), "\(flags): \(r.err)")
        }
        let r = try runLinea(["op", "block_sparse", "--inputs", input, "--output", output, "--selector", "xattention", "--xattn-stride", "5"])
        #expect(r.code == 1 && r.err.contains("stride"), "\(r.err)")
    }

    @Test func benchAtADensityTimesDenseFlashBesideIt() throws {
        let r = try runLinea(["bench", "--mechanism", "block_sparse", "--density", "0.1", "--lengths", "512", "--heads", "2"])
        #expect(r.code == 0, "\(r.err)")
        #expect(r.out.contains("block_sparse fused at density 0.1 is") && r.out.contains("faster than attention flash at T = 512"), "\(r.out)")
        let bad = try runLinea(["bench", "--mechanism", "block_sparse", "--density", "0"])
        #expect(bad.code == 2 && bad.err.contains("--density"), "\(bad.err)")
    }
}
