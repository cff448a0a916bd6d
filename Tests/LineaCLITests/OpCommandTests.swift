import Foundation
import Linea
import Testing

@Suite struct OpCommandTests {
    /// Writes q, k, v to a file in `dir` and returns its path.
    func writeInputs(_ dir: URL, B: Int = 1, T: Int, S: Int, Hq: Int, Hkv: Int, D: Int, seed: UInt64) throws -> (String, [String: Tensor]) {
        let tensors = ["q": try Tensor.randomNormal([B, T, Hq, D], seed: seed),
                       "k": try Tensor.randomNormal([B, S, Hkv, D], seed: seed + 1),
                       "v": try Tensor.randomNormal([B, S, Hkv, D], seed: seed + 2)]
        let path = dir.appendingPathComponent("in-\(seed).safetensors").path
        try SafeTensors.write(tensors, to: path)
        return (path, tensors)
    }

    @Test(arguments: [
        ("causal", ["--causal"], AttentionOptions(causal: true), 2, 2),
        ("non-causal", ["--no-causal"], AttentionOptions(causal: false), 2, 2),
        ("window", ["--window", "17"], AttentionOptions(causal: true, window: 17), 2, 2),
        ("gqa", [], AttentionOptions(), 4, 1),
    ])
    func attentionMatchesFloat64Reference(_ name: String, _ flags: [String], _ options: AttentionOptions, _ Hq: Int, _ Hkv: Int) throws {
        let dir = try temporaryDirectory()
        let (input, t) = try writeInputs(dir, B: 2, T: 150, S: 150, Hq: Hq, Hkv: Hkv, D: 64, seed: 5)
        let want = try Attention.forward(q: t["q"]!, k: t["k"]!, v: t["v"]!, options: options, form: .reference)
        for form in ["flash", "reference", "split_kv:3"] {
            let output = dir.appendingPathComponent("out-\(form).safetensors").path
            let r = try runLinea(["op", "attention", "--inputs", input, "--output", output, "--form", form] + flags)
            #expect(r.code == 0, "\(name) \(form): \(r.err)")
            let got = try SafeTensors.read(path: output)
            #expect(got.keys.sorted() == ["lse", "o"])
            let eo = ErrorStats(got["o"]!, want.o), el = ErrorStats(got["lse"]!, want.lse)
            #expect(eo.relativeRMS <= 1e-5 && el.relativeRMS <= 1e-5, "\(name) \(form): o \(eo); lse \(el)")
        }
    }

    @Test func badInputsGetClearErrorsAndExitCodes() throws {
        let dir = try temporaryDirectory()
        let out = dir.appendingPathComponent("out.safetensors").path
        func run(_ tensors: [String: Tensor], _ extra: [String] = []) throws -> (Int32, String) {
            let path = dir.appendingPathComponent("bad.safetensors").path
            try SafeTensors.write(tensors, to: path)
            let r = try runLinea(["op", "attention", "--inputs", path, "--output", out] + extra)
            return (r.code, r.err)
        }
        let q = try Tensor.randomNormal([1, 8, 4, 16], seed: 1)
        let kv = try Tensor.randomNormal([1, 8, 4, 16], seed: 2)
        var (code, err) = try run(["q": try q.reshaped([8, 4, 16]), "k": kv, "v": kv])
        #expect(code == 1 && err.contains("q: expected shape [B, T, Hq, D]"), "\(err)")
        (code, err) = try run(["q": q, "k": try kv.reshaped([1, 8, 2, 32]), "v": kv])
        #expect(code == 1 && err.contains("k: expected shape"), "\(err)")
        let k3 = try Tensor.randomNormal([1, 8, 3, 16], seed: 3)
        (code, err) = try run(["q": q, "k": k3, "v": k3])
        #expect(code == 1 && err.contains("divisor of the 4 query heads"), "\(err)")
        (code, err) = try run(["q": q, "k": kv])
        #expect(code == 1 && err.contains("no tensor named 'v'"), "\(err)")
        (code, err) = try run(["q": q, "k": kv, "v": kv], ["--window", "0"])
        #expect(code == 2 && err.contains("--window"), "\(err)")
        (code, err) = try run(["q": q, "k": kv, "v": kv], ["--form", "magic"])
        #expect(code == 2 && err.contains("--form"), "\(err)")
        #expect(!FileManager.default.fileExists(atPath: out), "no output is written on failure")

        // A corrupt file: valid header length, garbage header.
        let corrupt = dir.appendingPathComponent("corrupt.safetensors").path
        var bytes = Data([16, 0, 0, 0, 0, 0, 0, 0])
        bytes.append(Data("{\"q\": {\"dtype\"".utf8))
        try bytes.write(to: URL(fileURLWithPath: corrupt))
        let r = try runLinea(["op", "attention", "--inputs", corrupt, "--output", out])
        #expect(r.code == 1 && r.err.contains(corrupt), "\(r.err)")
        let missing = try runLinea(["op", "attention", "--inputs", dir.appendingPathComponent("nope").path, "--output", out])
        #expect(missing.code == 1 && missing.err.contains("nope"), "\(missing.err)")
        let unknown = try runLinea(["op", "softmax2", "--inputs", corrupt, "--output", out])
        #expect(unknown.code == 2, "\(unknown.err)")
    }

