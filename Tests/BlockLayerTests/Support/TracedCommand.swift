// TracedCommand: a program run under strace, for tests that must know which system calls reached
// a file and when. Every call that changes a file or forces it to storage is slowed down by a
// fixed delay before it runs — so a test can act while the program is in the middle of its work,
// whatever the machine's load — and logged with its start time, its descriptor's path, and its
// duration. The sockets the program connects, closes and receives on are logged too, so a test
// can tell when it talked to whom.
import Foundation
import Glibc

final class TracedCommand: @unchecked Sendable {
    static let stracePath = "/usr/bin/strace"
    static var available: Bool { access(stracePath, X_OK) == 0 }

    /// The calls that change a file or force it to storage.
    static let writingCalls: Set<String> = ["pwrite64", "pwritev", "pwritev2", "write", "writev", "ftruncate", "fallocate",
                                            "fdatasync", "fsync", "sync_file_range", "copy_file_range"]
    /// Slowed: every writing call but the plain write(2)s, which are also how messages reach a terminal.
    private static let slowedCalls = writingCalls.subtracting(["write", "writev"])

    let process: Spawned
    let executable: String
    let logPath: String

    /// Runs `executable` under strace, each writing call held `delay` seconds before it runs.
    init(_ executable: String, _ arguments: [String], delay: Double, logPath: String, environment: [String: String]) throws {
        self.logPath = logPath
        self.executable = executable
        let traced = (Self.writingCalls.union(["connect", "close", "recvmsg"])).sorted().joined(separator: ",")
        let slowed = Self.slowedCalls.sorted().joined(separator: ",")
        process = try Spawned(Self.stracePath, ["-f", "-qq", "-ttt", "-T", "-yy", "--seccomp-bpf", "-e", "trace=\(traced)",
                                                "-e", "inject=\(slowed):delay_enter=\(Int(delay * 1_000_000))", "-o", logPath,
                                                executable] + arguments,
                              stdinPipe: false, environment: environment)
        // Drained as the program runs: one that fills a pipe stops in write(2), which is not the
        // kind of stop a test means.
        Thread.detachNewThread { [self] in _ = readAll(process.output) }
        Thread.detachNewThread { [self] in
            errorText = readAll(process.errors)
            errorsRead.signal()
        }
    }

    private let errorsRead = DispatchSemaphore(value: 0)
    private var errorText = ""

    /// What the program wrote to stderr, once it has exited.
    var stderr: String {
        errorsRead.wait()
        errorsRead.signal()
        return errorText
    }

    /// The traced program's pid, once it runs: the child of strace that executed it (strace
    /// forks short-lived children of its own first, to probe what the kernel supports).
    func tracedPid(within seconds: Double = 20) -> pid_t? {
        var pid: pid_t?
        _ = eventually(within: seconds) {
            let children = (try? String(contentsOfFile: "/proc/\(process.pid)/task/\(process.pid)/children", encoding: .utf8)) ?? ""
            pid = children.split(separator: " ").compactMap { pid_t($0) }.first { child in
                let command = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(child)/cmdline"))) ?? Data()
                return command.split(separator: 0).first.map { String(decoding: $0, as: UTF8.self) } == executable
            }
            return pid != nil
        }
        return pid
    }

    /// One logged call: when it started, when it returned (nil while it has not), and its text.
    struct Call {
        var thread: Int
        var start: Double
        var end: Double?
        var name: String
        /// What strace says the first argument is: "4</srv/disk.raw>" gives "/srv/disk.raw".
        var descriptorTarget: String?
        var text: String

        /// The socket's inode, for a descriptor strace shows as "UNIX-STREAM:[INODE…]".
        var socketInode: Substring? {
            guard let target = descriptorTarget, target.hasPrefix("UNIX"), let open = target.firstIndex(of: "[") else { return nil }
            return target[target.index(after: open)...].prefix { $0.isNumber }
        }
    }

    /// The calls logged so far, in the order they started.
    func calls() -> [Call] {
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        let complete = text[..<(text.lastIndex(of: "\n") ?? text.startIndex)] // strace may be writing the last line
        var calls: [Call] = []
        var unfinished: [Int: Int] = [:] // thread → index of its call in progress
        for line in complete.split(separator: "\n") {
            // "PID TIME CALL…", the pid padded with spaces.
            guard let afterThread = line.firstIndex(of: " "), let thread = Int(line[..<afterThread]) else { continue }
            let timed = line[afterThread...].drop { $0 == " " }
            guard let afterTime = timed.firstIndex(of: " "), let start = Double(timed[..<afterTime]) else { continue }
            let rest = timed[timed.index(after: afterTime)...]
            let duration = Self.duration(in: rest)
            if rest.hasPrefix("<... ") {
                if let index = unfinished.removeValue(forKey: thread) {
                    calls[index].end = duration.map { calls[index].start + $0 }
                    calls[index].text += " " + rest
                }
                continue
            }
            guard let parenthesis = rest.firstIndex(of: "(") else { continue }
            let name = String(rest[..<parenthesis])
            var target: String?
            let arguments = rest[rest.index(after: parenthesis)...]
            // "5</srv/disk.raw>, …" or "8<UNIX-STREAM:[1->2]>) …": the first ">" may be inside.
            if let open = arguments.firstIndex(of: "<"), arguments[..<open].allSatisfy(\.isNumber), !arguments[..<open].isEmpty,
               let close = [">, ", ">)"].compactMap({ arguments[open...].range(of: $0)?.lowerBound }).min() {
                target = String(arguments[arguments.index(after: open)..<close])
            }
            calls.append(Call(thread: thread, start: start, end: duration.map { start + $0 }, name: name, descriptorTarget: target, text: String(rest)))
            if rest.hasSuffix("<unfinished ...>") { unfinished[thread] = calls.count - 1 }
        }
        return calls
    }

    /// The "<0.000123>" strace -T ends a finished call with.
    private static func duration(in text: Substring) -> Double? {
        guard text.hasSuffix(">"), let open = text.lastIndex(of: "<") else { return nil }
        return Double(text[text.index(after: open)..<text.index(before: text.endIndex)])
    }
}
