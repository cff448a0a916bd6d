import Foundation
import Linea
import LineaLM
import Testing

/// The built-in demo model (Models/demo, trained by scripts/train_demo.py): Linea's perplexity on the held-out text,
/// computed by the procedure perplexity.json states, equals the training framework's.
@Suite struct DemoModelTests {
    static let demo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Models/demo")

    @Test func heldOutPerplexityEqualsTransformers() throws {
        let expected = try JSONSerialization.jsonObject(with: Data(contentsOf: Self.demo.appendingPathComponent("perplexity.json"))) as! [String: Any]
        let (count, window) = (expected["heldout_tokens"] as! Int, expected["window"] as! Int)
        let text = try String(contentsOf: Self.demo.appendingPathComponent("heldout.txt"), encoding: .utf8)
        let tokenizer = try Tokenizer(directory: Self.demo)
        let ids = Array(tokenizer.encode(text, addSpecialTokens: false).prefix(count))
        #expect(ids.count == count)
        let model = try LoadedModel.load(directory: Self.demo.path).model
        var total = 0.0, predicted = 0
        for start in stride(from: 0, to: ids.count - window + 1, by: window) {
            let piece = Array(ids[start..<(start + window)])
            let logits = try model.forward(DeviceTensor(integers: piece, shape: [1, window]), cache: model.makeCache(batch: 1, capacity: window),
                                           lastOnly: false).host().scalars
            let vocab = model.vocabularySize
            for t in 0..<(window - 1) {
                let row = logits[(t * vocab)..<((t + 1) * vocab)].map(Double.init)
                let top = row.max()!
                let logSum = top + log(row.reduce(0) { $0 + exp($1 - top) })
                total += logSum - row[piece[t + 1]]
                predicted += 1
            }
        }
        let perplexity = exp(total / Double(predicted))
        let want = expected["perplexity"] as! Double
        #expect(predicted == expected["predicted_tokens"] as! Int)
        #expect(abs(perplexity - want) / want < 1e-4, "Linea \(perplexity), transformers \(want)")
    }

    /// The quick start's command: real text comes out of the demo model.
    @Test func greedyContinuationIsText() throws {
        let loaded = try LoadedModel.load(directory: Self.demo.path)
        let tokenizer = try Tokenizer(directory: Self.demo)
        let ids = try Generator(model: loaded.model, eosTokenIDs: loaded.eosTokenIDs)
            .generate(prompt: tokenizer.encode("In the beginning", addSpecialTokens: false), maxTokens: 12).ids
        let text = try tokenizer.decode(ids, skipSpecialTokens: true)
        #expect(text.split(separator: " ").count >= 5, "\(text)")
    }
}
