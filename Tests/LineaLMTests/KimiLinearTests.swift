import Foundation
import Linea
import LineaLM
import Testing

/// kimi_linear beyond the parity fixture (which ModelParityTests runs): the config as Moonshot's checkpoints write it
/// without the fields transformers adds, the weights in transformers' in-memory layout, and errors naming fields.
@Suite struct KimiLinearTests {
    static let source = ModelParityTests.fixtures.appendingPathComponent("kimi_linear")

    /// A copy of the kimi_linear fixture with `change` applied to its tensors and config.
    static func mutated(_ change: (inout [String: Tensor], inout [String: Any]) throws -> Void) throws -> String {
        try ModelLoaderErrorTests.mutatedLlama("kimi_linear", change)
    }

    static func logits48(_ dir: String) throws -> Double {
        let loaded = try LoadedModel.load(directory: dir)
        let expected = try SafeTensorsFile(path: source.appendingPathComponent("expected.safetensors").path)
        let logits = try loaded.model.forward(expected.deviceTensor("input_ids_48"), cache: loaded.model.makeCache(batch: 1, capacity: 48),
                                              lastOnly: false).host()
        return ErrorStats(logits, try expected.tensor("logits_48")).relativeRMS
    }

    /// Every field of the fixture's config is read or known to be irrelevant.
    @Test func fixtureConfigIsReadWithoutWarnings() throws {
        let loaded = try ModelParityTests.load("kimi_linear").0
        #expect(loaded.warnings.isEmpty, "\(loaded.warnings)")
    }

    /// Moonshot's config alone (1-indexed linear_attn_config layers, first_k_dense_replace, no layer_types,
    /// mlp_layer_types or flat linear_* fields) gives the fixture's logits.
    @Test func moonshotConfigWithoutTransformersFields() throws {
        let dir = try Self.mutated { _, c in
            for key in ["layer_types", "mlp_layer_types", "linear_num_heads", "linear_head_dim", "linear_conv_kernel_dim", "head_dim", "qk_head_dim"] {
                c[key] = nil
            }
            #expect(c["first_k_dense_replace"] != nil && c["linear_attn_config"] != nil)
            // Fields of Moonshot's config that change nothing here.
            c["mla_use_nope"] = true; c["use_grouped_topk"] = true; c["moe_layer_freq"] = 1; c["rope_theta"] = 10000.0
            c["num_nextn_predict_layers"] = 0; c["moe_router_activation_func"] = "sigmoid"
        }
        #expect(try LoadedModel.load(directory: dir).warnings.isEmpty)
        #expect(try Self.logits48(dir) <= 1e-5)
    }

    /// The weights as transformers holds them in memory (mlp., forget_gate., one conv1d over [q, k, v], experts stacked
    /// into gate_up_proj and down_proj) give the logits of Moonshot's layout.
    @Test func transformersWeightLayoutLoadsLikeMoonshots() throws {
        let dir = try Self.mutated { t, _ in
            var out: [String: Tensor] = [:]
            for (name, tensor) in t {
                var renamed = name.replacingOccurrences(of: ".block_sparse_moe.", with: ".mlp.")
                for leaf in ["f_a_proj.", "f_b_proj.", "dt_bias", "A_log"] {
                    renamed = renamed.replacingOccurrences(of: "self_attn." + leaf, with: "self_attn.forget_gate." + leaf)
                }
                out[renamed] = tensor
            }
            for layer in 0..<4 {
                let a = "model.layers.\(layer).self_attn."
                if let q = out.removeValue(forKey: a + "q_conv1d.weight") {
                    let k = out.removeValue(forKey: a + "k_conv1d.weight")!, v = out.removeValue(forKey: a + "v_conv1d.weight")!
                    out[a + "conv1d.weight"] = try Tensor(shape: [3 * q.shape[0], 1, q.shape[2]], scalars: q.scalars + k.scalars + v.scalars)
                }
                let e = "model.layers.\(layer).mlp.experts."
                var gateUp: [Float] = [], down: [Float] = [], n = 0, width = 0, hidden = 0
                while let w1 = out.removeValue(forKey: e + "\(n).w1.weight") {
                    (width, hidden) = (w1.shape[0], w1.shape[1])
                    gateUp += w1.scalars + out.removeValue(forKey: e + "\(n).w3.weight")!.scalars
                    down += out.removeValue(forKey: e + "\(n).w2.weight")!.scalars
                    n += 1
                }
                if n > 0 {
                    out[e + "gate_up_proj"] = try Tensor(shape: [n, 2 * width, hidden], scalars: gateUp)
                    out[e + "down_proj"] = try Tensor(shape: [n, hidden, width], scalars: down)
                }
            }
            #expect(out.keys.contains { $0.hasSuffix("experts.gate_up_proj") } && out.keys.contains { $0.hasSuffix("self_attn.conv1d.weight") })
            t = out
        }
        #expect(try Self.logits48(dir) <= 1e-5)
    }

