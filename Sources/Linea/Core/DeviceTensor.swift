#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Memory holding tensor elements on one device, freed when the last tensor viewing it goes away.
/// Reference semantics: every view of a storage sees writes made through the others (a KV cache, a state).
public final class TensorStorage: @unchecked Sendable {
    /// The device the bytes live on.
    public let device: Device
    /// Size in bytes.
    public let byteCount: Int
    /// Host address (`.cpu`) or device address (`CUdeviceptr`, `.cuda`) of the first byte; 0 when empty.
    public let address: UInt
    /// False for memory that must not be written (a read-only file mapping).
    public let isWritable: Bool
    /// Keeps alive whatever owns the bytes (a mapped file, a device buffer).
    private let owner: AnyObject?
    /// Frees the bytes, when this storage owns them.
    private let release: (@Sendable () -> Void)?

    /// Wraps memory at `address` on `device`; `owner` is kept alive and `release` runs when the storage goes. O(1).
    public init(device: Device, address: UInt, byteCount: Int, isWritable: Bool = true, owner: AnyObject? = nil,
                release: (@Sendable () -> Void)? = nil) {
        self.device = device
        self.address = address
        self.byteCount = byteCount
        self.isWritable = isWritable
        self.owner = owner
        self.release = release
    }

    deinit { release?() }

    /// `byteCount` bytes of host memory, 64-byte aligned, zeroed unless `zeroed` is false (the caller then writes
    /// every byte); large buffers are reused from `HostBuffers`. Throws `overMemoryLimit` past the budget or when the
    /// allocation fails. O(byteCount) when zeroed, else O(1).
    public static func host(byteCount: Int, what: String = "tensor", zeroed: Bool = true) throws -> TensorStorage {
        try MemoryBudget.check([.init(what, [byteCount], elementBytes: 1)])
        var raw = HostBuffers.shared.take(byteCount)
        if raw == nil {
            guard posix_memalign(&raw, 64, max(byteCount, 64)) == 0, raw != nil else {
                throw LineaError.overMemoryLimit(what: "\(what): allocation failed", neededBytes: byteCount, limitBytes: MemoryBudget.limit)
            }
        }
        if zeroed { Allocation.zeroFill(raw!, bytes: byteCount) }
        let address = UInt(bitPattern: raw!)
        return TensorStorage(device: .cpu, address: address, byteCount: byteCount) {
            HostBuffers.shared.give(address, byteCount: byteCount)
        }
    }

    /// The host address as a pointer; nil for device memory or an empty storage.
    public var hostPointer: UnsafeMutableRawPointer? {
        device == .cpu ? UnsafeMutableRawPointer(bitPattern: address) : nil
    }
}

/// A strided view of typed elements in a `TensorStorage` on some device: shape, dtype, strides and offset in elements.
/// Views (`narrowed`, `selected`, `reshaped`) share the storage; `to(_:)` and `host()` are the only transfers.
public struct DeviceTensor: Sendable, CustomStringConvertible {
    /// The memory this tensor views.
    public let storage: TensorStorage
    /// Element type.
    public let dtype: DType
    /// Extent of each dimension, outermost first.
    public let shape: [Int]
    /// Distance in elements between neighbours along each dimension.
    public let strides: [Int]
    /// Index of the first element in the storage, in elements.
    public let offset: Int

    /// Internal: a view already checked against its storage.
    init(storage: TensorStorage, dtype: DType, shape: [Int], strides: [Int], offset: Int) {
        self.storage = storage
        self.dtype = dtype
        self.shape = shape
        self.strides = strides
        self.offset = offset
    }

    /// A contiguous tensor over the whole of `storage`; throws unless `shape` and `dtype` fill it exactly. O(rank).
    public init(storage: TensorStorage, dtype: DType, shape: [Int]) throws {
        try Tensor.checkShape(shape)
        let bytes = shape.reduce(1, *) * dtype.byteCount
        guard bytes <= storage.byteCount else {
            throw LineaError.shapeMismatch(argument: "shape", expected: "at most \(storage.byteCount) bytes of storage",
                                           actual: "\(shape) of \(dtype.shortName) (\(bytes) bytes)")
        }
        self.init(storage: storage, dtype: dtype, shape: shape, strides: DeviceTensor.contiguousStrides(shape), offset: 0)
    }

