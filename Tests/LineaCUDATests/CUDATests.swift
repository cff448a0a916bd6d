import Foundation
import Linea
import LineaCUDA
import Testing

/// Checks that run everywhere (no GPU needed): availability reporting, kernel sources, the CPU oracle, the hash.
@Suite struct CUDAWithoutGPUTests {
    @Test func backendReportsAvailabilityWithAClearMessage() throws {
        if CUDABackend.isAvailable {
            #expect(CUDABackend.unavailableReason == nil)
            return
        }
        let reason = try #require(CUDABackend.unavailableReason)
        #expect(reason.contains("CUDA backend is unavailable"), "\(reason)")
        // On a machine without the driver the message names the missing library.
        if ProcessInfo.processInfo.environment["LINEA_LIBCUDA"] == nil,
           !FileManager.default.fileExists(atPath: "/usr/lib/x86_64-linux-gnu/libcuda.so.1") {
            #expect(reason.contains("libcuda.so.1 not found"), "\(reason)")
        }
        do {
            _ = try CUDABackend.shared
            Issue.record("shared should throw without a GPU")
        } catch let error as LineaError {
            guard case .unavailable(let what, _) = error else { Issue.record("wrong error \(error)"); return }
            #expect(what == "CUDA backend")
        }
    }

    @Test func kernelSourcesDeclareTheirEntries() {
        #expect(CUDAKernels.all.count >= 7)  // attention x3, recurrent step, split-KV, block-sparse, chunked
        for kernel in CUDAKernels.all {
            #expect(!kernel.source.isEmpty, "\(kernel.name) is empty")
            #expect(!kernel.entries.isEmpty)
            // An entry is declared by an `extern "C" __global__ void` line or, in the chunked source, one LC_CHUNK_ENTRY
            // or LC_DELTA_ENTRY line.
            let macros = ["LC_CHUNK_ENTRY(", "LC_DELTA_ENTRY("]
            let declarations = kernel.source.split(separator: "\n").filter { line in
                line.hasPrefix("extern \"C\" __global__ void ") || macros.contains { line.hasPrefix($0) }
            }
            // Entries declared inside a macro per dtype (`linea_norm_##SUF`, `linea_cast_##S##_##D`) match that
            // template with any lowercase suffix for each macro parameter.
            let templates = declarations.compactMap { line -> Regex<Substring>? in
                guard let name = line.firstMatch(of: /linea_[A-Za-z0-9_]*##[A-Za-z0-9_#]*(?=\()/)?.output else { return nil }
                let pattern = String(name).replacingOccurrences(of: "##", with: "")
                    .replacing(/[A-Z]+/, with: "[a-z0-9]+")
                return try? Regex(pattern)
            }
            for entry in kernel.entries {
                let declared = declarations.contains { line in
                    line.contains(" \(entry)(") || macros.contains { line.hasPrefix("\($0)\(entry),") }
                } || templates.contains { entry.wholeMatch(of: $0) != nil }
                #expect(declared, "\(kernel.name): no extern \"C\" __global__ entry \(entry)")
            }
            if templates.isEmpty {
                #expect(declarations.count == kernel.entries.count, "\(kernel.name): \(declarations.count) entries declared")
            }
        }
    }

    @Test func groupedHeadSourcesDeclareTheirVariant() {
        // A source whose kernels take `group` (itself or through a header it includes) reads q/k grouped only when
        // compiled with groupedHeadsOptions, which its launcher passes for group > 1; scripts/check_kernels.py compiles
        // that module from the source's variant line, so every such source needs the line, with those options.
        let marker = "// linea-nvrtc-variant: gva " + CUDAKernels.groupedHeadsOptions.joined(separator: " ")
        let groupedHeaders = CUDAKernels.headers.filter { $0.source.contains("int group") }.map(\.name)
        var grouped = 0
        for kernel in CUDAKernels.all {
            let takesGroup = kernel.source.contains("int group")
                || groupedHeaders.contains { kernel.source.contains("#include \"\($0)\"") }
            grouped += takesGroup ? 1 : 0
            #expect(kernel.source.contains(marker + " ") == takesGroup, "\(kernel.name): variant line \(takesGroup ? "missing" : "without group")")
        }
        #expect(grouped == 9)  // the chunked fwd, end, delta fwd, delta end, wy, gla, kda and simt sources, the decode step
        #expect(CUDAKernels.options(group: 1).isEmpty)
        #expect(CUDAKernels.options(group: 4) == CUDAKernels.groupedHeadsOptions)
    }

    @Test func kernelFilesAreEmbeddedWithTheirPathsAndHeaders() {
        // NVRTC names the repository's file and line in its messages only when each text starts with its #line.
        let prefix = "#line 1 \"Sources/LineaCUDA/Kernels/cu/"
        for kernel in CUDAKernels.all {
            #expect(kernel.source.hasPrefix(prefix + "\(kernel.name).cu\"\n"), "\(kernel.name) lacks its #line")
        }
        #expect(CUDAKernels.headers.map(\.name) == ["block_bits.cuh", "chunked_common.cuh", "chunked_delta.cuh", "chunked_scalar.cuh", "element_io.cuh", "mma_tiles.cuh"])
        for header in CUDAKernels.headers {
            #expect(header.source.hasPrefix(prefix + "\(header.name)\"\n"), "\(header.name) lacks its #line")
        }
        // Every #include names a header that CUDAContext.function hands to NVRTC.
        for kernel in CUDAKernels.all {
            for line in kernel.source.split(separator: "\n") where line.hasPrefix("#include ") {
                let name = line.dropFirst("#include ".count).trimmingCharacters(in: CharacterSet(charactersIn: "\"<>"))
                #expect(CUDAKernels.headers.contains { $0.name == name }, "\(kernel.name) includes \(name), not a kernel header")
            }
        }
    }

    @Test func tensorCoreDefaultsMatchTheKernelSource() {
        // `.default` launches the source compiled without -D options, so its #define defaults must agree.
        for option in CUDAAttention.TensorCoreConfig.default.options {
            let define = option.dropFirst(2).replacingOccurrences(of: "=", with: " ")  // "-DNAME=V" -> "NAME V"
            #expect(CUDAKernels.attentionMMA.contains("#define \(define)\n"), "source default differs: \(option)")
        }
    }

    @Test func cacheKeyIsFNV1a64() {
        // Published FNV-1a 64 test vectors.
        #expect(KernelCache.fnv1a64(Array("".utf8)) == 0xcbf2_9ce4_8422_2325)
        #expect(KernelCache.fnv1a64(Array("a".utf8)) == 0xaf63_dc4c_8601_ec8c)
        #expect(KernelCache.fnv1a64(Array("foobar".utf8)) == 0x8594_4171_f739_67e8)
        #expect(KernelCache.key(source: "x", parts: ["sm_90"]) != KernelCache.key(source: "x", parts: ["sm_80"]))
        // The key from a kept source hash (what CUDAContext remembers per source) is the key from the source.
        let source = CUDAKernels.chunkedFwd
        #expect(KernelCache.key(sourceHash: KernelCache.fnv1a64(source.utf8), parts: ["sm_90", "13.0"])
                == KernelCache.key(source: source, parts: ["sm_90", "13.0"]))
    }

