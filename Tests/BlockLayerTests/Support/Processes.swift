// Processes: running the real programs under test — blk, the lock fixture, qemu-io, qemu-img —
// with deadlines of seconds, never sleeps, so the tests hold on a loaded 2-core machine.
import Foundation
import Glibc
import Posix
import SystemPackage
import Testing

/// The folder holding the binaries `swift build` made (next to this test bundle).
let buildDirectory: String = {
    let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    return executable.deletingLastPathComponent().path
}()

let blkPath = buildDirectory + "/blk"
let fixturePath = buildDirectory + "/blk-lock-fixture"
let stateFixturePath = buildDirectory + "/blk-state-fixture"
let peakFixturePath = buildDirectory + "/blk-peak-fixture"

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// What a finished process left behind.
struct Finished: CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String
    /// The program's peak resident memory in KiB, when run by `runMeasuringMemory` (0 otherwise).
    var peakResidentKiB: Int = 0
    var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
}

/// A child process started with posix_spawn, its stdio on pipes, reaped by a thread of its own.
/// (Foundation's Process loses terminations when many children run at once on Linux.)
final class Spawned: @unchecked Sendable {
    let pid: pid_t
    /// Our end of the child's stdin; nil once closed.
    private(set) var input: Int32?
    let output: Int32
    let errors: Int32
    private let exited = DispatchSemaphore(value: 0)
    private let statusLock = NSLock()
    private var waitStatus: Int32?

    init(_ executable: String, _ arguments: [String], stdinPipe: Bool, environment: [String: String]? = nil) throws {
        // Every spawn in the tests goes through here, under one lock, so no other child can
        // inherit these pipes between pipe() and FD_CLOEXEC (Glibc does not export pipe2).
        spawnLock.lock()
        defer { spawnLock.unlock() }
        // A child that died (a fenced writer SIGKILLed by sanlock) must not take the tests with
        // it when they write to its stdin: EPIPE, not SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        var inputPipe: [Int32] = [-1, -1], outputPipe: [Int32] = [-1, -1], errorPipe: [Int32] = [-1, -1]
        guard makePipe(&outputPipe), makePipe(&errorPipe) else { throw TestFailure("pipe") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if stdinPipe {
            guard makePipe(&inputPipe) else { throw TestFailure("pipe") }
            posix_spawn_file_actions_adddup2(&actions, inputPipe[0], 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, outputPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errorPipe[1], 2)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let environmentList = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { environmentList.forEach { free($0) } }
        // Test threads may block signals; the program under test starts with none blocked.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptySet = sigset_t()
        sigemptyset(&emptySet)
        posix_spawnattr_setsigmask(&attributes, &emptySet)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        var child: pid_t = 0
        let result = posix_spawn(&child, executable, &actions, &attributes, argv, environmentList)
        for descriptor in [inputPipe[0], outputPipe[1], errorPipe[1]] where descriptor >= 0 { close(descriptor) }
        guard result == 0 else {
            for descriptor in [inputPipe[1], outputPipe[0], errorPipe[0]] where descriptor >= 0 { close(descriptor) }
            throw TestFailure("posix_spawn \(executable): \(String(cString: strerror(result)))")
        }
        pid = child
        input = stdinPipe ? inputPipe[1] : nil
        output = outputPipe[0]
        errors = errorPipe[0]
        Thread.detachNewThread { [self, child] in
            var status: Int32 = 0
            _ = valueOrErrno("waitpid", { waitpid(child, &status, 0) })
            statusLock.withLock { waitStatus = status }
            exited.signal()
        }
    }

    func write(_ text: String) {
        guard let input else { return }
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(input, $0.baseAddress, $0.count) }
    }

    func closeInput() {
        if let input { close(input) }
        input = nil
    }

    /// Waits for the exit; the shell's status (128+N for signal N), or nil if still running.
    func wait(within seconds: Double) -> Int32? {
        guard exited.wait(timeout: .now() + seconds) == .success else { return nil }
        exited.signal()
        return statusLock.withLock {
            let status = waitStatus!
            return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        }
    }

    var isRunning: Bool { statusLock.withLock { waitStatus == nil } }

    deinit {
        if isRunning { kill(pid, SIGKILL) }
        closeInput()
        close(output)
        close(errors)
    }
}

private let spawnLock = NSLock()

private func makePipe(_ ends: inout [Int32]) -> Bool {
    guard pipe(&ends) == 0 else { return false }
    return fcntl(ends[0], F_SETFD, FD_CLOEXEC) == 0 && fcntl(ends[1], F_SETFD, FD_CLOEXEC) == 0
}

/// Reads a descriptor to its end.
func readAll(_ descriptor: Int32) -> String {
    String(decoding: (try? FileDescriptor(rawValue: descriptor).readToEnd().get()) ?? [], as: UTF8.self)
}

/// Runs a program to completion within `seconds`; kills it and throws if it takes longer.
func run(_ executable: String, _ arguments: [String], within seconds: Double = 60,
         environment: [String: String]? = nil) throws -> Finished {
    let child = try Spawned(executable, arguments, stdinPipe: false, environment: environment)
    final class Texts: @unchecked Sendable { var stdout = "", stderr = "" }
    let texts = Texts()
    let readers = DispatchGroup()
    readers.enter()
    Thread.detachNewThread { texts.stdout = readAll(child.output); readers.leave() }
    readers.enter()
    Thread.detachNewThread { texts.stderr = readAll(child.errors); readers.leave() }
    guard let status = child.wait(within: seconds) else {
        kill(child.pid, SIGKILL)
        throw TestFailure("\(executable) \(arguments) did not finish within \(seconds) s")
    }
    readers.wait()
    return Finished(status: status, stdout: texts.stdout, stderr: texts.stderr)
}

/// `run`, through blk-peak-fixture, so the result's `peakResidentKiB` is the program's own peak
/// memory (wait4 of a child spawned here counts this process's peak too).
func runMeasuringMemory(_ executable: String, _ arguments: [String], within seconds: Double = 60) throws -> Finished {
    let report = NSTemporaryDirectory() + "/blk-peak-\(UUID().uuidString)"
    defer { unlink(report) }
    var result = try run(peakFixturePath, [report, executable] + arguments, within: seconds)
    guard let text = try? String(contentsOfFile: report, encoding: .utf8), let kib = Int(text.split(separator: "\n").first ?? "") else {
        throw TestFailure("blk-peak-fixture reported nothing for \(arguments): \(result)")
    }
    result.peakResidentKiB = kib
    return result
}

func blk(_ arguments: String...) throws -> Finished { try run(blkPath, arguments) }

/// A long-running process spoken to line by line: the lock fixture, a qemu-io holding an image,
/// a `blk hold` waiting for its lock.
final class LineProcess: @unchecked Sendable {
    let child: Spawned
    private let lock = NSLock()
    private var lines: [String] = []
    private var errorText = ""
    private let arrived = DispatchSemaphore(value: 0)
    /// Signalled once stderr has been read to its end.
    private let errorsRead = DispatchSemaphore(value: 0)
    let arguments: [String]

