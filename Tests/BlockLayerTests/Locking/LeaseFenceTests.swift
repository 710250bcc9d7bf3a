// Fencing every writing command (issue 16, item 3): each command that writes an image, run under a
// sanlock lease, is fenced with `blk lease fence PID` in the middle of its work. It must exit 74,
// and no call that changes the image or syncs it may end after the fence gave the lease back.
// strace is both the clock and the witness: it holds every writing call a moment before it runs,
// so the fence lands mid-run on any machine, and it logs each call's start, end and file, and the
// fence's own steps (the datagram received, the sanlock registration closed).
import Foundation
import Glibc
import Testing

@Suite("fenced commands stop writing", .serialized,
       .enabled(if: SanlockHosts.available && TracedCommand.available, "needs sanlock and strace"))
struct LeaseFenceTests {
    /// How long each writing call is held. The test must send the fence within it, which takes a
    /// process start; a command's next admission comes only after the held call ran.
    static let delay = 1.5

    /// A writing command ready to run: its arguments, the image it writes, and the call that
    /// shows it is in the middle of its work.
    struct Job {
        var arguments: [String]
        var image: String
        var started: (TracedCommand.Call) -> Bool = { $0.name == "pwrite64" }
    }

    static let commands = ["create raw", "create qcow2", "io", "convert", "resize", "check -r", "state put", "state import"]

    @Test("a command fenced mid-run exits 74, and nothing reaches the image after the lease is given back", arguments: commands)
    func fencedMidRun(command: String) throws {
        let hosts = try SanlockHosts(count: 1)
        let job = try Self.prepare(command, in: hosts.scratch)
        let traced = try TracedCommand(blkPath, job.arguments, delay: Self.delay, logPath: hosts.scratch.directory + "/strace.log",
                                       environment: hosts.environment(host: 1))
        let pid = try #require(traced.tracedPid(), "blk did not start under strace")
        // The image may not exist yet (create, convert): its folder does.
        let folder = try #require(canonicalPath(URL(fileURLWithPath: job.image).deletingLastPathComponent().path))
        let image = folder + "/" + URL(fileURLWithPath: job.image).lastPathComponent
        let writesImage = { (call: TracedCommand.Call) in TracedCommand.writingCalls.contains(call.name) && call.descriptorTarget == image }

        let writing = eventually(within: 60) { traced.calls().contains { writesImage($0) && job.started($0) } }
        try #require(writing, "\(command) never started writing: \(traced.calls().map(\.text).suffix(20))")
        let fence = try hosts.blk(1, "lease", "fence", "\(pid)")
        #expect(fence.status == 0, "\(fence)")

        let status = traced.process.wait(within: 60)
        if status == nil {
            kill(pid, SIGKILL)
            _ = traced.process.wait(within: 20)
        }
        let stderr = traced.stderr
        #expect(status == 74, "\(command): exit \(status.map(String.init) ?? "none within 60 s after the fence"): \(stderr)")
        #expect(stderr.contains("revoked"), "\(stderr)")

        let calls = traced.calls()
        let sanlockSockets = Set(calls.filter { $0.name == "connect" && $0.text.contains("/sanlock.sock\"") }.compactMap(\.socketInode))
        let received = calls.firstIndex { $0.name == "recvmsg" && $0.descriptorTarget?.contains("blocklayer-lease-fence.") == true }
        let released = received.flatMap { index in
            calls[index...].first { $0.name == "close" && $0.socketInode.map(sanlockSockets.contains) == true }
        }
        let lease = try #require(released, "\(command): the fence never gave the lease back: \(calls.map(\.text).suffix(20))")
        let late = calls.filter { writesImage($0) && ($0.end ?? .infinity) > lease.start }
        #expect(late.isEmpty, "\(command): \(late.count) calls reached the image after the lease was given back, first: \(late.prefix(3).map(\.text))")
        #expect(calls[..<received!].contains(where: writesImage), "fenced in the middle of its work")
    }

