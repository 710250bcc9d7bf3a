// ChildProcess: run a command the way flock(1) does — in the foreground, with our stdio and
// environment, and with the descriptor that holds the lock left open in it — and come back with
// the status a shell would report for it.
//
// Signals: SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to blk (with kill(2)) are passed on to the
// command, so it finishes its work — and blk keeps the lock — until it exits. Those a terminal
// sends go to the whole foreground process group, the command included, so they are not passed
// on a second time. A signal that was ignored when blk started (nohup, a background job of a
// non-interactive shell) stays ignored, for blk and for the command, which inherits SIG_IGN
// through exec: a handler here would reset it to the default in the command. The signals stay
// blocked from before the spawn until the pid is known, so none is lost in between; the child
// is waited for without reaping (WNOWAIT) until the pid is cleared, so a late signal can never
// hit an unrelated process that reused it.
import BlockCLI
import Glibc
import Posix
import Synchronization

/// The pid of the running child, for the signal handler (a global, since a C handler captures
/// nothing; an atomic, since a signal can arrive on any thread at any time).
private let runningChild = Atomic<Int32>(0)

enum ChildProcess {
    static let forwarded = [SIGINT, SIGTERM, SIGHUP, SIGQUIT]

    /// The environment variable that names the passed descriptor to the command.
    static let passedDescriptorVariable = "BLK_HOLD_FD"

    /// Runs `arguments` (searched in PATH) and returns its exit status: its own code, 128+N if
    /// signal N killed it, 127 if it could not be found, 126 if it could not be run. `passing`
    /// stays open in the command at the same number (close-on-exec cleared in the child only),
    /// and `BLK_HOLD_FD` names it.
    static func run(_ arguments: [String], passing passed: Int32) -> Int32 {
        let handled = forwarded.filter { !isIgnored($0) }
        var handledSet = sigset_t()
        sigemptyset(&handledSet)
        for signalNumber in handled { sigaddset(&handledSet, signalNumber) }
        pthread_sigmask(SIG_BLOCK, &handledSet, nil)
        defer { pthread_sigmask(SIG_UNBLOCK, &handledSet, nil) }
        for signalNumber in handled {
            var action = sigaction()
            action.__sigaction_handler.sa_sigaction = { received, info, _ in
                // A terminal's signal (SI_KERNEL) reached the command already, through its group.
                guard let info, info.pointee.si_code <= 0 else { return }
                let child = runningChild.load(ordering: .relaxed)
                if child > 0 { kill(child, received) }
            }
            action.sa_flags = SA_SIGINFO | SA_RESTART
            sigaction(signalNumber, &action, nil)
        }
        // The one ignored signal not left alone: an inherited "ignore SIGCHLD" would make the
        // kernel reap the child behind our back, and its status would be lost.
        signal(SIGCHLD, SIG_DFL)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptySet = sigset_t()
        sigemptyset(&emptySet)
        posix_spawnattr_setsigmask(&attributes, &emptySet)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // dup2 onto its own number clears close-on-exec, in the child only (POSIX 2024, glibc).
        posix_spawn_file_actions_adddup2(&actions, passed, passed)

        var pid: pid_t = 0
        let argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let environment = environmentNaming(passed)
        defer { environment.forEach { free($0) } }
        let spawned = posix_spawnp(&pid, arguments[0], &actions, &attributes, argv, environment)
        guard spawned == 0 else {
            printError("\(arguments[0]): \(String(cString: strerror(spawned)))")
            return spawned == ENOENT ? 127 : 126
        }
        runningChild.store(pid, ordering: .relaxed)
        pthread_sigmask(SIG_UNBLOCK, &handledSet, nil) // signals that came meanwhile go through now

        var info = siginfo_t()
        if case .failure(let failure) = valueOrErrno("waitid", { waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) }) {
            printError("waiting for \(arguments[0]): \(failure.errno)")
            return 1
        }
        runningChild.store(0, ordering: .relaxed)
        var status: Int32 = 0
        _ = valueOrErrno("waitpid", { waitpid(pid, &status, 0) })
        return shellStatus(ofWaitStatus: status)
    }

    private static func isIgnored(_ signalNumber: Int32) -> Bool {
        var current = sigaction()
        sigaction(signalNumber, nil, &current)
        return unsafeBitCast(current.__sigaction_handler.sa_handler, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self)
    }

    /// Our environment with `BLK_HOLD_FD` set to `descriptor` (replacing one an outer hold set),
    /// as strings to free.
    private static func environmentNaming(_ descriptor: Int32) -> [UnsafeMutablePointer<CChar>?] {
        let prefix = passedDescriptorVariable + "="
        var entries: [UnsafeMutablePointer<CChar>?] = []
        var entry: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> = environ
        while let variable = entry.pointee {
            if !String(cString: variable).hasPrefix(prefix) { entries.append(strdup(variable)) }
            entry += 1
        }
        return entries + [strdup(prefix + String(descriptor)), nil]
    }
}