    /// The device the elements live on.
    public var device: Device { storage.device }
    /// Number of dimensions.
    public var rank: Int { shape.count }
    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }
    /// Bytes the elements take when packed.
    public var byteCount: Int { count * dtype.byteCount }
    /// Address of the first element (host pointer on the CPU, `CUdeviceptr` on CUDA).
    public var address: UInt { storage.address + UInt(offset * dtype.byteCount) }
    /// True when the elements are packed row-major with no gaps (a view of a batch slice or of leading rows may be).
    public var isContiguous: Bool {
        var running = 1
        for axis in stride(from: shape.count - 1, through: 0, by: -1) where shape[axis] != 1 {
            if shape[axis] == 0 { return true }
            if strides[axis] != running { return false }
            running *= shape[axis]
        }
        return true
    }

    public var description: String {
        "DeviceTensor(\(shape), \(dtype.shortName), \(device)\(isContiguous ? "" : ", strided"))"
    }

    /// Row-major strides of `shape`. O(rank).
    static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var result = [Int](repeating: 1, count: shape.count), running = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            result[i] = running
            running *= max(shape[i], 1)
        }
        return result
    }

    // MARK: Creation

    /// A new zero-filled tensor on `device` (through that device's backend). O(bytes).
    public static func zeros(_ shape: [Int], dtype: DType = .float32, on device: Device = .cpu) throws -> DeviceTensor {
        try Tensor.checkShape(shape)
        let backend = try Backends.backend(for: device, argument: "device")
        let storage = try Profile.measure("allocate zeroed", on: device) { try backend.allocate(byteCount: shape.reduce(1, *) * dtype.byteCount) }
        return DeviceTensor(storage: storage, dtype: dtype, shape: shape, strides: contiguousStrides(shape), offset: 0)
    }

    /// A new tensor on `device` whose elements are undefined until written: for an op's outputs, which it writes
    /// whole (a GPU then skips the fill). O(1) on a GPU.
    public static func uninitialized(_ shape: [Int], dtype: DType = .float32, on device: Device = .cpu) throws -> DeviceTensor {
        try Tensor.checkShape(shape)
        let backend = try Backends.backend(for: device, argument: "device")
        let storage = try Profile.measure("allocate", on: device) { try backend.allocateUninitialized(byteCount: shape.reduce(1, *) * dtype.byteCount) }
        return DeviceTensor(storage: storage, dtype: dtype, shape: shape, strides: contiguousStrides(shape), offset: 0)
    }

    /// `tensor`'s elements stored as `dtype` (a float type; 16-bit types round to nearest even) on `device`. O(n).
    public init(_ tensor: Tensor, dtype: DType = .float32, on device: Device = .cpu) throws {
        guard dtype.isFloatingPoint, dtype != .float64 else {
            throw LineaError.invalidArgument(argument: "dtype", expected: "f32, bf16 or f16 for a Float32 tensor", actual: dtype.shortName)
        }
        let host = try DeviceTensor.zeros(tensor.shape, dtype: dtype)
        try host.copy(from: tensor)
        self = try host.to(device)
    }

    /// Integers (token ids, positions; a mask) stored as `dtype` (i32, i64, u8 or bool) in `shape` on `device`;
    /// throws for a value the dtype cannot hold. O(n).
    public init(integers: [Int], shape: [Int], dtype: DType = .int64, on device: Device = .cpu) throws {
        guard !dtype.isFloatingPoint else {
            throw LineaError.invalidArgument(argument: "dtype", expected: "i32, i64, u8 or bool for integers", actual: dtype.shortName)
        }
        try Tensor.checkShape(shape)
        guard shape.reduce(1, *) == integers.count else {
            throw LineaError.shapeMismatch(argument: "integers", expected: "\(shape.reduce(1, *)) values for shape \(shape)",
                                           actual: "\(integers.count) values")
        }
        let host = try DeviceTensor.zeros(shape, dtype: dtype)
        if let p = host.storage.hostPointer {
            for (i, value) in integers.enumerated() {
                switch dtype {
                case .int64: p.storeBytes(of: Int64(value), toByteOffset: 8 * i, as: Int64.self)
                case .int32:
                    guard let narrow = Int32(exactly: value) else {
                        throw LineaError.invalidArgument(argument: "integers", expected: "values that fit i32", actual: "\(value) at index \(i)")
                    }
                    p.storeBytes(of: narrow, toByteOffset: 4 * i, as: Int32.self)
                default:  // u8, bool (a mask)
                    guard let narrow = UInt8(exactly: value), dtype != .bool || narrow <= 1 else {
                        throw LineaError.invalidArgument(argument: "integers", expected: dtype == .bool ? "0 or 1" : "values in 0...255",
                                                         actual: "\(value) at index \(i)")
                    }
                    p.storeBytes(of: narrow, toByteOffset: i, as: UInt8.self)
                }
            }
        }
        self = try host.to(device)
    }

    /// The elements of a packed f32 host tensor, read in place (package: the CPU kernels' view). O(1).
    package var floats: UnsafeBufferPointer<Float> {
        precondition(device == .cpu && dtype == .float32 && isContiguous, "floats: a packed f32 host tensor")
        return UnsafeBufferPointer(start: UnsafePointer(bitPattern: address), count: count)
    }

    /// The elements of a packed f32 host tensor, written in place. O(1).
    package var mutableFloats: UnsafeMutableBufferPointer<Float> {
        precondition(device == .cpu && dtype == .float32 && isContiguous, "mutableFloats: a packed f32 host tensor")
        return UnsafeMutableBufferPointer(start: UnsafeMutablePointer(bitPattern: address), count: count)
    }

    // MARK: Views (no copy)

    /// The elements `range` along `axis`, sharing storage: a preallocated KV cache `[B,Smax,H,D]` read as its
    /// first S rows is `cache.narrowed(axis: 1, 0..<S)`. Throws for an axis or range out of bounds. O(rank).
    public func narrowed(axis: Int, _ range: Range<Int>) throws -> DeviceTensor {
        try checkAxis(axis)
        guard range.lowerBound >= 0, range.upperBound <= shape[axis] else {
            throw LineaError.invalidArgument(argument: "range", expected: "within 0..<\(shape[axis]) on axis \(axis) of \(shape)",
                                             actual: "\(range.lowerBound)..<\(range.upperBound)")
        }
        var newShape = shape
        newShape[axis] = range.count
        return DeviceTensor(storage: storage, dtype: dtype, shape: newShape, strides: strides, offset: offset + range.lowerBound * strides[axis])
    }

    /// The slice at `index` along `axis`, that axis dropped (one sequence of a batch: `x.selected(axis: 0, b)`). O(rank).
    public func selected(axis: Int, _ index: Int) throws -> DeviceTensor {
        try checkAxis(axis)
        guard index >= 0, index < shape[axis] else {
            throw LineaError.invalidArgument(argument: "index", expected: "within 0..<\(shape[axis]) on axis \(axis) of \(shape)", actual: "\(index)")
        }
        var (newShape, newStrides) = (shape, strides)
        newShape.remove(at: axis)
        newStrides.remove(at: axis)
        return DeviceTensor(storage: storage, dtype: dtype, shape: newShape, strides: newStrides, offset: offset + index * strides[axis])
    }

    /// The same elements under `newShape` (equal count); only for contiguous tensors (a strided view is an error
    /// naming it: call `contiguous()` first). O(rank).
    public func reshaped(_ newShape: [Int]) throws -> DeviceTensor {
        try Tensor.checkShape(newShape)
        guard newShape.reduce(1, *) == count else {
            throw LineaError.shapeMismatch(argument: "reshape", expected: "\(count) elements", actual: "\(newShape) (\(newShape.reduce(1, *)) elements)")
        }
        guard isContiguous else {
            throw LineaError.invalidArgument(argument: "reshape", expected: "a contiguous tensor", actual: "a strided view \(shape) strides \(strides)")
        }
        return DeviceTensor(storage: storage, dtype: dtype, shape: newShape, strides: DeviceTensor.contiguousStrides(newShape), offset: offset)
    }

    private func checkAxis(_ axis: Int) throws {
        guard axis >= 0, axis < rank else {
            throw LineaError.invalidArgument(argument: "axis", expected: "0..<\(rank) for shape \(shape)", actual: "\(axis)")
        }
    }

    // MARK: Transfers

    /// This tensor on `device`: itself when already there, else a contiguous copy made by the device's backend. O(bytes).
    public func to(_ device: Device) throws -> DeviceTensor {
        if device == self.device { return self }
        let target = try DeviceTensor.zeros(shape, dtype: dtype, on: device)
        try target.copy(from: self)
        return target
    }

    /// A packed copy on the same device (itself when already contiguous). O(bytes).
    public func contiguous() throws -> DeviceTensor {
        if isContiguous { return self }
        let target = try DeviceTensor.uninitialized(shape, dtype: dtype, on: device)  // the copy writes every element
        try target.copy(from: self)
        return target
    }

    /// Copies `source`'s elements into this tensor (a view may be the target: one row of a KV cache), across
    /// devices as needed; shapes and dtypes must match. The backend of the non-CPU side does the copy. O(bytes).
    public func copy(from source: DeviceTensor) throws {
        guard source.shape == shape else {
            throw LineaError.shapeMismatch(argument: "source", expected: "\(shape)", actual: "\(source.shape)")
        }
        guard source.dtype == dtype else {
            throw LineaError.invalidArgument(argument: "source", expected: "dtype \(dtype.shortName)", actual: source.dtype.shortName)
        }
        guard storage.isWritable else {
            throw LineaError.invalidArgument(argument: "destination", expected: "writable memory", actual: "a read-only mapping")
        }
        let side = device == .cpu ? source.device : device
        let backend = try Backends.backend(for: side, argument: side == device ? "destination" : "source")
        try Profile.measure("copy \(source.device) -> \(device)", on: side) { try backend.copy(source, into: self) }
    }

    /// Stores a host Float32 tensor of this shape into this tensor in its dtype (f32, bf16 or f16; 16-bit types
    /// rounded to nearest even): in place for packed host memory, else through one staging tensor. O(n).
    public func copy(from tensor: Tensor) throws {
        try tensor.expectShape(shape, "source")
        guard dtype == .float32 || dtype == .bfloat16 || dtype == .float16 else {
            throw LineaError.invalidArgument(argument: "destination", expected: "f32, bf16 or f16 to hold Float32 values", actual: dtype.shortName)
        }
        guard device == .cpu, isContiguous else { return try copy(from: DeviceTensor(tensor, dtype: dtype)) }
        guard storage.isWritable else {
            throw LineaError.invalidArgument(argument: "destination", expected: "writable memory", actual: "a read-only mapping")
        }
        tensor.withUnsafeBufferPointer { src in
            guard let base = src.baseAddress, let p = UnsafeMutableRawPointer(bitPattern: address) else { return }
            switch dtype {
            case .float32: p.copyMemory(from: base, byteCount: src.count * 4)
            case .bfloat16:
                let out = p.assumingMemoryBound(to: UInt16.self)
                for i in 0..<src.count { out[i] = HalfPrecision.bfloat16Bits(base[i]) }
            default:
                let out = p.assumingMemoryBound(to: UInt16.self)
                for i in 0..<src.count { out[i] = HalfPrecision.float16Bits(base[i]) }
            }
        }
    }

    /// The elements converted to a host Float32 `Tensor` (one transfer when on a GPU); throws for integer and
    /// bool tensors (a token id is not a float). O(n).
    public func host() throws -> Tensor {
        guard dtype.isFloatingPoint else {
            throw LineaError.invalidArgument(argument: "tensor", expected: "a float tensor to read as Float32 (hostIntegers() reads integers)",
                                             actual: "dtype \(dtype.shortName)")
        }
        let packed = try to(.cpu).contiguous()
        let source = packed.storage.hostPointer?.advanced(by: packed.offset * dtype.byteCount)
        let scalars = source.map { SafeTensorsFile.floats(dtype, from: $0, count: count) } ?? []
        return Tensor(uncheckedShape: shape, scalars: scalars)
    }

    /// The elements of an integer or bool tensor as host Ints (one transfer when on a GPU); throws for floats. O(n).
    public func hostIntegers() throws -> [Int] {
        guard !dtype.isFloatingPoint else {
            throw LineaError.invalidArgument(argument: "tensor", expected: "an integer tensor (host() reads floats)", actual: "dtype \(dtype.shortName)")
        }
        let packed = try to(.cpu).contiguous()
        guard count > 0, let p = packed.storage.hostPointer?.advanced(by: packed.offset * dtype.byteCount) else { return [] }
        return (0..<count).map { i in
            switch dtype {
            case .int64: return Int(p.load(fromByteOffset: 8 * i, as: Int64.self))
            case .int32: return Int(p.load(fromByteOffset: 4 * i, as: Int32.self))
            default: return Int(p.load(fromByteOffset: i, as: UInt8.self))
            }
        }
    }

    // MARK: Argument checks shared by the ops

    /// Throws unless the shape is `expected`, naming `argument`. O(rank).
    public func expectShape(_ expected: [Int], _ argument: String) throws {
        guard shape == expected else { throw LineaError.shapeMismatch(argument: argument, expected: "\(expected)", actual: "\(shape)") }
    }

    /// Throws unless the rank is `rank`, naming `argument` and the expected `layout`. O(1).
    public func expectRank(_ rank: Int, _ argument: String, layout: String) throws {
        guard shape.count == rank else {
            throw LineaError.shapeMismatch(argument: argument, expected: layout, actual: "\(shape) (rank \(shape.count))")
        }
    }

    /// Throws unless `dtype` is one an op writes its float outputs in (f32, bf16 or f16), naming `argument`. O(1).
    public static func expectOutputDType(_ dtype: DType, argument: String = "outputDType") throws {
        guard dtype == .float32 || dtype == .bfloat16 || dtype == .float16 else {
            throw LineaError.invalidArgument(argument: argument, expected: "f32, bf16 or f16", actual: dtype.shortName)
        }
    }

    /// Throws unless the dtype is one of `allowed`, naming `argument`. O(1).
    public func expectDType(_ allowed: [DType], _ argument: String) throws {
        guard allowed.contains(dtype) else {
            throw LineaError.invalidArgument(argument: argument, expected: "dtype " + allowed.map(\.shortName).joined(separator: " or "),
                                             actual: dtype.shortName)
        }
    }
}
