// swift-tools-version: 6.1
import PackageDescription

// Hot loops need AVX2 + FMA: Swift's default x86-64 target has neither and turns SIMD math
// into per-lane library calls (0.7 vs 25.6 GFLOP/s measured). `haswell` runs on every x86
// server since 2013, including the GPU machine's host. `unsafeFlags` is only allowed in a root
// package or a local/branch dependency: see README, "Build settings".
#if arch(x86_64)
let cpuFlags: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let cpuFlags: [SwiftSetting] = []
#endif

let package = Package(
    name: "Linea",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "Linea", targets: ["Linea"]),
        .executable(name: "linea", targets: ["linea"]),
        .library(name: "LineaCUDA", targets: ["LineaCUDA"]),
        .library(name: "LineaLM", targets: ["LineaLM"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // `swift package benchmark`; the malloc interposer trait stands in for jemalloc (not installed here).
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // cpuid feature detection and dladdr (C: Swift has neither inline assembly nor dladdr).
        .target(name: "CLineaCPU"),
        // The hot CPU kernels in AVX2 and AVX-512 builds, chosen at run time (clang's per-function target attribute).
        .target(name: "CLineaKernels"),
        // FFTW 3 in single precision (long convolutions by FFT): Debian's libfftw3-dev, installed by scripts/setup.sh.
        .systemLibrary(name: "CFFTW", pkgConfig: "fftw3f", providers: [.apt(["libfftw3-dev"]), .brew(["fftw"])]),
        .target(
            name: "Linea",
            dependencies: ["CLineaCPU", "CLineaKernels", "CFFTW"],
            swiftSettings: cpuFlags
        ),
        .executableTarget(
            name: "linea",
            dependencies: [
                "Linea",
                "LineaCUDA",
                "LineaLM",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: cpuFlags
        ),
        .target(
            name: "LineaCUDA",
            dependencies: ["Linea"],
            exclude: ["Kernels/cu"],  // the kernel files, embedded by scripts/embed_kernels.py (Kernels/Embedded)
            swiftSettings: cpuFlags
        ),
        // The model runtime: tokenizer, checkpoints, generation. Imports Linea only.
        .target(
            name: "LineaLM",
            dependencies: ["Linea"],
            path: "Sources/LineaLM",
            swiftSettings: cpuFlags
        ),
        .testTarget(
            name: "LineaCUDATests",
            dependencies: ["Linea", "LineaCUDA"],
            swiftSettings: cpuFlags
        ),
        .testTarget(
            name: "LineaLMTests",
            dependencies: ["LineaLM"],
            exclude: ["Fixtures"],
            swiftSettings: cpuFlags
        ),
        .testTarget(
            name: "LineaTests",
            dependencies: ["Linea"],
            swiftSettings: cpuFlags
        ),
        .executableTarget(
            name: "LineaBenchmarks",
            dependencies: ["Linea", .product(name: "Benchmark", package: "benchmark")],
            path: "Benchmarks/LineaBenchmarks",
            swiftSettings: cpuFlags,
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // Bounded mutation fuzzing of the safetensors reader, the op entry points and `linea` (LINEA_FUZZ_SECONDS).
        .testTarget(
            name: "LineaFuzzTests",
            dependencies: ["linea", "Linea"]
        ),
        // Runs the built `linea` binary: exit codes, messages, files written.
        .testTarget(
            name: "LineaCLITests",
            dependencies: ["linea", "Linea"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
