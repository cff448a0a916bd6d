import Foundation
import Linea
import Testing

/// The selective scan's argument checks (its forms against the reference run in OpCaseTests with the other families).
@Suite struct SelectiveScanTests {
    static func inputs(B bc: [Int] = [1, 8, 5], C cc: [Int]? = nil, bias: Int = 4) throws -> [String: DeviceTensor] {
        [
            "u": try DeviceTensor(Tensor.randomNormal([1, 4, 5], seed: 1)), "delta": try DeviceTensor(Tensor.randomUniform([1, 4, 5], seed: 2)),
            "A": try DeviceTensor(Tensor(zeros: [4, 8], value: -0.5)), "B": try DeviceTensor(Tensor.randomNormal(bc, seed: 3)),
            "C": try DeviceTensor(Tensor.randomNormal(cc ?? bc, seed: 4)), "delta_bias": try DeviceTensor(Tensor(zeros: [bias])),
        ]
    }

    static func run(_ x: [String: DeviceTensor], validate: Bool = true) throws {
        _ = try SelectiveScan.forward(u: x["u"]!, delta: x["delta"]!, A: x["A"]!, B: x["B"]!, C: x["C"]!, deltaBias: x["delta_bias"],
                                      deltaSoftplus: true, validate: validate)
    }

    @Test func badArgumentsAreNamed() throws {
        try Self.run(try Self.inputs())
        var x = try Self.inputs()
        x["A"] = try DeviceTensor(Tensor(zeros: [4, 8], value: 0.25))
        #expect(throws: LineaError.invalidArgument(argument: "A", expected: "values <= 0 (decays; a positive A grows the state)", actual: "0.25 at index 0")) {
            try Self.run(x)
        }
        try Self.run(x, validate: false)  // unchecked, as a benchmark runs it
        #expect(throws: LineaError.shapeMismatch(argument: "C", expected: "2 groups (as B)", actual: "[1, 4, 8, 5]")) {
            try Self.run(try Self.inputs(B: [1, 2, 8, 5], C: [1, 4, 8, 5]))
        }
        #expect(throws: LineaError.shapeMismatch(argument: "B", expected: "[1, 8, 5] or [1, G, 8, 5] with G dividing D = 4", actual: "[1, 3, 8, 5]")) {
            try Self.run(try Self.inputs(B: [1, 3, 8, 5]))
        }
        #expect(throws: LineaError.shapeMismatch(argument: "delta_bias", expected: "[4]", actual: "[5]")) { try Self.run(try Self.inputs(bias: 5)) }
        x = try Self.inputs()
        x["u"] = try DeviceTensor(Tensor.randomNormal([4, 5], seed: 1))
        #expect(throws: LineaError.shapeMismatch(argument: "u", expected: "[B, D, L]", actual: "[4, 5]")) { try Self.run(x) }
        x = try Self.inputs()
        x["delta"] = try DeviceTensor(Tensor(shape: [1, 4, 5], scalars: [Float](repeating: .nan, count: 20)))
        #expect(throws: LineaError.self) { try Self.run(x) }
    }
}