    @Test func diskCacheRoundTrips() throws {
        // A folder of its own, passed in: setting LINEA_CUDA_CACHE here would move the cache of the GPU tests running
        // beside this one (and unsetting it after would drop the folder the caller chose).
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("linea-cache-test-\(getpid())")
        defer { try? FileManager.default.removeItem(at: dir) }
        let key = KernelCache.key(source: "extern \"C\" __global__ void f() {}", parts: ["sm_90", "13.0"])
        #expect(KernelCache.load(key: key, in: dir) == nil)
        let image: [UInt8] = [0x7f, 0x45, 0x4c, 0x46, 1, 2, 3]
        KernelCache.store(key: key, image: image, in: dir)
        #expect(KernelCache.path(key: key, in: dir).path.hasPrefix(dir.path))
        #expect(FileManager.default.fileExists(atPath: KernelCache.path(key: key, in: dir).path))
        #expect(KernelCache.load(key: key, in: dir) == image)
        KernelCache.store(key: key, image: [9], in: dir)  // replaces
        #expect(KernelCache.load(key: key, in: dir) == [9])
        // The folder the environment names: LINEA_CUDA_CACHE first, then XDG_CACHE_HOME's linea/cuda.
        #expect(KernelCache.directory(environment: ["LINEA_CUDA_CACHE": "/c", "XDG_CACHE_HOME": "/x"]).path == "/c")
        #expect(KernelCache.directory(environment: ["LINEA_CUDA_CACHE": "", "XDG_CACHE_HOME": "/x"]).path == "/x/linea/cuda")
    }
}

