// `blk io`: I/O commands on one open image, in order, like qemu-io. A failing command is
// reported and the next one still runs; the exit status is 1 if any failed (as qemu-io).
import ArgumentParser
import BlockCLI
import BlockIOScript
import BlockLayer
import BlockLocking
import FoundationEssentials
import Glibc
import Posix

struct IOCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "io",
        abstract: "Run qemu-io-like commands on one open image.",
        discussion: """
            Commands: read [-P BYTE] OFF LEN · write [-P BYTE] [-z | -c] OFF LEN · flush · sleep MS · \
            lock shared|exclusive · unlock. With -P, read verifies every byte; write -c stores whole qcow2 clusters compressed. lock waits up to \
            --timeout seconds for the transaction lock; unlock releases the latest lock.
            """
    )

    @OptionGroup var imageOptions: ImageOptions
    @Option(name: .customShort("c"), help: "A command; repeat for more.") var commands: [String] = []
    @Option(help: "Seconds `lock` waits for the transaction lock (default 10; 0 to 1000000, decimals allowed).", transform: Seconds.parse)
    var timeout = IOCommand.defaultTimeout
    @Flag(help: "Print errors also as JSON on stdout.") var json = false
    @Argument(help: "The image file.") var image: String

    /// --timeout when not given (also the short verbs' parse, Support/ShortVerbs.swift).
    static let defaultTimeout = Seconds(10)

    func validate() throws {
        for command in commands {
            if case .failure(let error) = IOCommandStep.parse(command) { throw ValidationError(error.description) }
        }
    }

    func run() throws {
        let steps = commands.map { try! IOCommandStep.parse($0).get() }
        // Read-write unless -r or -U, as qemu-io opens; -U without -r is refused as QEMU does.
        let opened = try imageOptions.open(image, writable: true, json: json)
        var held: [LockKind] = []
        var failed = false
        var lost = false
        for step in steps {
            do throws(BlockError) {
                if try !execute(step, on: opened, held: &held) { failed = true }
            } catch {
                failed = true
                printFailure(step, error)
                // A lost lock or lease is not one failed request: no later one can succeed, and
                // the image may be another host's now. The script stops, as a fenced writer must.
                if error.code == .lockLost {
                    lost = true
                    break
                }
            }
        }
        // Closing writes back the metadata of the writes above (qcow2): a failure there means
        // they are not reachable, which must not end as success.
        do throws(BlockError) {
            try opened.close()
        } catch {
            failed = true
            lost = lost || error.code == .lockLost
            printError("close failed: \(error.description)")
        }
        if lost { throw ExitCode(ExitStatus.ioError) }
        if failed { throw ExitCode(ExitStatus.failure) }
    }

    /// Runs one step; false when it ran but its check failed (a pattern mismatch, already printed).
    private func execute(_ step: IOCommandStep, on image: BlockImage, held: inout [LockKind]) throws(BlockError) -> Bool {
        // The range first, then the buffer: `write 0 2G` on a 1 MiB image filled 2 GB and then
        // failed this check.
        if let (offset, count) = step.range { try image.checkRange(offset, count) }
        switch step {
        case .read(let offset, let count, let pattern):
            let started = currentMonotonicNanoseconds()
            let buffer = Self.buffer(count)
            defer { buffer.deallocate() }
            try image.read(at: offset, into: buffer)
            if let pattern, let bad = buffer.firstIndex(where: { $0 != pattern }) {
                print("Pattern verification failed at offset \(offset + Int64(bad)), \(count) bytes")
                printOutcome("read", count, offset, since: started)
                return false
            }
            printOutcome("read", count, offset, since: started)
        case .write(let offset, let count, let kind):
            let started = currentMonotonicNanoseconds()
            switch kind {
            case .zeroes:
                try image.writeZeroes(at: offset, byteCount: count)
            case .pattern(let pattern):
                let buffer = Self.buffer(count)
                defer { buffer.deallocate() }
                buffer.initializeMemory(as: UInt8.self, repeating: pattern)
                try image.write(at: offset, from: UnsafeRawBufferPointer(buffer))
            case .compressed(let pattern):
                // qemu-io's `write -c`: whole clusters (or the image's last, shorter one), each compressed.
                let buffer = Self.buffer(count)
                defer { buffer.deallocate() }
                buffer.initializeMemory(as: UInt8.self, repeating: pattern)
                try image.writeCompressed(at: offset, from: UnsafeRawBufferPointer(buffer))
            }
            printOutcome("wrote", count, offset, since: started)
        case .flush:
            try image.flush()
        case .sleep(let milliseconds):
            // Parsing bounded it: the product fits, and nanosleep takes any length usleep does not.
            var request = timespec(tv_sec: Int(milliseconds / 1000), tv_nsec: Int(milliseconds % 1000) * 1_000_000)
            var left = timespec()
            // Interrupted, nanosleep leaves in `left` the time still to sleep: the retry sleeps that.
            _ = valueOrErrno("nanosleep", {
                defer { request = left }
                return nanosleep(&request, &left)
            })
        case .lock(let kind):
            do throws(LockingError) {
                try image.transactionLock.acquire(kind, deadline: .after(timeout.duration))
            } catch {
                throw BlockError(error)
            }
            held.append(kind)
        case .unlock:
            guard let kind = held.popLast() else { throw BlockError(.invalidRequest, "no transaction lock is held") }
            do throws(LockingError) {
                try image.transactionLock.release(kind)
            } catch {
                throw BlockError(error)
            }
        }
        return true
    }

    /// A request's buffer: parsing bounded `count` (IOCommandStep.maximumRequestBytes), and the
    /// range was checked against the image before.
    private static func buffer(_ count: Int64) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer.allocate(byteCount: Int(count), alignment: 4096)
    }

    /// qemu-io's two lines: what was done, then the rate.
    private func printOutcome(_ verb: String, _ count: Int64, _ offset: Int64, since started: Int64) {
        let seconds = max(Double(currentMonotonicNanoseconds() - started) / 1e9, 1e-9)
        print("\(verb) \(count)/\(count) bytes at offset \(offset)")
        print(humanSize(count) + formatted(", 1 ops; %.4f sec (%.3f MiB/sec and %.4f ops/sec)",
                                           seconds, Double(count) / 1_048_576 / seconds, 1 / seconds))
    }

    private func printFailure(_ step: IOCommandStep, _ error: BlockError) {
        let verb: String = switch step {
        case .read: "read"
        case .write: "write"
        case .flush: "flush"
        case .sleep: "sleep"
        case .lock: "lock"
        case .unlock: "unlock"
        }
        printError("\(verb) failed: \(error.description)")
    }
}
