// `blk locks` and `blk hold` as a user runs them: real processes, golden transcripts, exit codes.
import Foundation
import Glibc
import Testing
@testable import BlockLocking

@Suite("blk locks and blk hold")
struct CLITests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    func placeholders(_ image: String) -> [(String, String)] {
        [(image, "IMAGE"), (scratch.directory, "SCRATCH")]
    }

    @Test("locks on an image nobody holds")
    func locksFree() throws {
        let image = try scratch.rawImage()
        try expectGolden("locks-free", transcript("blk locks IMAGE", try blk("locks", image), placeholders: placeholders(image)))
    }

    @Test("locks names a QEMU writer, a shared transaction-lock holder and a waiter, in text and JSON")
    func locksNamesEveryone() throws {
        let image = try scratch.qcow2Image()
        let qemu = try qemuHolder(OpenKind.qcow2Kinds[0], image)
        defer { _ = try? qemu.finish() }
        let reader = try LineProcess.fixture(), writer = try LineProcess.fixture()
        let r = try reader.open(image, "ro"), w = try writer.open(image)
        #expect(try reader.request("lock \(r) shared") == "ok")
        writer.send("lock \(w) exclusive 60")
        #expect(try eventually { try hasKernelWaiter(on: image) })

        let text = try blk("locks", image)
        #expect(text.stdout.contains("pid \(qemu.pid) (qemu-io): holds consistent read, write, resize; does not share write, resize"))
        #expect(text.stdout.contains("pid \(reader.pid) (blk-lock-fixtur): transaction lock shared"))
        try expectGolden("locks-qemu-and-transaction", transcript("blk locks IMAGE", text, placeholders: placeholders(image)))
        try expectGolden("locks-qemu-and-transaction-json",
                         transcript("blk locks --json IMAGE", try blk("locks", "--json", image), placeholders: placeholders(image)))
    }

    @Test("locks reports a holder this user cannot see as unknown, not as nobody")
    func locksUnknownHolder() throws {
        let image = try scratch.rawImage()
        chmod(image, 0o644)
        let holder = try LineProcess.fixture()
        #expect(try holder.openAs(OpenKind.rawKinds[0], image) == "ok")
        let seen = try run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", blkPath, "locks", image])
        #expect(seen.stdout.contains("an unknown process"))
        try expectGolden("locks-unknown-holder", transcript("blk locks IMAGE (as nobody)", seen, placeholders: placeholders(image)))
    }

    @Test("hold runs the command and exits with its status")
    func holdPassesStatus() throws {
        let image = try scratch.rawImage()
        let ran = try blk("hold", image, "--", "/bin/sh", "-c", "echo inside; exit 7")
        #expect(ran.status == 7)
        #expect(ran.stdout == "inside\n")
        let missing = try blk("hold", image, "--", "no-such-command-anywhere")
        #expect(missing.status == 127)
        #expect(missing.stderr == "blk: no-such-command-anywhere: No such file or directory\n")
    }

    @Test("hold gives up at its timeout with exit 75, naming the holder")
    func holdTimeout() throws {
        let image = try scratch.rawImage()
        let holder = try LineProcess.fixture()
        let handle = try holder.open(image)
        #expect(try holder.request("lock \(handle) exclusive") == "ok")
        let waited = try blk("hold", "--shared", "--timeout", "0.3", image, "--", "true")
        #expect(waited.status == 75)
        #expect(waited.stderr.contains("held by pid \(holder.pid) (blk-lock-fixtur): transaction lock exclusive"))
        try expectGolden("hold-timeout", transcript("blk hold --shared --timeout 0.3 IMAGE -- true", waited, placeholders: placeholders(image)))
        try expectGolden("hold-no-wait-json", transcript("blk hold --no-wait --json IMAGE -- true",
                                                        try blk("hold", "--no-wait", "--json", image, "--", "true"),
                                                        placeholders: placeholders(image)))
    }

    @Test("hold waits in the kernel and runs the command once the holder lets go")
    func holdWaitsForRelease() throws {
        let image = try scratch.rawImage()
        let holder = try LineProcess.fixture()
        let handle = try holder.open(image)
        #expect(try holder.request("lock \(handle) shared") == "ok")
        let waiting = try LineProcess(blkPath, ["hold", "--timeout", "60", image, "--", "/bin/echo", "got it"])
        #expect(try eventually { try hasKernelWaiter(on: image) })
        #expect(waiting.child.isRunning)
        #expect(try holder.request("unlock \(handle) shared") == "ok")
        #expect(try waiting.nextLine() == "got it")
        #expect(waiting.exitStatus(within: 20) == 0)
    }

    @Test("kill -9 of blk hold leaves the lock with its command, as flock(1) does, until the command ends")
    func killedHoldLeavesLockWithCommand() throws {
        let image = try scratch.rawImage()
        // The command ends when it reads a line; blk's death does not close its stdin.
        let hold = try LineProcess(blkPath, ["hold", image, "--", "/bin/sh", "-c", "echo $BLK_HOLD_FD; read line; echo ending"])
        let passed = try hold.nextLine()
        #expect(Int32(passed).map { $0 > 2 } == true, "BLK_HOLD_FD=\(passed)")
        hold.kill9()
        let shutOut = try blk("hold", "--timeout", "0.3", image, "--", "true")
        #expect(shutOut.status == 75, "\(shutOut)")
        #expect(shutOut.stderr.contains("(sh): transaction lock exclusive"), "the command holds it: \(shutOut.stderr)")
        hold.send("end")
        #expect(try hold.nextLine() == "ending")
        // Waits in the kernel until the command's exit closes the last descriptor of the lock.
        let after = try blk("hold", "--timeout", "60", image, "--", "true")
        #expect(after.status == 0, "\(after)")
    }

    @Test("a signal ignored when blk hold starts (nohup) stays ignored: SIGHUP to blk does not end the command")
    func ignoredSignalStaysIgnored() throws {
        let image = try scratch.rawImage()
        let hold = try LineProcess("/usr/bin/nohup", [blkPath, "hold", image, "--", "/bin/sh", "-c", "echo $$; read line; echo ending"])
        let command = try #require(Int32(try hold.nextLine()))
        // A handler in blk would have become the default again in the command, through exec.
        #expect(try ignoredSignals(of: command).contains(SIGHUP), "the command ignores SIGHUP, as nohup asked")
        kill(hold.pid, SIGHUP)
        hold.send("end")
        #expect(try hold.nextLine() == "ending")
        #expect(hold.exitStatus(within: 20) == 0)
    }

    /// The signals `pid` ignores, from SigIgn in /proc/PID/status.
    func ignoredSignals(of pid: Int32) throws -> Set<Int32> {
        guard let status = readProcFile("/proc/\(pid)/status"),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("SigIgn:") }),
              let mask = UInt64(line.dropFirst("SigIgn:".count).trimmingCharacters(in: .whitespaces), radix: 16)
        else { throw TestFailure("no SigIgn for pid \(pid)") }
        return Set((1...64).filter { mask & (1 << UInt64($0 - 1)) != 0 }.map { Int32($0) })
    }

    @Test("SIGTERM to blk hold reaches the command, and hold exits with the command's status")
    func holdForwardsSignals() throws {
        let image = try scratch.rawImage()
        let script = "trap 'echo got TERM; exit 3' TERM; echo started; while :; do sleep 0.05; done"
        let hold = try LineProcess(blkPath, ["hold", image, "--", "/bin/sh", "-c", script])
        #expect(try hold.nextLine() == "started")
        kill(hold.pid, SIGTERM)
        #expect(try hold.nextLine() == "got TERM")
        #expect(hold.exitStatus(within: 20) == 3)
    }

    @Test("bad input: each a one-line error and its exit code", arguments: [
        ("missing", ["hold", "SCRATCH/absent.img", "--", "true"]),
        ("directory", ["locks", "SCRATCH"]),
        ("no-command", ["hold", "SCRATCH/disk.raw"]),
        ("both-kinds", ["hold", "--shared", "--exclusive", "SCRATCH/disk.raw", "--", "true"]),
    ])
    func badInput(name: String, arguments: [String]) throws {
        let image = try scratch.rawImage()
        let resolved = arguments.map { $0.replacingOccurrences(of: "SCRATCH", with: scratch.directory) }
        try expectGolden("bad-input-\(name)", transcript("blk " + arguments.joined(separator: " "), try run(blkPath, resolved),
                                                         placeholders: placeholders(image)))
    }

    @Test("bad input: an image this user may not read")
    func unreadableImage() throws {
        let image = try scratch.rawImage()
        chmod(image, 0o600)
        let refused = try run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", blkPath, "locks", image])
        #expect(refused.status == 66)
        try expectGolden("bad-input-unreadable", transcript("blk locks IMAGE (as nobody)", refused, placeholders: placeholders(image)))
    }
}