    @Test func existingOutputSurvivesAFailedRun() throws {
        let dir = try temporaryDirectory()
        let out = dir.appendingPathComponent("keep.safetensors").path
        try Data("precious".utf8).write(to: URL(fileURLWithPath: out))
        let input = dir.appendingPathComponent("in.safetensors").path
        try SafeTensors.write(["q": try Tensor(zeros: [1, 2, 1, 4])], to: input)
        let r = try runLinea(["op", "attention", "--inputs", input, "--output", out])
        #expect(r.code == 1)
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "precious")
    }
}

@Suite struct RecurrenceOpTests {
    /// Every recurrence and every form through `linea op` against the in-process Float64 reference.
    @Test(arguments: RecurrentMechanism.allCases)
    func everyFormMatchesFloat64Reference(_ r: RecurrentMechanism) throws {
        let dir = try temporaryDirectory()
        let (B, T, H, K, V) = (2, 130, 2, 32, 48)
        var tensors = ["q": try Tensor.randomNormal([B, T, H, K], seed: 1),
                       "k": try Tensor.randomNormal([B, T, H, K], seed: 2, scale: 0.2),
                       "v": try Tensor.randomNormal([B, T, H, V], seed: 3),
                       "initial_state": try Tensor.randomNormal([B, H, K, V], seed: 4, scale: 0.1)]
        let needed = Recurrence.requiredInputs(r)
        if needed.contains("g") {
            tensors["g"] = try Tensor.randomUniform(r.gateKind == .vector ? [B, T, H, K] : [B, T, H], seed: 5, in: -3...(-1e-4))
        }
        if needed.contains("beta") { tensors["beta"] = try Tensor.randomUniform([B, T, H], seed: 6) }
        let input = dir.appendingPathComponent("in.safetensors").path
        try SafeTensors.write(tensors, to: input)
        let inputs = RecurrenceInputs(q: tensors["q"]!, k: tensors["k"]!, v: tensors["v"]!, g: tensors["g"], beta: tensors["beta"],
                                      initialState: tensors["initial_state"])
        let want = try Recurrence.forward(r, inputs, form: .reference)
        for form in ["reference", "recurrent", "chunked", "chunked:7"] {
            let output = dir.appendingPathComponent("out-\(form).safetensors").path
            let run = try runLinea(["op", r.rawValue, "--inputs", input, "--output", output, "--form", form, "--chunk-size", "32"])
            #expect(run.code == 0, "\(r) \(form): \(run.err)")
            let got = try SafeTensors.read(path: output)
            let eo = ErrorStats(got["o"]!, want.o), es = ErrorStats(got["final_state"]!, want.finalState)
            #expect(eo.relativeRMS <= 1e-5 && es.relativeRMS <= 1e-5, "\(r) \(form): o \(eo); final_state \(es)")
        }
        // A missing gate/beta file entry is named in the error.
        if let extra = needed.last, extra != "v" {
            tensors[extra] = nil
            try SafeTensors.write(tensors, to: input)
            let run = try runLinea(["op", r.rawValue, "--inputs", input, "--output", dir.appendingPathComponent("x").path])
            #expect(run.code == 1 && run.err.contains("no tensor named '\(extra)'"), "\(run.err)")
        }
    }
}

@Suite struct GroupedHeadsOpTests {
    /// Writes a file whose v, g, beta and initial_state have HV = 2H heads (q and k have H) and returns its path
    /// and tensors.
    static func writeGrouped(_ r: RecurrentMechanism, _ dir: URL, B: Int, T: Int, H: Int, HV: Int, K: Int, V: Int)
        throws -> (String, RecurrenceInputs) {
        let x = try RecurrenceInputs.random(r, B: B, T: T, H: H, HV: HV, K: K, V: V, seed: 17)
        var tensors = ["q": x.q, "k": x.k, "v": x.v, "initial_state": x.initialState!]
        tensors["g"] = x.g
        tensors["beta"] = x.beta
        let path = dir.appendingPathComponent("grouped-\(r.rawValue)-\(HV).safetensors").path
        try SafeTensors.write(tensors, to: path)
        return (path, x)
    }

