// BenchPrograms: the programs the benchmarks run beside blk in the same run.
import FoundationEssentials

enum BenchPrograms {
    /// qemu-img, the baseline of `bench io` and `bench convert`; nil when qemu-utils is missing.
    static var qemuImg: String? {
        ["/usr/bin/qemu-img", "/usr/local/bin/qemu-img"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// This blk executable, for benchmarks that run it as a process of its own.
    static var blk: String { URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path }
}
