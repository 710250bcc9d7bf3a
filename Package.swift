// swift-tools-version:6.0
// BlockLayer: a block layer for VM images that many processes and hosts can share safely.
// Modules in dependency order: Posix (system calls, with the CLinuxIO shim) → BlockLocking (with
// the CLinuxLocking and CSanlock shims) → BlockGraph (the node graph, file and raw drivers) →
// Qcow2 (with zlib) → BlockLayer (the front door: re-exports both, the format registry, opening
// with every format) → DeviceState (with the CChecksum shim and swift-crypto) → BlockBench (the
// benchmarks, each beside its baseline); NBD (the wire protocol, swift-nio) → BlockServe (the NBD
// server over BlockLayer); BlockCLI (what both programs share: image options, printing, exit
// codes) → blk (the CLI) and blk-serve (`blk serve`'s NBD server, a program of its own so that
// blk does not load swift-nio; blk execs it).
import PackageDescription

// blk's and blk-serve's release builds: the Swift runtime, Foundation and Dispatch linked in, as
// loading and binding their shared libraries was a third of a short command's start-up (README,
// Start-up). FoundationEssentials' static archive does not name the two it needs.
let staticRuntimeInRelease: [LinkerSetting] = [
    .unsafeFlags(["-static-stdlib"], .when(configuration: .release)),
    .linkedLibrary("_FoundationCollections", .when(configuration: .release)),
    .linkedLibrary("_FoundationCShims", .when(configuration: .release)),
]

// blk's release link also undoes the -export-dynamic that -static-stdlib brings: it put all 12,700
// of the package's own symbols in the dynamic symbol table, which the Swift runtime's backtracer
// setup walks at every start (dladdr, 0.44 million instructions a run; docs/qcow2.md, Start-up).
// Nothing looks blk's symbols up by name.
let blkLinkInRelease: [LinkerSetting] = staticRuntimeInRelease + [
    .unsafeFlags(["-Xlinker", "--no-export-dynamic"], .when(configuration: .release)),
]