    /// Config values it cannot honor, and weights of the wrong shape, are errors naming the field or tensor.
    @Test func badConfigsAndWeightsAreNamed() throws {
        func moonshot(_ c: inout [String: Any]) { c["layer_types"] = nil; c["mlp_layer_types"] = nil }
        let cases: [(String, (inout [String: Any]) -> Void)] = [
            ("kda_layers", { c in moonshot(&c); c["linear_attn_config"] = ["kda_layers": [0, 1, 2], "full_attn_layers": [4], "head_dim": 8, "num_heads": 2] }),
            ("full_attn_layers", { c in moonshot(&c); c["linear_attn_config"] = ["kda_layers": [1, 2, 3], "full_attn_layers": [5], "head_dim": 8, "num_heads": 2] }),
            ("linear_attn_config", { c in moonshot(&c); c["linear_attn_config"] = ["kda_layers": [1, 2], "full_attn_layers": [4], "head_dim": 8, "num_heads": 2] }),
            ("num_expert_group", { c in c["num_expert_group"] = 4 }),
            ("topk_group", { c in c["topk_group"] = 3 }),
            ("num_experts_per_token", { c in c["num_experts_per_token"] = 4 }),
            ("num_key_value_heads", { c in c["num_key_value_heads"] = 2 }),
            ("moe_router_activation_func", { c in c["moe_router_activation_func"] = "softmax" }),
            ("mlp_layer_types", { c in c["mlp_layer_types"] = ["dense", "moe", "sparse", "sparse"] }),
            ("hidden_act", { c in c["hidden_act"] = "gelu" }),
            ("mla_use_nope", { c in c["mla_use_nope"] = false }),
            ("gate_lower_bound", { c in moonshot(&c)
                c["linear_attn_config"] = ["kda_layers": [1, 2, 3], "full_attn_layers": [4], "head_dim": 8, "num_heads": 2, "gate_lower_bound": -5.0] }),
        ]
        for (field, change) in cases {
            let dir = try Self.mutated { _, c in change(&c) }
            let text = ModelLoaderErrorTests.message { _ = try LoadedModel.load(directory: dir) }
            #expect(text.contains(field), "\(field): \(text)")
        }
        let dtBias = try Self.mutated { t, _ in t["model.layers.1.self_attn.dt_bias"] = try Tensor(zeros: [8]) }
        #expect(ModelLoaderErrorTests.message { _ = try LoadedModel.load(directory: dtBias) }.contains("model.layers.1.self_attn.dt_bias"))
        let kvB = try Self.mutated { t, _ in t["model.layers.3.self_attn.kv_b_proj.weight"] = nil }
        #expect(ModelLoaderErrorTests.message { _ = try LoadedModel.load(directory: kvB) }.contains("model.layers.3.self_attn.kv_b_proj.weight"))
    }
}
