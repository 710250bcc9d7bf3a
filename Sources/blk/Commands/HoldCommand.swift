// `blk hold`: flock(1) for the transaction lock — take it, run a command that inherits it, let go.
import ArgumentParser
import BlockCLI
import BlockLocking

struct HoldCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hold",
        abstract: "Take the image's transaction lock, run a command, release the lock; exit with the command's status.",
        discussion: """
            Waits for the lock for ever unless --timeout or --no-wait is given (as flock(1) does); \
            exits 75 naming the holders when the lock is not had in time. As flock(1) does, the \
            command inherits the descriptor that holds the lock (its number is in BLK_HOLD_FD): \
            the lock lasts until the command and every process it passed the descriptor to have \
            exited, even if blk is killed first. The descriptor is opened for this hold alone and \
            holds nothing else; for --exclusive it is open read-write, as the kernel grants write \
            locks only through such a descriptor, so a command that gives up privileges should \
            close it first. Signals ignored when blk starts (nohup) stay ignored in the command; \
            SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to blk otherwise are passed on to it.
            """
    )

    @Flag(name: .customLong("shared"), help: "Take the lock shared (readers).") var shared = false
    @Flag(name: .customLong("exclusive"), help: "Take the lock exclusive (the default).") var exclusive = false
    @Option(help: "Give up after SEC seconds (0 to 1000000, decimals allowed).", transform: Seconds.parse) var timeout: Seconds?
    @Flag(help: "Give up at once if the lock is held.") var noWait = false
    @Flag(help: "Print errors also as JSON on stdout.") var json = false
    @Argument(help: "The image file.") var image: String
    @Argument(parsing: .postTerminator, help: "The command to run, after --.") var command: [String] = []

    func validate() throws {
        if shared && exclusive { throw ValidationError("--shared and --exclusive exclude each other") }
        if noWait && timeout != nil { throw ValidationError("--timeout and --no-wait exclude each other") }
        if command.isEmpty { throw ValidationError("missing the command to run, after --") }
    }

    func run() throws {
        let kind: LockKind = shared ? .shared : .exclusive
        let file: LockedImageFile
        do throws(LockingError) {
            // Locking on: a hold that silently locked nothing would be worse than an error.
            file = try LockedImageFile(path: image, writable: kind == .exclusive, mode: .on)
            file.locks.decision.warnings.forEach(printWarning)
            if noWait {
                if try file.locks.transaction.tryAcquire(kind) == .wouldBlock {
                    throw LockingError(.conflict, "the transaction lock on \(image) is held; not waiting (--no-wait)",
                                       path: image, holders: file.locks.transaction.holders())
                }
            } else if let timeout {
                do throws(LockingError) {
                    try file.locks.transaction.acquire(kind, deadline: .after(timeout.duration))
                } catch where error.code == .timedOut {
                    throw LockingError(.timedOut, "timed out after \(timeout) waiting for the \(kind) transaction lock on \(image)",
                                       path: image, holders: error.holders)
                }
            } else {
                try file.locks.transaction.acquire(kind)
            }
        } catch {
            throw report(error, json: json)
        }
        let status = withExtendedLifetime(file) { ChildProcess.run(command, passing: file.descriptor.rawValue) }
        throw ExitCode(status)
    }
}