@Suite("blk bench lock")
struct BenchCommandTests {
    @Test("reports every figure beside its baseline under the documented JSON keys")
    func jsonKeys() throws {
        let scratch = try Scratch()
        let bench = try run(blkPath, ["bench", "lock", "--json", "--iterations", "200", "--handoffs", "20", "--dir", scratch.directory])
        #expect(bench.status == 0, "\(bench)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [String: Double])
        let keys = ["uncontended-pair-ns", "baseline-uncontended-pair-ns", "nested-acquire-ns", "permission-open-ns",
                    "baseline-permission-open-ns", "handoff-median-us", "handoff-p99-us",
                    "baseline-handoff-median-us", "baseline-handoff-p99-us"]
        #expect(Set(object.keys) == Set(keys))
        #expect(object.values.allSatisfy { $0 > 0 && $0.isFinite })
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.directory).isEmpty, "the benchmark removes its image")
    }
}

@Suite("blk bench io")
struct IOBenchCommandTests {
    @Test("runs the same requests as qemu-img bench on the same file and reports both")
    func besideQEMU() throws {
        let scratch = try Scratch()
        let image = try scratch.rawImage(bytes: 8 << 20)
        let bench = try run(blkPath, ["bench", "io", "--json", "-w", "-c", "256", "-s", "64k", "--pattern", "7", "--rounds", "1", "-f", "raw", image])
        #expect(bench.status == 0, "\(bench)")
        let results = try #require(try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [[String: Any]])
        let result = try #require(results.first)
        #expect(result["scenario"] as? String == "raw: 256 writes of 64 KiB, step 64 KiB, depth 64, cache writeback")
        for key in ["blk-mb-per-s", "blk-iops", "qemu-img-mb-per-s", "qemu-img-iops", "ratio"] {
            #expect((result[key] as? Double).map { $0 > 0 } == true, "\(key) in \(result)")
        }
        // 256 requests of 64 KiB wrap once around the 8 MiB image: every byte was written.
        let written = try run("/usr/bin/qemu-io", ["-f", "raw", "-r", "-c", "read -P 7 0 8M", image])
        #expect(written.status == 0 && !written.stdout.contains("failed"), "\(written)")
    }
}