    /// The command's arguments, with the images it needs made.
    static func prepare(_ command: String, in scratch: Scratch) throws -> Job {
        let directory = scratch.directory
        switch command {
        case "create raw":
            let image = directory + "/big.raw"
            return Job(arguments: ["create", "-f", "raw", "--preallocation", "full", image, "4G"], image: image)
        case "create qcow2":
            let image = directory + "/big.qcow2"
            return Job(arguments: ["create", "-f", "qcow2", "--preallocation", "full", image, "4G"], image: image)
        case "io":
            let image = try scratch.rawImage(bytes: 64 << 20)
            let writes = (0..<64).flatMap { ["-c", "write -P 0x55 \($0)M 1M"] }
            return Job(arguments: ["io", "-f", "raw", image] + writes, image: image)
        case "convert":
            let source = directory + "/source.raw"
            try scratch.write(source, Data(repeating: 0x5a, count: 64 << 20))
            let copy = directory + "/copy.raw"
            return Job(arguments: ["convert", "-O", "raw", source, copy], image: copy)
        case "resize":
            // Growing 512-byte clusters to 4 GiB: a new L1 table, refcount blocks for it, the header.
            let image = directory + "/grow.qcow2"
            let made = try run("/usr/bin/qemu-img", ["create", "-q", "-f", "qcow2", "-o", "cluster_size=512", image, "1M"])
            guard made.status == 0 else { throw TestFailure("qemu-img create: \(made)") }
            return Job(arguments: ["resize", image, "4G"], image: image, started: { _ in true })
        case "check -r":
            // lazy_refcounts and an abort: the refcounts of 16,384 clusters never written.
            let image = directory + "/leaky.qcow2"
            let made = try run("/usr/bin/qemu-img", ["create", "-q", "-f", "qcow2", "-o", "cluster_size=512,lazy_refcounts=on", image, "64M"])
            guard made.status == 0 else { throw TestFailure("qemu-img create: \(made)") }
            _ = try run("/usr/bin/qemu-io", ["-f", "qcow2", "-c", "write -P 4 0 8M", "-c", "abort", image])
            return Job(arguments: ["check", "-r", "all", image], image: image)
        case "state put":
            let image = try scratch.rawImage(bytes: 16 << 20)
            let blob = directory + "/blob"
            try scratch.write(blob, Data(repeating: 7, count: 1 << 20))
            return Job(arguments: ["state", "put", "-f", "raw", image, "memory", blob], image: image)
        case "state import":
            let image = try scratch.rawImage(bytes: 16 << 20)
            let folder = directory + "/tpm"
            mkdir(folder, 0o700)
            let made = try run("/usr/bin/swtpm_setup", ["--tpm2", "--tpmstate", folder, "--overwrite"], within: 120)
            guard made.status == 0 else { throw TestFailure("swtpm_setup: \(made)") }
            return Job(arguments: ["state", "import", "-f", "raw", "--swtpm", folder, image], image: image)
        default:
            throw TestFailure("no such command: \(command)")
        }
    }

    @Test("names bound in advance do not stop a leased open; the fence finds the process's own socket")
    func squattedNames() throws {
        let hosts = try SanlockHosts(count: 1)
        let image = try hosts.scratch.rawImage()
        let holder = try hosts.fixture(1)
        // What any local user could do: bind the names a pid-derived scheme would use, for this
        // process and the next ones.
        let squatted = (0..<256).compactMap { bindAbstractSocket("blocklayer-lease-fence.\(Int(holder.pid) + $0)") }
        defer { squatted.forEach { close($0) } }
        #expect(squatted.count == 256)

        let opened = try holder.request("image \(image) rw")
        let handle = try #require(opened.hasPrefix("ok ") ? Int(opened.dropFirst(3)) : nil, "a leased open beside squatted names: \(opened)")
        #expect(try holder.request("lease \(handle)") == "ok exclusive")

        let unregistered = try hosts.fixture(1)
        let stranger = try hosts.blk(1, "lease", "fence", "\(unregistered.pid)")
        #expect(stranger.status != 0 && stranger.stderr.contains("no BlockLayer lease registration"), "\(stranger)")
        try unregistered.finish()

        let fenced = try hosts.blk(1, "lease", "fence", "\(holder.pid)")
        #expect(fenced.status == 0, "\(fenced)")
        #expect(eventually(within: 30) { (try? holder.request("lease \(handle)")) == "ok exclusive lost" })
        #expect(try holder.request("write \(handle) 0 4096 1").hasPrefix("err lock-lost"))
        try holder.finish()
    }
}

/// The path with every link resolved, as /proc (and strace) name an open file.
private func canonicalPath(_ path: String) -> String? {
    guard let resolved = realpath(path, nil) else { return nil }
    defer { free(resolved) }
    return String(cString: resolved)
}

/// A datagram socket bound to the abstract name `name`; nil when the name is taken.
private func bindAbstractSocket(_ name: String) -> Int32? {
    let socket = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard socket >= 0 else { return nil }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(name.utf8)
    withUnsafeMutableBytes(of: &address.sun_path) { path in
        for (index, byte) in bytes.enumerated() { path[index + 1] = byte }
    }
    let length = socklen_t(MemoryLayout<sa_family_t>.size + 1 + bytes.count)
    let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) } }
    guard bound == 0 else {
        close(socket)
        return nil
    }
    return socket
}
