// Processes: running the real programs under test — blk, the lock fixture, qemu-io, qemu-img —
// with deadlines of seconds, never sleeps, so the tests hold on a loaded 2-core machine.
import Foundation
import Glibc
import Testing

/// The folder holding the binaries `swift build` made (next to this test bundle).
let buildDirectory: String = {
    let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    return executable.deletingLastPathComponent().path
}()

let blkPath = buildDirectory + "/blk"
let fixturePath = buildDirectory + "/blk-lock-fixture"

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// What a finished process left behind.
struct Finished: CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String
    var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
}

/// Runs a program to completion within `seconds`; kills it and throws if it takes longer.
func run(_ executable: String, _ arguments: [String], within seconds: Double = 60,
         environment: [String: String]? = nil) throws -> Finished {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let output = Pipe(), errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    process.standardInput = FileHandle.nullDevice
    let done = DispatchSemaphore(value: 0)
    process.terminationHandler = { _ in done.signal() }
    try process.run()
    let collected = CollectedOutput(output, errors)
    guard done.wait(timeout: .now() + seconds) == .success else {
        kill(process.processIdentifier, SIGKILL)
        throw TestFailure("\(executable) \(arguments) did not finish within \(seconds) s")
    }
    let (stdout, stderr) = collected.wait()
    return Finished(status: process.terminationStatus, stdout: stdout, stderr: stderr)
}

func blk(_ arguments: String...) throws -> Finished { try run(blkPath, arguments) }

/// Drains both pipes on threads of their own, so a chatty child never blocks on a full pipe.
final class CollectedOutput: @unchecked Sendable {
    private var texts = ["", ""]
    private let group = DispatchGroup()

    init(_ pipes: Pipe...) {
        for (index, pipe) in pipes.enumerated() {
            group.enter()
            Thread.detachNewThread {
                let data = pipe.fileHandleForReading.readDataToEndOfFile()
                self.texts[index] = String(decoding: data, as: UTF8.self)
                self.group.leave()
            }
        }
    }

    func wait() -> (String, String) {
        group.wait()
        return (texts[0], texts[1])
    }
}

/// A long-running process spoken to line by line: the lock fixture, a qemu-io holding an image,
/// a `blk hold` waiting for its lock.
final class LineProcess: @unchecked Sendable {
    let process = Process()
    private let input = Pipe(), output = Pipe(), errors = Pipe()
    private let lock = NSLock()
    private var lines: [String] = []
    private var errorText = ""
    private let arrived = DispatchSemaphore(value: 0)
    private let exited = DispatchSemaphore(value: 0)

    init(_ executable: String, _ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        process.terminationHandler = { [exited] _ in exited.signal() }
        try process.run()
        Thread.detachNewThread { [self] in
            var pending = ""
            while true {
                let data = output.fileHandleForReading.availableData
                if data.isEmpty { break }
                pending += String(decoding: data, as: UTF8.self)
                while let newline = pending.firstIndex(of: "\n") {
                    let line = String(pending[..<newline])
                    pending = String(pending[pending.index(after: newline)...])
                    lock.withLock { lines.append(line) }
                    arrived.signal()
                }
            }
        }
        Thread.detachNewThread { [self] in
            let data = errors.fileHandleForReading.readDataToEndOfFile()
            lock.withLock { errorText = String(decoding: data, as: UTF8.self) }
        }
    }

    /// A lock fixture, once it has said "ready".
    static func fixture() throws -> LineProcess {
        let fixture = try LineProcess(fixturePath, [])
        let greeting = try fixture.nextLine()
        guard greeting == "ready" else { throw TestFailure("fixture said \(greeting)") }
        return fixture
    }

    var pid: Int32 { process.processIdentifier }

    var stderr: String { lock.withLock { errorText } }

    func send(_ line: String) {
        input.fileHandleForWriting.write(Data((line + "\n").utf8))
    }

    func nextLine(within seconds: Double = 20) throws -> String {
        guard arrived.wait(timeout: .now() + seconds) == .success else {
            throw TestFailure("no answer within \(seconds) s from \(process.arguments ?? []); stderr: \(stderr)")
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

    func hasExited(within seconds: Double) -> Bool { exited.wait(timeout: .now() + seconds) == .success }

    func kill9() {
        kill(pid, SIGKILL)
        _ = hasExited(within: 20)
    }

    /// Closes stdin (the fixture and qemu-io quit on EOF) and waits for the exit status.
    @discardableResult
    func finish(within seconds: Double = 20) throws -> Int32 {
        try? input.fileHandleForWriting.close()
        guard hasExited(within: seconds) else {
            kill(pid, SIGKILL)
            throw TestFailure("\(process.arguments ?? []) did not exit within \(seconds) s")
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(pid, SIGKILL) }
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
