import Foundation

/// Settings a family's forms read, from `linea op`'s options, a verification case or a benchmark point; each family
/// reads those that apply to it and ignores the rest.
public struct OpOptions: Sendable, Equatable {
    /// Query scale (nil: 1/sqrt(K) or 1/sqrt(D)).
    public var scale: Float?
    /// Causal mask (attention families).
    public var causal = true
    /// Sliding window W, causal: query i sees keys j with i-W < j <= i (attention families).
    public var window: Int?
    /// linear_attn: divide by the normalizer (fla's `normalize=True`).
    public var normalize = false
    /// Delta rules: L2-normalize q and k inside the op.
    public var useQKL2Norm = false
    /// kda: fla's in-kernel activations of a raw gate (with the inputs A_log and dt_bias) and of beta logits.
    public var activations = InKernelActivations()
    /// Check the inputs' values (gates, betas, finiteness) before running; benchmarks turn it off to time the kernel.
    public var validate = true
    /// Write NaN or infinite outputs instead of throwing.
    public var allowNonFiniteOutputs = false
    /// The dtype of the float outputs other than lse and states (f32, bf16 or f16).
    public var outputDType: DType = .float32
    /// Settings of one family by name (`linea op --set NAME=VALUE`), e.g. `block_rows` of block_sparse.
    public var settings: [String: Int] = [:]

    /// Defaults: causal, validated, f32 outputs. O(1).
    public init() {}
}

/// A tensor a family reads, as `linea op` finds it in its input file.
public struct OpInput: Sendable, Equatable {
    /// Its name in the file (fla's names: q, k, v, g, beta, initial_state).
    public let name: String
    /// Whether a call may leave it out.
    public let optional: Bool

    /// An input called `name`. O(1).
    public init(_ name: String, optional: Bool = false) {
        self.name = name
        self.optional = optional
    }
}

/// One point of a family's table: a label, the inputs it generates (sizes and value ranges), the options, the forms
/// that take it on each device, the tolerances and the FLOP count.
public struct OpCase: Sendable {
    /// Sizes and ranges in words, e.g. `B3 T63 H2 K60 V32 g in [-20, 0)`.
    public let label: String
    /// The options every form and the reference run with.
    public var options: OpOptions
    /// Forms on the CPU (nil: all of the family's).
    public var cpuForms: [String]?
    /// Forms on a GPU (nil: all of the family's; empty: a shape the GPU kernels do not take).
    public var gpuForms: [String]?
    /// Pass when relative RMS error <= this, for f32 inputs and for 16-bit ones.
    public var tolerance: (f32: Double, half: Double) = (1e-5, 2e-3)
    /// Floating-point operations of the fast form (benchmarks' GFLOP/s).
    public let flops: Double
    /// The inputs from a seed, as host Float32 tensors (a mask as 0 / 1).
    public let makeInputs: @Sendable (UInt64) throws -> [String: Tensor]

    /// A case; see the properties. O(1).
    public init(label: String, options: OpOptions = OpOptions(), cpuForms: [String]? = nil, gpuForms: [String]? = nil, flops: Double = 0,
                makeInputs: @escaping @Sendable (UInt64) throws -> [String: Tensor]) {
        self.label = label
        self.options = options
        self.cpuForms = cpuForms
        self.gpuForms = gpuForms
        self.flops = flops
        self.makeInputs = makeInputs
    }

    /// The tolerance for inputs of `dtype`. O(1).
    public func tolerance(_ dtype: DType) -> Double { dtype == .float32 ? tolerance.f32 : tolerance.half }
}

/// The size of a benchmark point: B sequences of T tokens, H heads of dimension D.
public struct BenchSize: Sendable, Codable, Equatable {
    /// Batch, length, heads, head dimension.
    public let B: Int, T: Int, H: Int, D: Int
    /// block_sparse: the share of blocks its mask keeps (nil: the family's default).
    public var density: Float? = nil
    /// block_sparse: the mask's block rows = block keys (nil: the family's default).
    public var blockSize: Int? = nil

    /// A size. O(1).
    public init(B: Int, T: Int, H: Int, D: Int) {
        (self.B, self.T, self.H, self.D) = (B, T, H, D)
    }
}

