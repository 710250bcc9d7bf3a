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
        var forwardedSet = sigset_t()
        sigemptyset(&forwardedSet)
        for signalNumber in forwarded {
            sigaddset(&forwardedSet, signalNumber)
            signal(signalNumber) { received in
                let child = runningChild.load(ordering: .relaxed)
                if child > 0 { kill(child, received) }
            }
        }
        // A parent may have started us with signals blocked (thread pools block them); handled
        // signals must get through, and the command starts with a clean mask of its own.
        pthread_sigmask(SIG_UNBLOCK, &forwardedSet, nil)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptySet = sigset_t()
        sigemptyset(&emptySet)
        posix_spawnattr_setsigmask(&attributes, &emptySet)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))

        var pid: pid_t = 0
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let spawned = posix_spawnp(&pid, arguments[0], nil, &attributes, argv, environ)
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