let package = Package(
    name: "BlockLayer",
    products: [
        .library(name: "BlockLayer", targets: ["BlockLayer", "BlockLocking", "DeviceState"]),
        .executable(name: "blk", targets: ["blk"]),
        .executable(name: "blk-serve", targets: ["blk-serve"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.0.0"),
        // `swift package generate-documentation` (README): the DocC catalogs in Sources/*/*.docc.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
        // `blk serve`: the NBD server's networking and its diagnostics.
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        // `blk serve`: SIGTERM/SIGINT and the control socket's `quit` stop it gracefully.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // `blk serve --tls-creds`: NBD's STARTTLS with X.509 certificates.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.0"),
    ],
    targets: [
        .target(name: "CLinuxIO"),
        // The errno/EINTR rule and the calls every module makes on files: full transfers,
        // fallocate, SEEK_DATA/SEEK_HOLE, fdatasync.
        .target(
            name: "Posix",
            dependencies: ["CLinuxIO", .product(name: "SystemPackage", package: "swift-system")]
        ),
        .target(name: "CLinuxLocking"),
        // sanlock's client ABI, loaded with dlopen: the package builds where sanlock is absent.
        .target(name: "CSanlock"),
        .target(
            name: "BlockLocking",
            dependencies: [
                "CLinuxLocking",
                "CSanlock",
                "Posix",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .target(
            name: "BlockGraph",
            dependencies: [
                "BlockLocking",
                "Posix",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        .target(
            name: "Qcow2",
            dependencies: [
                "BlockGraph",
                "BlockLocking",
                "CZlib",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // The front door: the format registry needs every format, so it sits above them all.
        .target(name: "BlockLayer", dependencies: ["BlockGraph", "Qcow2"]),
        .target(name: "CChecksum"),
        .target(
            name: "DeviceState",
            dependencies: [
                "BlockLayer",
                "BlockLocking",
                "Posix",
                "CChecksum",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // `blk bench`'s measurements, each beside a baseline measured in the same run: raw
        // syscalls, sanlock's C API, qemu-img. The CLI only parses their options and prints them.
        .target(
            name: "BlockBench",
            dependencies: [
                "BlockLayer",
                "BlockLocking",
                "CLinuxLocking",
                "CSanlock", // the lease benchmark's baseline calls sanlock's C API directly
                "DeviceState",
                "Posix",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        // The NBD wire protocol (docs/serve.md): handshake, options, requests and replies as bytes,
        // apart from any block layer so it can be fuzzed and reused.
        .target(name: "NBD", dependencies: [.product(name: "NIOCore", package: "swift-nio")]),
        // `blk serve`: images exported over NBD, block I/O on threads of its own.
        .target(
            name: "BlockServe",
            dependencies: [
                "NBD",
                "BlockLayer",
                "BlockLocking",
                "Posix",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // `blk serve --tls-creds`: the X.509 credentials and their TLS handler (swift-nio-ssl),
        // apart from BlockServe so that what is built from the server core alone (the
        // negotiation's fuzz target) does not compile BoringSSL.
        .target(
            name: "BlockServeTLS",
            dependencies: [
                "BlockServe",
                "Posix",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // The qemu-io-like command language of `blk io`, apart from the CLI so it can be fuzzed.
        .target(name: "BlockIOScript", dependencies: ["BlockGraph", "BlockLocking"]),
        // What blk and blk-serve share: the image and lease options, errors and exit codes, JSON.
        .target(
            name: "BlockCLI",
            dependencies: [
                "BlockIOScript",
                "BlockLayer",
                "BlockLocking",
                "Posix",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .executableTarget(
            name: "blk",
            dependencies: [
                "BlockBench",
                "BlockCLI",
                "BlockIOScript",
                "BlockLayer",
                "DeviceState",
                "BlockLocking",
                "Posix",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            linkerSettings: blkLinkInRelease
        ),
        // `blk serve`: blk execs this program beside it, so only the server links swift-nio.
        .executableTarget(
            name: "blk-serve",
            dependencies: [
                "BlockCLI",
                "BlockLayer",
                "BlockServe",
                "BlockServeTLS",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            linkerSettings: staticRuntimeInRelease
        ),
        // A process that takes locks on command, so tests can put holders and waiters in
        // separate processes: locks held and checked by one process prove nothing.
        .executableTarget(name: "blk-lock-fixture", dependencies: ["BlockLayer", "BlockLocking", "Posix"]),
        // A long-running device that keeps its state store open read-write, for the migration
        // and concurrency tests: it commits and hands over on command.
        .executableTarget(name: "blk-state-fixture", dependencies: ["DeviceState", "Posix"]),
        // Runs a program and reports its own peak memory, which the tests cannot measure of a
        // child they spawn themselves (see its main.swift).
        .executableTarget(name: "blk-peak-fixture", dependencies: ["Posix"]),
        .testTarget(
            name: "BlockLayerTests",
            dependencies: ["BlockLayer", "BlockLocking", "DeviceState", "Posix"]
        ),
    ],
    swiftLanguageModes: [.v6]
)

// libFuzzer targets (Fuzz/, run by Scripts/fuzz): only in builds that ask for them, since they
// link only with -sanitize=fuzzer.
if Context.environment["BLK_FUZZ"] != nil {
    package.targets += [
        .target(name: "FuzzSupport", dependencies: ["Posix"], path: "Fuzz/Support"),
        .executableTarget(name: "fuzz-qcow2", dependencies: ["FuzzSupport", "BlockLayer", "BlockLocking"],
                          path: "Fuzz/qcow2"),
        .executableTarget(name: "fuzz-state", dependencies: ["FuzzSupport", "DeviceState", .product(name: "Crypto", package: "swift-crypto")],
                          path: "Fuzz/state"),
        .executableTarget(name: "fuzz-io-script", dependencies: ["FuzzSupport", "BlockGraph", "BlockIOScript"], path: "Fuzz/io-script"),
        .executableTarget(name: "fuzz-numbers", dependencies: ["FuzzSupport", "BlockGraph", "BlockIOScript"], path: "Fuzz/numbers"),
        .executableTarget(name: "fuzz-nbd", dependencies: ["FuzzSupport", "NBD", .product(name: "NIOCore", package: "swift-nio")],
                          path: "Fuzz/nbd"),
        .executableTarget(name: "fuzz-negotiation", dependencies: ["FuzzSupport", "NBD", "BlockServe", "BlockLayer",
                                                                   .product(name: "NIOCore", package: "swift-nio")],
                          path: "Fuzz/negotiation"),
    ]
}