    init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws {
        self.arguments = [executable] + arguments
        child = try Spawned(executable, arguments, stdinPipe: true, environment: environment)
        Thread.detachNewThread { [self, child] in
            var pending = [UInt8]()
            var buffer = [UInt8](repeating: 0, count: 4096)
            // Whatever has arrived, not a full buffer: the lines come one at a time.
            while case .success(let count) = valueOrErrno("read", { read(child.output, &buffer, buffer.count) }), count > 0 {
                pending += buffer[0..<count]
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: pending[..<newline], as: UTF8.self)
                    pending.removeSubrange(...newline)
                    lock.withLock { lines.append(line) }
                    arrived.signal()
                }
            }
        }
        Thread.detachNewThread { [self, child] in
            let text = readAll(child.errors)
            lock.withLock { errorText = text }
            errorsRead.signal()
        }
    }

    /// A lock fixture, once it has said "ready".
    static func fixture() throws -> LineProcess {
        let fixture = try LineProcess(fixturePath, [])
        let greeting = try fixture.nextLine()
        guard greeting == "ready" else { throw TestFailure("fixture said \(greeting)") }
        return fixture
    }

    /// A state fixture (blk-state-fixture), once it has said "ready".
    static func stateFixture() throws -> LineProcess {
        let fixture = try LineProcess(stateFixturePath, [])
        let greeting = try fixture.nextLine()
        guard greeting == "ready" else { throw TestFailure("state fixture said \(greeting)") }
        return fixture
    }

    var pid: Int32 { child.pid }

    /// What the process wrote to stderr: once it has exited, all of it (the reading thread may
    /// still be draining the pipe when the exit is seen, so wait for it, seconds at most).
    var stderr: String {
        if !child.isRunning, errorsRead.wait(timeout: .now() + 10) == .success { errorsRead.signal() }
        return lock.withLock { errorText }
    }

    func send(_ line: String) { child.write(line + "\n") }

    func nextLine(within seconds: Double = 20) throws -> String {
        guard arrived.wait(timeout: .now() + seconds) == .success else {
            throw TestFailure("no answer within \(seconds) s from \(arguments); stderr: \(stderr)")
        }
        return lock.withLock { lines.removeFirst() }
    }

    /// Sends a command and returns its one-line answer.
    @discardableResult
    func request(_ line: String, within seconds: Double = 20) throws -> String {
        send(line)
        return try nextLine(within: seconds)
    }

    /// The answer to an `open`, checked, as the handle number the fixture gave.
    func open(_ path: String, _ access: String = "rw", mode: String = "auto") throws -> Int {
        let answer = try request("open \(path) \(access) \(mode)")
        guard answer.hasPrefix("ok "), let handle = Int(answer.dropFirst(3)) else { throw TestFailure("open: \(answer)") }
        return handle
    }

    func exitStatus(within seconds: Double) -> Int32? { child.wait(within: seconds) }

    func kill9() {
        kill(pid, SIGKILL)
        _ = child.wait(within: 20)
    }

    /// Closes stdin (the fixture and qemu-io quit on EOF) and waits for the exit status.
    @discardableResult
    func finish(within seconds: Double = 20) throws -> Int32 {
        child.closeInput()
        guard let status = child.wait(within: seconds) else {
            kill(pid, SIGKILL)
            throw TestFailure("\(arguments) did not exit within \(seconds) s")
        }
        return status
    }
}

/// Waits until `condition` holds, checking it every few milliseconds, for at most `seconds`.
func eventually(within seconds: Double = 20, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        usleep(2_000)
    }
    return try condition()
}
