// BenchProcess: a program the benchmarks run beside blk (qemu-img, a hand-over peer), started
// with posix_spawn with its standard streams as pipes, /dev/null or ours — what they need of
// Foundation's Process, without loading Foundation into every blk command.
import BlockLayer
import BlockLocking
import Glibc
import Posix
import SystemPackage

final class BenchProcess {
    /// `sameAsOutput` is for stderr: both into the stdout pipe, as a terminal would show them.
    enum Stream { case inherited, null, pipe, sameAsOutput }

    let pid: pid_t
    /// Our ends of the pipes asked for: we write the child's stdin, read its stdout and stderr.
    private(set) var input: Int32?
    let output: Int32?
    let errors: Int32?
    /// The exit status once reaped (see `wait`).
    private var exitStatus: Int32?

    init(_ executable: String, _ arguments: [String], stdin: Stream = .inherited, stdout: Stream = .inherited,
         stderr: Stream = .inherited) throws(SpawnFailure) {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var ours: [Int32] = [], theirs: [Int32] = []
        defer { theirs.forEach { close($0) } }
        func connect(_ stream: Stream, to target: Int32, childReads: Bool) throws(SpawnFailure) -> Int32? {
            switch stream {
            case .inherited:
                return nil
            case .sameAsOutput:
                posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, target)
                return nil
            case .null:
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", childReads ? O_RDONLY : O_WRONLY, 0)
                return nil
            case .pipe:
                var ends: [Int32] = [0, 0]
                // Close-on-exec, so no other child inherits them (pipe2 is not in the Glibc module).
                guard pipe(&ends) == 0 else { throw SpawnFailure(executable, errno) }
                ends.forEach { _ = fcntl($0, F_SETFD, FD_CLOEXEC) }
                let (childEnd, ourEnd) = childReads ? (ends[0], ends[1]) : (ends[1], ends[0])
                posix_spawn_file_actions_adddup2(&actions, childEnd, target) // dup2 clears O_CLOEXEC
                ours.append(ourEnd)
                theirs.append(childEnd)
                return ourEnd
            }
        }
        do throws(SpawnFailure) {
            input = try connect(stdin, to: STDIN_FILENO, childReads: true)
            output = try connect(stdout, to: STDOUT_FILENO, childReads: false)
            errors = try connect(stderr, to: STDERR_FILENO, childReads: false)
        } catch {
            ours.forEach { close($0) }
            throw error
        }
        // An inherited "ignore SIGCHLD" would make the kernel reap the child behind our back.
        signal(SIGCHLD, SIG_DFL)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child = pid_t()
        let result = posix_spawn(&child, executable, &actions, nil, argv, environ)
        guard result == 0 else {
            ours.forEach { close($0) }
            throw SpawnFailure(executable, result)
        }
        pid = child
    }

    deinit {
        // Closed first: a child reading its stdin sees the end and exits, so the wait returns.
        [input, output, errors].compactMap { $0 }.forEach { close($0) }
        wait()
    }

    /// Wall time and output (stdout and stderr together) of one run of `executable`.
    static func timedRun(_ executable: String, _ arguments: [String],
                                 expectedStatus: Int32 = 0) throws(BlockError) -> (seconds: Double, output: [UInt8]) {
        let started = currentMonotonicNanoseconds()
        let process: BenchProcess
        do {
            process = try BenchProcess(executable, arguments, stdout: .pipe, stderr: .sameAsOutput)
        } catch {
            throw BlockError(.ioError, error.description)
        }
        let output = (try? FileDescriptor(rawValue: process.output!).readToEnd().get()) ?? []
        let status = process.wait()
        let seconds = Double(currentMonotonicNanoseconds() - started) / 1e9
        guard status == expectedStatus else {
            throw BlockError(.ioError, "\(executable) \(arguments) exited with \(status): \(String(decoding: output.suffix(2000), as: UTF8.self))")
        }
        return (seconds, output)
    }

    /// Ends the child's stdin: it reads end of file.
    func closeInput() {
        if let input { close(input) }
        input = nil
    }

    /// Whether the child has not exited yet (it is reaped if it has).
    var isRunning: Bool {
        guard exitStatus == nil else { return false }
        var raw: Int32 = 0
        let result = waitpid(pid, &raw, WNOHANG)
        if result == 0 { return true }
        exitStatus = result == pid ? shellStatus(ofWaitStatus: raw) : -1
        return false
    }

    /// Waits for the child; its exit status, 128 + the signal that ended it, or −1 if it could
    /// not be waited for (nothing says it succeeded).
    @discardableResult
    func wait() -> Int32 {
        if let exitStatus { return exitStatus }
        var raw: Int32 = 0
        let result = valueOrErrno("waitpid", { waitpid(pid, &raw, 0) })
        let status = result == .success(pid) ? shellStatus(ofWaitStatus: raw) : -1
        exitStatus = status
        return status
    }
}

struct SpawnFailure: Error, CustomStringConvertible {
    let description: String
    init(_ executable: String, _ code: Int32) { description = "could not run \(executable): \(String(cString: strerror(code)))" }
}
