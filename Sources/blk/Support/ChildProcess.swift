// ChildProcess: run a command the way flock(1) does — in the foreground, with our stdio and
// environment — and come back with the status a shell would report for it.
import Glibc
import Synchronization

/// The pid of the running child, for the signal handlers (a global, since C handlers capture
/// nothing; an atomic, since a signal can arrive on any thread at any time).
private let runningChild = Atomic<Int32>(0)

enum ChildProcess {
    /// Runs `arguments` (searched in PATH) and returns its exit status: its own code, 128+N if
    /// signal N killed it, 127 if it could not be found, 126 if it could not be run.
    /// SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to us are passed on, so the child finishes its
    /// work (and we keep the lock) until it exits.
    static func run(_ arguments: [String]) -> Int32 {
        let forwarded = [SIGINT, SIGTERM, SIGHUP, SIGQUIT]
        for signalNumber in forwarded {
            signal(signalNumber) { received in
                let child = runningChild.load(ordering: .relaxed)
                if child > 0 { kill(child, received) }
            }
        }
        var pid: pid_t = 0
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let spawned = posix_spawnp(&pid, arguments[0], nil, nil, argv, environ)
        guard spawned == 0 else {
            printError("\(arguments[0]): \(String(cString: strerror(spawned)))")
            return spawned == ENOENT ? 127 : 126
        }
        runningChild.store(pid, ordering: .relaxed)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        runningChild.store(0, ordering: .relaxed)
        let signalNumber = status & 0x7f
        return signalNumber == 0 ? (status >> 8) & 0xff : 128 + signalNumber
    }
}