@Suite("blk bench io on qcow2")
struct Qcow2BenchTests {
    @Test("parallel writes that straddle clusters leave a clean image (no leaked or doubly used cluster)")
    func parallelWritesStayConsistent() throws {
        let scratch = try Scratch()
        let image = scratch.directory + "/bench.qcow2"
        // 96 MiB: a whole number of 96 KiB requests, so the wrapped offsets stay inside.
        #expect(try blk("create", image, "96M").status == 0)
        let bench = try run(blkPath, ["bench", "io", "--json", "-w", "-c", "2000", "-s", "96k", "-d", "8", "--pattern", "9",
                                      "--rounds", "1", "-f", "qcow2", image])
        #expect(bench.status == 0, "\(bench)")
        let checked = try run("/usr/bin/qemu-img", ["check", image])
        #expect(checked.status == 0, "\(checked)")
        try qemuIO(["-f", "qcow2", "-r", "-c", "read -P 9 0 96M", image])
    }
}

@Suite("blk bench convert and bench cache")
struct ConvertAndCacheBenchTests {
    @Test("bench convert runs blk and qemu-img convert on the same source, reports both, and cleans up")
    func convert() throws {
        let scratch = try Scratch()
        let bench = try run(blkPath, ["bench", "convert", "--json", "--size", "16M", "--rounds", "1", "--dir", scratch.directory])
        #expect(bench.status == 0, "\(bench)")
        let results = try #require(try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [[String: Any]])
        #expect(results.count == 3)
        for result in results {
            #expect((result["blk-seconds"] as? Double ?? 0) > 0 && (result["qemu-img-seconds"] as? Double ?? 0) > 0, "\(result)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.directory).isEmpty)
    }

    @Test("bench cache: resident memory stays within the cache size while the metadata grows past it")
    func cache() throws {
        let scratch = try Scratch()
        // 4 GiB of 4 KiB clusters: 2048 L2 tables, 8 MiB of them, through a 256 KiB cache.
        let bench = try run(blkPath, ["bench", "cache", "--json", "--size", "4G", "--cache-size", "256k", "--dir", scratch.directory])
        #expect(bench.status == 0, "\(bench)")
        let result = try #require(try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [String: Any])
        #expect(result["writes"] as? Int == 2048)
        let metadataGrowth = result["metadata-growth-mebibytes"] as? Double ?? 0
        #expect(metadataGrowth > 5, "\(result)")
        #expect((result["resident-growth-mebibytes"] as? Double ?? .infinity) < metadataGrowth / 2, "\(result)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.directory).isEmpty)
    }
}
