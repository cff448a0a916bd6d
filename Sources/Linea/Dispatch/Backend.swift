import Foundation

/// Whether a backend takes an op at the shapes and dtypes of one call, with the reason when it does not.
public enum Support: Sendable, Equatable {
    /// The backend runs the call.
    case supported
    /// The backend refuses the call; the text says why (e.g. "K = 512: the GPU kernels take K <= 256").
    case unsupported(String)
}

/// One op with all its tensors, inputs and preallocated outputs, as a backend receives it.
public protocol OpCall: Sendable {
    /// The op's name in messages, e.g. `gated_delta_rule step`.
    var name: String { get }
    /// Calls `body` with every tensor of the call and its argument name, inputs first (absent optional inputs
    /// skipped). Allocation-free, so that a decode loop's dispatch allocates nothing.
    func forEachTensor(_ body: (_ name: String, _ tensor: DeviceTensor) throws -> Void) rethrows
}

/// A device's memory, transfers and kernels. The CPU backend is always registered; LineaCUDA registers one per
/// GPU (`CUDADeviceBackend.register`), so Linea itself never links CUDA.
public protocol Backend: AnyObject, Sendable {
    /// The device this backend owns.
    var device: Device { get }
    /// `byteCount` bytes of zeroed memory on the device.
    func allocate(byteCount: Int) throws -> TensorStorage
    /// `byteCount` bytes whose contents are undefined, for outputs an op writes whole (no fill to pay for).
    func allocateUninitialized(byteCount: Int) throws -> TensorStorage
    /// Copies `source` into `destination` (same shape and dtype; one of them on this device, the other on it or on
    /// the CPU). Returns once the bytes may be read on the host when `destination` is on the CPU.
    func copy(_ source: DeviceTensor, into destination: DeviceTensor) throws
    /// Whether `call` runs here, with the reason when not (ggml's `supports_op`). O(1).
    func supports<Call: OpCall>(_ call: Call) -> Support
    /// Runs `call` (already checked by `supports`); outputs are written into the call's output tensors.
    func execute<Call: OpCall>(_ call: Call) throws
    /// Waits until every queued op of this backend has finished.
    func synchronize() throws
}

extension Backend {
    /// Zeroed memory unless the backend has a cheaper way (the CPU's fill costs little next to any op). O(byteCount).
    public func allocateUninitialized(byteCount: Int) throws -> TensorStorage { try allocate(byteCount: byteCount) }
}

/// The registered backends, and the one dispatch every public op goes through.
public enum Backends {
    /// `LINEA_POISON_UNINITIALIZED=1`: every backend fills the outputs it allocates uninitialized with 0xFF bytes (NaN in
    /// every float dtype), so a test run catches an element an op forgot to write. Read once.
    public static let poisonUninitialized = ProcessInfo.processInfo.environment["LINEA_POISON_UNINITIALIZED"] == "1"

    private static let registry = LockedValue<[Device: any Backend]>([.cpu: CPUBackend()])

    /// Adds (or replaces) the backend of `backend.device`. O(1).
    public static func register(_ backend: any Backend) {
        registry.update { $0[backend.device] = backend }
    }

    /// Every registered device, the CPU first. O(devices).
    public static var devices: [Device] {
        registry.value.keys.sorted { $0.description < $1.description }
    }

    /// The backend of `device`; throws naming `argument` when none is registered (a GPU without LineaCUDA's
    /// registration, or a device ordinal that does not exist). O(1).
    public static func backend(for device: Device, argument: String = "device") throws -> any Backend {
        if let found = registry.value[device] { return found }
        throw LineaError.unavailable(
            what: "\(argument) on \(device)",
            reason: "no backend registered for \(device) (registered: \(devices.map(\.description).joined(separator: ", "))); "
                + "for a GPU, call CUDADeviceBackend.register() from LineaCUDA first")
    }

    /// Runs `call` where its tensors live: all on one device (else an error naming the argument that differs), a
    /// backend that takes it (else an error with its reason; never a silent transfer). O(tensors) plus the op.
    public static func run(_ call: some OpCall) throws {
        var first: (name: String, device: Device)?
        try call.forEachTensor { name, tensor in
            guard let (firstName, device) = first else { return first = (name, tensor.device) }
            guard tensor.device == device else {
                throw LineaError.invalidArgument(argument: name, expected: "a tensor on \(device), where \(firstName) is", actual: "a tensor on \(tensor.device)")
            }
        }
        guard let first else { return }
        let backend = try backend(for: first.device, argument: first.name)
        if case let .unsupported(reason) = backend.supports(call) {
            throw LineaError.unavailable(what: "\(call.name) on \(first.device)", reason: reason)
        }
        try Profile.measure(Profile.key(call), on: first.device) { try backend.execute(call) }
    }
}
