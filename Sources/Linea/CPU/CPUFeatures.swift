import CLineaCPU

/// The vector features of the CPU this process runs on (cpuid, checked against the state the OS saves).
public struct CPUFeatures: OptionSet, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let avx2 = CPUFeatures(rawValue: UInt32(LINEA_CPU_AVX2))
    public static let fma = CPUFeatures(rawValue: UInt32(LINEA_CPU_FMA))
    public static let f16c = CPUFeatures(rawValue: UInt32(LINEA_CPU_F16C))
    public static let avx512f = CPUFeatures(rawValue: UInt32(LINEA_CPU_AVX512F))
    public static let avx512dq = CPUFeatures(rawValue: UInt32(LINEA_CPU_AVX512DQ))
    public static let avx512bw = CPUFeatures(rawValue: UInt32(LINEA_CPU_AVX512BW))
    public static let avx512vl = CPUFeatures(rawValue: UInt32(LINEA_CPU_AVX512VL))
    public static let avx512bf16 = CPUFeatures(rawValue: UInt32(LINEA_CPU_AVX512BF16))
    public static let amxTile = CPUFeatures(rawValue: UInt32(LINEA_CPU_AMX_TILE))
    public static let amxBF16 = CPUFeatures(rawValue: UInt32(LINEA_CPU_AMX_BF16))

    /// AVX-512 as the kernels use it (F, DQ, BW, VL: Skylake-SP, Ice Lake, Sapphire Rapids, Zen 4 and later).
    public static let avx512: CPUFeatures = [.avx512f, .avx512dq, .avx512bw, .avx512vl]
    /// AVX2 with FMA and F16C (Haswell, Zen 1 and later): what the package's `-target-cpu haswell` build assumes.
    public static let avx2FMA: CPUFeatures = [.avx2, .fma, .f16c]

    /// The running CPU's features, read once.
    public static let current = CPUFeatures(rawValue: UInt32(linea_cpu_features()))

    /// The cpuid vendor string of the running CPU ("GenuineIntel", "AuthenticAMD"; empty off x86-64).
    public static let vendor: String = {
        var buffer = [CChar](repeating: 0, count: 13)
        linea_cpu_vendor(&buffer)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }()

    /// Feature names, e.g. `avx2 fma f16c avx512f ...`.
    public var description: String {
        let names: [(CPUFeatures, String)] = [
            (.avx2, "avx2"), (.fma, "fma"), (.f16c, "f16c"), (.avx512f, "avx512f"), (.avx512dq, "avx512dq"),
            (.avx512bw, "avx512bw"), (.avx512vl, "avx512vl"), (.avx512bf16, "avx512_bf16"), (.amxTile, "amx_tile"),
            (.amxBF16, "amx_bf16"),
        ]
        return names.filter { contains($0.0) }.map(\.1).joined(separator: " ")
    }
}