    /// gated_delta_rule and simple_gla with grouped value heads, every form, against the in-process Float64 reference.
    @Test(arguments: [RecurrentMechanism.gatedDeltaRule, .simpleGLA])
    func everyFormMatchesFloat64Reference(_ r: RecurrentMechanism) throws {
        let dir = try temporaryDirectory()
        let (input, x) = try Self.writeGrouped(r, dir, B: 2, T: 100, H: 2, HV: 4, K: 32, V: 24)
        let want = try Recurrence.forward(r, x, form: .reference)
        #expect(want.o.shape == [2, 100, 4, 24])
        for form in ["reference", "recurrent", "chunked", "chunked:7"] {
            let output = dir.appendingPathComponent("out-\(form).safetensors").path
            let run = try runLinea(["op", r.rawValue, "--inputs", input, "--output", output, "--form", form, "--chunk-size", "32"])
            #expect(run.code == 0, "\(r) \(form): \(run.err)")
            let got = try SafeTensors.read(path: output)
            let eo = ErrorStats(got["o"]!, want.o), es = ErrorStats(got["final_state"]!, want.finalState)
            #expect(eo.relativeRMS <= 1e-5 && es.relativeRMS <= 1e-5, "\(r) \(form): o \(eo); final_state \(es)")
        }
    }

    /// kda's in-kernel activations from the flags (`--gate-in-kernel --beta-sigmoid`, with A_log and dt_bias read from the
    /// file) in every form against the in-process reference; a dt_bias of the wrong length exits 1 naming it, the flags
    /// on another op exit 2.
    @Test func kdaActivationFlags() throws {
        let dir = try temporaryDirectory()
        let x = try RecurrenceInputs.randomKDA(B: 1, T: 70, H: 1, HV: 2, K: 16, V: 8, seed: 3,
                                               activations: InKernelActivations(gateInKernel: true, betaSigmoid: true))
        var tensors = ["q": x.q, "k": x.k, "v": x.v, "g": x.g!, "beta": x.beta!, "A_log": x.aLog!, "dt_bias": x.dtBias!]
        let input = dir.appendingPathComponent("kda.safetensors").path
        try SafeTensors.write(tensors, to: input)
        var noState = x
        noState.initialState = nil
        let want = try Recurrence.forward(.kda, noState, form: .reference)
        let flags = ["--gate-in-kernel", "--beta-sigmoid"]
        for form in ["reference", "recurrent", "chunked", "step"] {
            let output = dir.appendingPathComponent("out-\(form).safetensors").path
            let run = try runLinea(["op", "kda", "--inputs", input, "--output", output, "--form", form, "--chunk-size", "32"] + flags)
            #expect(run.code == 0, "\(form): \(run.err)")
            let got = try SafeTensors.read(path: output)
            let eo = ErrorStats(got["o"]!, want.o), es = ErrorStats(got["final_state"]!, want.finalState)
            #expect(eo.relativeRMS <= 1e-5 && es.relativeRMS <= 1e-5, "\(form): o \(eo); final_state \(es)")
        }
        let output = dir.appendingPathComponent("out.safetensors").path
        tensors["dt_bias"] = try .randomNormal([31], seed: 1)
        try SafeTensors.write(tensors, to: input)
        let bad = try runLinea(["op", "kda", "--inputs", input, "--output", output] + flags)
        #expect(bad.code == 1 && bad.err.contains("dt_bias: expected shape [HV*K] = [32]"), "\(bad.err)")
        let other = try runLinea(["op", "gla", "--inputs", input, "--output", output, "--gate-in-kernel"])
        #expect(other.code == 2 && other.err.contains("kda only"), "\(other.err)")
        let positive = try runLinea(["op", "kda", "--inputs", input, "--output", output, "--gate-in-kernel", "--lower-bound", "1"])
        #expect(positive.code == 2 && positive.err.contains("lower_bound: expected a finite number < 0"), "\(positive.err)")
    }

    /// Value heads that are not a multiple of the q/k heads: exit 1, the error names v with what was expected.
    @Test func valueHeadsNotAMultipleFail() throws {
        let dir = try temporaryDirectory()
        let (input, _) = try Self.writeGrouped(.simpleGLA, dir, B: 1, T: 8, H: 2, HV: 3, K: 8, V: 4)
        let output = dir.appendingPathComponent("out.safetensors").path
        let run = try runLinea(["op", "simple_gla", "--inputs", input, "--output", output])
        #expect(run.code == 1 && run.err.contains("v: expected shape [1,8,HV,V] with HV a multiple of H = 2, got [1, 8, 3, 4]"), "\(run.err)")
        #expect(!FileManager.default.fileExists(atPath: output))
    }
}
