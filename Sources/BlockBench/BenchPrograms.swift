// BenchPrograms: the programs the benchmarks run beside blk in the same run, looked up once:
// a benchmark starts them hundreds of times.
import FoundationEssentials
import Posix

enum BenchPrograms {
    /// qemu-img, the baseline of `bench io` and `bench convert`; nil when qemu-utils is missing.
    static let qemuImg: String? = installed("qemu-img")

    /// qemu-io, the baseline of `bench startup`'s `io -c flush`; nil when qemu-utils is missing.
    static let qemuIO: String? = installed("qemu-io")

    /// qemu-nbd, the baseline of `bench serve`; nil when qemu-utils is missing.
    static let qemuNBD: String? = installed("qemu-nbd")

    /// nbdcopy, a client of `bench serve`; nil when libnbd-bin is missing.
    static let nbdcopy: String? = installed("nbdcopy")

    private static func installed(_ name: String) -> String? {
        ["/usr/bin/" + name, "/usr/local/bin/" + name].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// This blk executable, for benchmarks that run it as a process of its own.
    static let blk: String = (try? currentExecutable().get()) ?? "/proc/self/exe"
}
