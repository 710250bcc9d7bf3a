// BenchServer: an NBD server for one round of `bench serve` — `blk serve` or `qemu-nbd` on one
// image at a Unix socket, with the same settings — known ready without polling, its peak
// resident memory read at the end of the round, then stopped with SIGTERM.
//
// Ready: blk serve prints "listening on unix:PATH" once clients may connect; qemu-nbd --fork
// returns once its socket listens. Exited: a pidfd of the server polls readable once it has
// exited — all of it, its files closed and its locks gone, which the end of a pipe it holds
// would not say — even of qemu-nbd's daemon, which is not our child. Both waits have a deadline.
import BlockLayer
import BlockLocking
import Glibc
import Posix
import SystemPackage

final class BenchServer {
    enum Kind: String { case blk = "blk serve", qemuNBD = "qemu-nbd" }

    let kind: Kind
    let pid: pid_t
    /// The default export's URI, for nbdcopy and qemu-img.
    let uri: String
    private let process: BenchProcess
    /// The server's pidfd: readable once it has exited.
    private let exitDescriptor: Int32

    /// Seconds a server has to start, and to stop.
    static let deadline = 60.0

    /// Starts a server of `image` at `socket` for `connections` clients at once. Both servers
    /// stay up after the last client leaves (--persistent), so that their memory can be read
    /// before they are stopped; both use the page cache (writeback) and their default I/O threads.
    init(_ kind: Kind, image: String, format: String, socket: String, connections: Int) throws(BlockError) {
        unlink(socket)
        self.kind = kind
        uri = "nbd+unix:///?socket=\(socket)"
        switch kind {
        case .blk:
            process = try Self.spawn(BenchPrograms.blk, ["serve", "-f", format, "--cache", "writeback", "--socket", socket,
                                                         "--shared", "\(connections)", "--persistent", image],
                                     stdout: .pipe, stderr: .sameAsOutput)
            pid = process.pid
            let said = try Self.read(process.output!, until: { $0.contains(UInt8(ascii: "\n")) })
            guard said.starts(with: Array("listening on ".utf8)) else {
                kill(pid, SIGKILL)
                process.wait()
                throw BlockError(.ioError, "blk serve did not start: \(String(decoding: said, as: UTF8.self))")
            }
        case .qemuNBD:
            guard let qemuNBD = BenchPrograms.qemuNBD else { throw BlockError(.unsupported, "qemu-nbd is not installed (Debian package qemu-utils)") }
            let pidFile = socket + ".pid"
            defer { unlink(pidFile) }
            process = try Self.spawn(qemuNBD, ["--fork", "--persistent", "--shared=\(connections)", "-f", format, "--cache=writeback",
                                               "--aio=threads", "--pid-file=\(pidFile)", "-k", socket, image],
                                     stdout: .null, stderr: .pipe)
            let status = process.wait()
            let daemon = try? Self.contents(of: pidFile)
            guard status == 0, let daemon, let number = pid_t(String(decoding: daemon, as: UTF8.self).filter(\.isNumber)) else {
                let said = (try? Self.read(process.errors!, until: { _ in false })) ?? []
                throw BlockError(.ioError, "qemu-nbd did not start (exit \(status)): \(String(decoding: said, as: UTF8.self))")
            }
            pid = number
        }
        switch processDescriptor(of: pid) {
        case .success(let descriptor):
            exitDescriptor = descriptor
        case .failure(let error):
            // Our child cannot have been replaced under its pid before we reap it; qemu-nbd's
            // daemon, gone already, could have been: it is not signalled.
            if kind == .blk {
                kill(pid, SIGKILL)
                process.wait()
            }
            throw BlockError(.ioError, "\(kind.rawValue): \(error)")
        }
    }

    /// The server's peak resident memory so far, in bytes (VmHWM: this process image's own, which
    /// exec starts afresh).
    func peakResidentBytes() throws(BlockError) -> Int64 {
        let path = "/proc/\(pid)/status"
        let text = try Self.contents(of: path)
        guard let line = String(decoding: text, as: UTF8.self).split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kibibytes = Int64(line.filter(\.isNumber)) else {
            throw BlockError(.ioError, "\(path) has no VmHWM line")
        }
        return kibibytes << 10
    }

    /// SIGTERM, then the server's exit, which must come within the deadline (blk serve's also
    /// with status 0: a clean stop).
    func stop() throws(BlockError) {
        kill(pid, SIGTERM)
        guard try Self.waitReadable(exitDescriptor) else { throw BlockError(.ioError, "\(kind.rawValue) did not stop within \(Int(Self.deadline)) s of SIGTERM") }
        if kind == .blk, process.wait() != 0 {
            let said = (try? Self.read(process.output!, until: { _ in false })) ?? []
            throw BlockError(.ioError, "blk serve did not stop cleanly: \(String(decoding: said.suffix(2000), as: UTF8.self))")
        }
    }

    deinit {
        // A round that failed half way, or a server that would not stop: it goes with the round.
        // Signalled only while its pidfd says it is there, so never another process under its pid.
        if (try? Self.waitReadable(exitDescriptor, within: 0)) != true {
            kill(pid, SIGKILL)
            _ = try? Self.waitReadable(exitDescriptor)
        }
        close(exitDescriptor)
    }

    private static func spawn(_ executable: String, _ arguments: [String], stdout: BenchProcess.Stream,
                              stderr: BenchProcess.Stream) throws(BlockError) -> BenchProcess {
        do {
            return try BenchProcess(executable, arguments, stdin: .null, stdout: stdout, stderr: stderr)
        } catch {
            throw BlockError(.ioError, error.description)
        }
    }

    /// A small file's bytes (a pid file, a /proc status).
    private static func contents(of path: String) throws(BlockError) -> [UInt8] {
        do {
            let file = try FileDescriptor.open(FilePath(path), .readOnly)
            return try file.closeAfter { try file.readToEnd(limit: 1 << 16).get() }
        } catch {
            throw BlockError(.ioError, "\(path): \(error)")
        }
    }

    /// Whether `descriptor` became readable (or reached its end) within `seconds`.
    private static func waitReadable(_ descriptor: Int32, within seconds: Double = deadline) throws(BlockError) -> Bool {
        let end = currentMonotonicNanoseconds() + Int64(seconds * 1e9)
        while true {
            let left = max(0, end - currentMonotonicNanoseconds())
            var waiting = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&waiting, 1, Int32((left + 999_999) / 1_000_000))
            if ready >= 0 { return ready > 0 }
            if errno != EINTR { throw BlockError(.ioError, "poll: \(String(cString: strerror(errno)))") }
        }
    }

    /// What `descriptor` gives until `enough` says so or its end, within the deadline.
    private static func read(_ descriptor: Int32, until enough: ([UInt8]) -> Bool) throws(BlockError) -> [UInt8] {
        let end = currentMonotonicNanoseconds() + Int64(deadline * 1e9)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            guard try waitReadable(descriptor, within: Double(end - currentMonotonicNanoseconds()) / 1e9) else {
                throw BlockError(.ioError, "an NBD server did not answer within \(Int(deadline)) s")
            }
            let count = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { return bytes }
            bytes += chunk[0..<count]
            if enough(bytes) { return bytes }
        }
    }
}