/// GPU comparisons against the CPU oracle (skipped when no GPU is present).
@Suite(.enabled(if: CUDABackend.isAvailable, "needs an NVIDIA GPU, its driver and NVRTC"))
struct CUDAKernelTests {
    /// Every attention kernel variant that takes a case of the attention table (fp32 portable; bf16 and fp16
    /// portable, mma.sync tensor cores and, on sm_90 with D = 128, wgmma), not only the one the dispatch picks,
    /// against `Attention.forward(.reference)` on the inputs rounded to the dtype.
    @Test(arguments: AttentionFamily().cases.indices)
    func everyFlashVariantMatchesReference(index: Int) throws {
        let c = AttentionFamily().cases[index]
        guard c.gpuForms?.contains("flash") ?? true else { return }
        let ctx = try CUDABackend.shared
        let x = try c.makeInputs(UInt64(1 + index))
        let D = x["q"]!.shape[3]
        // The kernels take v at q's head dim; D != Dv runs zero-padded through the dispatch (CUDAOpCaseTests).
        guard x["v"]!.shape[3] == D else { return }
        var variants: [(DType, CUDAAttention.Kernel)] = [(.float32, .portable), (.bfloat16, .portable), (.float16, .portable)]
        if (D == 64 || D == 128) && ctx.computeCapability.major >= 8 { variants += [(.bfloat16, .tensorCore), (.float16, .tensorCore)] }
        if D == 128 && ctx.computeCapability.major == 9 { variants += [(.bfloat16, .wgmma), (.float16, .wgmma)] }
        for (dtype, kernel) in variants {
            let (q, k, v) = (CUDAUpload.rounded(x["q"]!, dtype), CUDAUpload.rounded(x["k"]!, dtype), CUDAUpload.rounded(x["v"]!, dtype))
            let want = try Attention.forward(q: q, k: k, v: v, options: AttentionOptions(causal: c.options.causal, window: c.options.window),
                                             form: .reference)
            let got = try CUDAAttention.forward(q: q, k: k, v: v, causal: c.options.causal, window: c.options.window, dtype: dtype,
                                                kernel: kernel, context: ctx)
            let (o, lse) = (ErrorStats(got.o, want.o), ErrorStats(got.lse, want.lse))
            #expect(o.relativeRMS <= c.tolerance(dtype) && lse.relativeRMS <= c.tolerance(dtype), "\(c.label) \(dtype) \(kernel): o \(o), lse \(lse)")
        }
    }

    @Test func invalidArgumentsThrow() throws {
        let ctx = try CUDABackend.shared
        let q = try Tensor(zeros: [1, 4, 3, 64]), k = try Tensor(zeros: [1, 4, 2, 64])
        #expect(throws: LineaError.self) { try CUDAAttention.forward(q: q, k: k, v: k, context: ctx) }  // 2 does not divide 3
        let k1 = try Tensor(zeros: [1, 4, 1, 64])
        #expect(throws: LineaError.self) { try CUDAAttention.forward(q: q, k: k1, v: k1, causal: false, window: 2, context: ctx) }
        #expect(throws: LineaError.self) { try CUDAAttention.forward(q: q, k: k1, v: k1, dtype: .float64, context: ctx) }
    }

    @Test func windowAndBlockSizesNearIntMaxMeanWholeSequences() throws {
        let ctx = try CUDABackend.shared
        let q = try Tensor.randomNormal([1, 40, 2, 64], seed: 1), kv = try Tensor.randomNormal([1, 30, 2, 64], seed: 2)
        let want = try CUDAAttention.forward(q: q, k: kv, v: kv, causal: true, context: ctx)
        let got = try CUDAAttention.forward(q: q, k: kv, v: kv, causal: true, window: .max, context: ctx)
        #expect(ErrorStats(got.o, want.o).relativeRMS < 1e-6)
        let mask = try BlockMask.dense(T: 40, S: 30, blockRows: .max, blockKeys: .max)
        let sparse = try CUDABlockSparse.forward(q: q, k: kv, v: kv, mask: mask, causal: true, context: ctx)
        #expect(ErrorStats(sparse.o, want.o).relativeRMS < 1e-5)
    }
}
