import Foundation
import Linea
import Testing

@Suite struct NeighborhoodTests {
    typealias N = NeighborhoodOptions

    /// The host API's two forms agree on a few of the family's cases (OpCaseTests runs every case through the dispatch).
    @Test(arguments: [1, 7, 10, 12])
    func fusedEqualsReferenceOnHostTensors(_ index: Int) throws {
        let c = NeighborhoodFamily().cases[index]
        let x = try c.makeInputs(UInt64(index))
        let options = try #require(try N(settings: c.options.settings))
        let want = try NeighborhoodAttention.forward(q: x["q"]!, k: x["k"]!, v: x["v"]!, options: options, form: .reference)
        let got = try NeighborhoodAttention.forward(q: x["q"]!, k: x["k"]!, v: x["v"]!, options: options, form: .fused)
        let eo = ErrorStats(got.o, want.o), el = ErrorStats(got.lse, want.lse)
        #expect(eo.relativeRMS <= 1e-5 && el.relativeRMS <= 1e-5, "\(c.label): o \(eo); lse \(el)")
        #expect(got.o.shape == x["q"]!.shape.dropLast() + [x["v"]!.shape.last!] && got.lse.shape == Array(x["q"]!.shape.dropLast()))
    }

    /// NATTEN 0.21.7's own outputs (its Flex Attention backend on the CPU, scripts/natten_fixtures.py): both forms match
    /// o and lse on 1-D, 2-D and 3-D grids with dilation, strides, per-axis causal, GQA and Swin blocks.
    @Test func bothFormsMatchNATTEN() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../LineaLMTests/Fixtures/natten/na_flex.safetensors").path
        let file = try SafeTensorsFile(path: path)
        let cases = file.metadata.keys.filter { $0.hasPrefix("c") }.sorted()
        #expect(cases.count == 8)
        for name in cases {
            let json = try #require(try JSONSerialization.jsonObject(with: Data(file.metadata[name]!.utf8)) as? [String: [Any]])
            let options = N(kernelSize: json["kernel_size"] as! [Int], stride: json["stride"] as? [Int], dilation: json["dilation"] as? [Int],
                            causal: json["is_causal"] as? [Bool])
            let (q, k, v) = (try file.tensor("\(name).q"), try file.tensor("\(name).k"), try file.tensor("\(name).v"))
            for form in NeighborhoodForm.allCases {
                let got = try NeighborhoodAttention.forward(q: q, k: k, v: v, options: options, form: form)
                let eo = ErrorStats(got.o, try file.tensor("\(name).o")), el = ErrorStats(got.lse, try file.tensor("\(name).lse"))
                #expect(eo.relativeRMS <= 1e-5 && el.relativeRMS <= 1e-5, "\(name) \(options) \(form): o \(eo); lse \(el)")
            }
        }
    }

    /// q = 0 makes every visible key weigh the same and v = identity (Dv = tokens) spells the neighborhood out:
    /// o[i] = 1/|W(i)| on W(i), lse = log |W(i)|. The windows below are worked out by hand from NATTEN's rules.
    @Test func windowsWorkedOutByHand() throws {
        // (grid, options, query, its keys)
        let expected: [([Int], N, [Int], [Int])] = [
            ([7], N(kernelSize: [3]), [0], [0, 1, 2]),                                     // shifted right at the start
            ([7], N(kernelSize: [3]), [3], [2, 3, 4]),
            ([7], N(kernelSize: [3]), [6], [4, 5, 6]),                                     // shifted left at the end
            ([7], N(kernelSize: [3], dilation: [2]), [0], [0, 2, 4]),                      // group {0, 2, 4, 6}
            ([7], N(kernelSize: [3], dilation: [2]), [6], [2, 4, 6]),
            ([7], N(kernelSize: [3], dilation: [2]), [5], [1, 3, 5]),                      // group {1, 3, 5}: all of it
            ([8], N(kernelSize: [4]), [3], [1, 2, 3, 4]),                                  // even kernel: 2 left, 1 right
            ([8], N(kernelSize: [3], stride: [2]), [0], [0, 1, 2]),                        // leader 1
            ([8], N(kernelSize: [3], stride: [2]), [3], [2, 3, 4]),                        // leader 3
            ([8], N(kernelSize: [3], stride: [2]), [6], [5, 6, 7]),                        // leader 7, shifted
            ([8], N(kernelSize: [3], causal: [true]), [0], [0]),                           // truncated
            ([8], N(kernelSize: [3], causal: [true]), [1], [0, 1]),
            ([8], N(kernelSize: [3], causal: [true]), [5], [3, 4, 5]),
            ([8], N(kernelSize: [3], stride: [2], causal: [true]), [2], [1, 2]),           // leader 3: keys 1...3 up to the query
            ([8], N(kernelSize: [3], stride: [2], causal: [true]), [3], [1, 2, 3]),
            ([8], N(kernelSize: [4], stride: [4]), [5], [4, 5, 6, 7]),                     // Swin block
            ([4, 5], N(kernelSize: [3, 2], causal: [true, false]), [2, 4], [3, 4, 8, 9, 13, 14]),  // rows 0...2 x columns 3, 4
        ]
        for (grid, options, query, keys) in expected {
            #expect(try options.neighbors(ofQuery: query, spatial: grid) == keys, "\(grid) \(options) query \(query)")
            let n = grid.reduce(1, *)
            let q = try Tensor(zeros: [1] + grid + [1, 8])
            let k = try Tensor.randomNormal([1] + grid + [1, 8], seed: 1)
            var v = try Tensor(zeros: [1] + grid + [1, n])
            for t in 0..<n { v.scalars[t * n + t] = 1 }
            let token = zip(query, grid).reduce(0) { $0 * $1.1 + $1.0 }
            for form in NeighborhoodForm.allCases {
                let out = try NeighborhoodAttention.forward(q: q, k: k, v: v, options: options, form: form)
                let row = Array(out.o.scalars[(token * n)..<((token + 1) * n)])
                let want = (0..<n).map { keys.contains($0) ? 1 / Float(keys.count) : 0 }
                #expect(zip(row, want).allSatisfy { abs($0 - $1) < 1e-6 }, "\(grid) \(options) query \(query) \(form): \(row)")
                #expect(abs(out.lse.scalars[token] - log(Float(keys.count))) < 1e-6)
            }
        }
    }

    /// Stride = kernel on a grid the kernel divides is Swin's window attention: each block attends within itself.
    @Test func strideEqualToKernelIsSwinWindows() throws {
        let (B, H, D, grid, block) = (2, 2, 16, [12, 8], [4, 4])
        let n = grid.reduce(1, *)
        let q = try Tensor.randomNormal([B] + grid + [H, D], seed: 1), k = try Tensor.randomNormal([B] + grid + [H, D], seed: 2)
        let v = try Tensor.randomNormal([B] + grid + [H, D], seed: 3)
        let got = try NeighborhoodAttention.forward(q: q, k: k, v: v, options: N(kernelSize: block, stride: block))
        for b in 0..<B {
            for r0 in stride(from: 0, to: grid[0], by: block[0]) {
                for c0 in stride(from: 0, to: grid[1], by: block[1]) {
                    // The block's tokens, gathered into a sequence, through exact non-causal attention.
                    let tokens = (r0..<(r0 + block[0])).flatMap { r in (c0..<(c0 + block[1])).map { r * grid[1] + $0 } }
                    func gather(_ x: Tensor) throws -> Tensor {
                        var rows: [Float] = []
                        for t in tokens {
                            let start = (b * n + t) * H * D
                            rows += x.scalars[start..<(start + H * D)]
                        }
                        return try Tensor(shape: [1, tokens.count, H, D], scalars: rows)
                    }
                    let want = try Attention.forward(q: gather(q), k: gather(k), v: gather(v), options: AttentionOptions(causal: false), form: .reference)
                    let mine = try gather(got.o)
                    let e = ErrorStats(mine, want.o)
                    #expect(e.relativeRMS <= 1e-5, "block at \(r0), \(c0): \(e)")
                }
            }
        }
    }

    /// Kernel = grid: full attention (non-causal on a 2-D grid; causal in 1-D is causal attention).
    @Test func kernelEqualToGridIsFullAttention() throws {
        for (grid, causal) in [([6, 7], false), ([50], true)] {
            let n = grid.reduce(1, *)
            let q = try Tensor.randomNormal([1] + grid + [4, 32], seed: 4), k = try Tensor.randomNormal([1] + grid + [2, 32], seed: 5)
            let v = try Tensor.randomNormal([1] + grid + [2, 24], seed: 6)
            let got = try NeighborhoodAttention.forward(q: q, k: k, v: v, options: N(kernelSize: grid, causal: grid.map { _ in causal }))
            let want = try Attention.forward(q: q.reshaped([1, n, 4, 32]), k: k.reshaped([1, n, 2, 32]), v: v.reshaped([1, n, 2, 24]),
                                             options: AttentionOptions(causal: causal), form: .reference)
            let eo = ErrorStats(got.o.scalars, want.o.scalars), el = ErrorStats(got.lse.scalars, want.lse.scalars)
            #expect(eo.relativeRMS <= 1e-5 && el.relativeRMS <= 1e-5, "\(grid) causal \(causal): o \(eo); lse \(el)")
        }
    }

    /// Bad settings and shapes throw `invalidArgument` / `shapeMismatch` naming the argument, the expected and the actual value.
    @Test func badInputsNameTheArgument() throws {
        let q = try Tensor.randomNormal([1, 9, 11, 2, 8], seed: 1), kv = try Tensor.randomNormal([1, 9, 11, 1, 8], seed: 2)
        func message(_ options: N, k: Tensor?) -> String {
            do {
                _ = try NeighborhoodAttention.forward(q: q, k: k ?? kv, v: k ?? kv, options: options)
                return "no error"
            } catch { return "\(error)" }
        }
        let checks: [(N, Tensor?, [String])] = [
            (N(kernelSize: [12, 3]), nil, ["kernel_size", "at most the grid's length 9 on axis 0", "12"]),
            (N(kernelSize: [5, 3], dilation: [2, 1]), nil, ["dilation", "kernel_size · dilation <= 9 on axis 0", "10"]),
            (N(kernelSize: [5, 3], stride: [6, 1]), nil, ["stride", "1 to the kernel size 5 on axis 0", "6"]),
            (N(kernelSize: [1, 3]), nil, ["kernel_size", ">= 2", "1 on axis 0"]),
            (N(kernelSize: [5, 3], dilation: [0, 1]), nil, ["dilation", ">= 1", "0 on axis 0"]),
            (N(kernelSize: [5, 3], causal: [true]), nil, ["is_causal", "2 values", "[1]"]),
            (N(kernelSize: [5, 3, 3]), nil, ["q", "rank 6 for 3 kernel sizes", "rank 5"]),
            (N(kernelSize: [5, 3, 3, 3]), nil, ["kernel_size", "1 to 3 sizes", "[5, 3, 3, 3]"]),
            (N(kernelSize: [5, 3]), try Tensor.randomNormal([1, 9, 10, 1, 8], seed: 3), ["k", "[1, 9, 11, Hkv, 8]", "[1, 9, 10, 1, 8]"]),
            (N(kernelSize: [5, 3]), try Tensor.randomNormal([1, 9, 11, 3, 8], seed: 3), ["k heads", "divisor of the 2 query heads", "3"]),
        ]
        for (options, k, parts) in checks {
            let text = message(options, k: k)
            #expect(parts.allSatisfy { text.contains($0) }, "\(options): \(text)")
        }
        // The op's settings: unknown keys, an axis past the kernel's rank, causal outside 0/1, lists of the wrong length.
        #expect(throws: LineaError.self) { try N(settings: ["kernel_size_0": 3, "window": 2]) }
        #expect(throws: LineaError.self) { try N(settings: ["kernel_size_0": 3, "stride_1": 2]) }
        #expect(throws: LineaError.self) { try N(settings: ["kernel_size_0": 3, "causal_0": 2]) }
        #expect(throws: LineaError.self) { try N.settings(kernelSize: "5,3", stride: "1,2,3", dilation: nil, causal: nil) }
        #expect(throws: LineaError.self) { try N.settings(kernelSize: "5,x", stride: nil, dilation: nil, causal: nil) }
        #expect(try N.settings(kernelSize: "5,3", stride: nil, dilation: "2", causal: "1,0")
                == ["kernel_size_0": 5, "kernel_size_1": 3, "dilation_0": 2, "dilation_1": 2, "causal_0": 1, "causal_1": 0])
        #expect(try N(settings: N(kernelSize: [5, 3], stride: [2, 3], causal: [true, false]).settings)
                == N(kernelSize: [5, 3], stride: [2, 3], causal: [true, false]))
        #expect(try N(settings: [:]) == nil)
    }
}
