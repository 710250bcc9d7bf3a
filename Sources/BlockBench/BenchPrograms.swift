// BenchPrograms: the programs the benchmarks run beside blk in the same run.
import FoundationEssentials

enum BenchPrograms {
    /// qemu-img, the baseline of `bench io` and `bench convert`; nil when qemu-utils is missing.
    static var qemuImg: String? { installed("qemu-img") }

    /// qemu-io, the baseline of `bench startup`'s `io -c flush`; nil when qemu-utils is missing.
    static var qemuIO: String? { installed("qemu-io") }

    private static func installed(_ name: String) -> String? {
        ["/usr/bin/" + name, "/usr/local/bin/" + name].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// This blk executable, for benchmarks that run it as a process of its own.
    static var blk: String { URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path }
}