/// A family as `linea op`, `linea verify`, `linea bench` and the tests see it: its inputs and outputs, its forms on
/// each device, its verification cases and benchmark points, its Float64 reference on host tensors and its forms run
/// through the dispatch. Adding a family is one conforming type in the family's folder and one line in
/// `OpFamilies.all`; the command line and the tests pick it up from there.
public protocol OpFamily: Sendable {
    /// The name on the command line, e.g. `gated_delta_rule`.
    var name: String { get }
    /// One line on what it computes.
    var summary: String { get }
    /// The tensors it reads, in order.
    var inputs: [OpInput] { get }
    /// The tensors it writes, in order (the outputs compared against the reference).
    var outputs: [String] { get }
    /// The forms verified and timed on `device`, the default first (`reference` runs on the CPU besides).
    func forms(on device: Device) -> [String]
    /// The verification grid: awkward sizes, value ranges and options.
    var cases: [OpCase] { get }
    /// Sequence lengths `linea bench` times by default on `device`.
    func benchLengths(on device: Device) -> [Int]
    /// The benchmark point of `size` for `form`, with inputs of `dtype`.
    func benchCase(_ size: BenchSize, form: String, dtype: DType) throws -> OpCase
    /// The dtype input `name` is uploaded in when the compute dtype is `dtype` and the form `form`.
    func inputDType(_ name: String, form: String, compute dtype: DType) -> DType
    /// Throws `LineaError.invalidArgument` naming the option (`--form`, `--window`...) that `form` and `options` do not fit.
    func check(form: String, options: OpOptions) throws
    /// Checks host inputs' shapes and values as the CPU forms do before running (gates, betas, ranges that overflow
    /// Float32), for inputs bound for a GPU, whose kernels check only shapes. O(inputs).
    func checkValues(_ inputs: [String: Tensor], form: String, options: OpOptions) throws
    /// The Float64 reference on host tensors (inputs by name; outputs by name).
    func reference(_ inputs: [String: Tensor], options: OpOptions) throws -> [String: Tensor]
    /// Runs `form` where `inputs` live (all on one device), through the dispatch; outputs on that device.
    func run(_ form: String, _ inputs: [String: DeviceTensor], options: OpOptions) throws -> [String: DeviceTensor]
}

/// Every family, and the harness that checks a case of one against its reference on any device.
public enum OpFamilies {
    /// Every family, in `linea list`'s order.
    public static let all: [any OpFamily] = [AttentionFamily(), BlockSparseFamily()] + RecurrentMechanism.allCases.map(RecurrenceFamily.init)
        + [SelectiveScanFamily()]
        + [NeighborhoodFamily()]
        + [LongConvFamily()]
        + FeatureMapKind.allCases.map(FeatureMapFamily.init)

    /// The family called `name`; throws naming `argument` and listing the known names. O(families).
    public static func named(_ name: String, argument: String = "name") throws -> any OpFamily {
        guard let found = all.first(where: { $0.name == name }) else {
            throw LineaError.invalidArgument(argument: argument, expected: "one of " + all.map(\.name).joined(separator: ", "),
                                             actual: "'\(name)'")
        }
        return found
    }
}

/// The errors of one form on one case against the reference.
public struct OpCaseResult: Sendable {
    /// The form and the case's label.
    public let form: String, label: String
    /// rel-RMS and max-abs error of each output.
    public let errors: [(name: String, stats: ErrorStats)]
    /// The tolerance it is held to (the case's for its dtype unless changed).
    public var tolerance: Double

    /// Every output within the tolerance (NaN fails).
    public var passed: Bool { errors.allSatisfy { $0.stats.relativeRMS <= tolerance } }
}

extension OpFamily {
    /// `x[name]`, or an error naming the input this family is missing. O(1).
    func need<T>(_ x: [String: T], _ name: String) throws -> T {
        guard let found = x[name] else {
            throw LineaError.invalidArgument(argument: name, expected: "an input tensor \(name) for \(self.name)", actual: "none")
        }
        return found
    }

    /// The forms `c` runs in on `device`. O(forms).
    public func forms(of c: OpCase, on device: Device) -> [String] {
        (device == .cpu ? c.cpuForms : c.gpuForms) ?? forms(on: device)
    }

    /// `inputs` (host tensors) on `device`, each in `inputDType(name, form:, compute: dtype)`; an integer dtype
    /// (a mask) takes the values as integers. O(elements).
    public func upload(_ inputs: [String: Tensor], form: String, dtype: DType, on device: Device) throws -> [String: DeviceTensor] {
        var result: [String: DeviceTensor] = [:]
        for (name, tensor) in inputs {
            let type = inputDType(name, form: form, compute: dtype)
            result[name] = type.isFloatingPoint ? try DeviceTensor(tensor, dtype: type, on: device)
                : try DeviceTensor(integers: tensor.scalars.map { Int($0) }, shape: tensor.shape, dtype: type, on: device)
        }
        return result
    }

    /// Case `c` in `form` on `device` with inputs of `dtype`, against the Float64 reference on the same inputs rounded
    /// as uploaded (so only the form's own error counts). O(the reference).
    public func check(_ c: OpCase, form: String, on device: Device, dtype: DType, seed: UInt64) throws -> OpCaseResult {
        let inputs = try c.makeInputs(seed)
        var seen: [String: Tensor] = [:]
        for (name, tensor) in inputs {
            let type = inputDType(name, form: form, compute: dtype)
            seen[name] = type == .float32 || !type.isFloatingPoint ? tensor : try DeviceTensor(tensor, dtype: type).host()
        }
        let want = try reference(seen, options: c.options)
        let got = try run(form, upload(inputs, form: form, dtype: dtype, on: device), options: c.options)
        let errors = try outputs.map { name in
            guard let g = got[name], let w = want[name] else {
                throw LineaError.unavailable(what: "\(self.name) \(form)", reason: "no output \(name) from the form or the reference")
            }
            return (name, ErrorStats(try g.host(), w))
        }
        return OpCaseResult(form: form, label: c.label, errors: errors, tolerance: c.tolerance(dtype))
    }
}
