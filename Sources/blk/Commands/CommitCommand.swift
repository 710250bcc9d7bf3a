// `blk commit`: write an overlay's data into its backing image (or BASE further down), then
// empty the overlay, as `qemu-img commit` does (ImageCommit in BlockGraph does the work).
import ArgumentParser
import BlockCLI
import BlockLayer
import BlockLocking

struct CommitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "commit", abstract: "Write an image's data into its backing image, then empty the image.")

    @Option(name: .shortAndLong, help: "The image format; probed from the image when not given.") var format: String?
    @Option(name: .customShort("t"), help: "Cache mode of the images: writeback (flushed when done), none (O_DIRECT), or unsafe (never flushed).")
    var cache = CacheMode.writeback
    @Option(name: .customShort("b"), help: "The image of the backing chain to commit into (default: the backing image); implies -d.")
    var base: String?
    @Flag(name: .customShort("d"), help: "Leave the image as it is (by default it is emptied after the commit).") var keepTop = false
    @Option(name: [.customShort("r"), .customLong("rate-limit")], help: "At most this many bytes of data copied per second (k/M/G/T suffixes; 0: no limit).")
    var rate: String?
    @Flag(name: .customShort("p"), help: "Show progress even when stderr is not a terminal.") var progress = false
    @Flag(name: .customShort("q"), help: "Print nothing on success.") var quiet = false
    @Option(help: "auto: lock when OFD locks work; on: always; off: never.") var locking: LockingMode = .auto
    @OptionGroup(title: "Leases across hosts") var leases: LeaseConfigOptions
    @Flag(help: "Print errors also as JSON on stdout.") var json = false
    @Option(help: ArgumentHelp("Make a request to the image fail (testing; as --inject-fault of other commands).", valueName: "rule", visibility: .hidden))
    var injectFault: [FaultRule] = []
    @Option(help: ArgumentHelp("Make a request to an image of the backing chain fail, each counting its own (testing).", valueName: "rule", visibility: .hidden))
    var injectBaseFault: [FaultRule] = []
    @Option(help: ArgumentHelp("Append the image's writes and flushes to FILE (crash-state tests).", valueName: "file", visibility: .hidden))
    var recordWrites: String?
    @Option(help: ArgumentHelp("Append the writes and flushes into the backing chain to FILE (crash-state tests).", valueName: "file", visibility: .hidden))
    var recordBaseWrites: String?
    @Argument(help: "The image to commit.") var image: String

    func run() throws {
        let limit = try rateLimit(rate)
        var options = OpenOptions(format: format, writable: true, locking: locking, cache: cache, faults: injectFault,
                                  writeJournalPath: recordWrites, lease: leases.policy)
        options.backingFaults = injectBaseFault
        options.backingWriteJournalPath = recordBaseWrites
        let top = try openImage(image, options, json: json)
        let bar = Progress(forced: progress && !quiet)
        do throws(BlockError) {
            let length = try top.length()
            let commit = try ImageCommit(top: top, base: base)
            // qemu-img commit: a base further down implies -d, as emptying the image would leave
            // the images between it and the base reading what the image had hidden.
            try commit.run(emptyingTop: !keepTop && base == nil, rateLimit: limit) { done in
                bar.update(Double(done) / Double(max(length, 1)), "\(humanSize(done)) of \(humanSize(length))")
            }
            bar.finish()
            try top.close()
        } catch {
            bar.finish()
            throw report(error, json: json)
        }
        if !quiet { print("Image committed.") }
    }
}
