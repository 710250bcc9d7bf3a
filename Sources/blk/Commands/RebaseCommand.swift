// `blk rebase`: move an image onto another backing image, as qemu-img 7.2 rebase does. Safe mode
// copies into the image what its old backing chain reads where the new backing image reads
// otherwise (BlockLayer's ImageRebase), then rewrites the header (the format's
// changeBackingFile); -u rewrites only the header, without opening any backing image; -b ""
// makes the image stand alone. The new backing format (-F) is required where qemu-img 7.2
// requires it — checked here before any copying, where qemu-img checks it after.
import ArgumentParser
import BlockCLI
import BlockLayer
import BlockLocking

struct RebaseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebase",
        abstract: "Change an image's backing file, keeping what the guest reads (qemu-img rebase); -u changes only the header.")

    @Option(name: .shortAndLong, help: "The image's format; probed when not given.") var format: String?
    @Option(name: .customShort("b"), help: ArgumentHelp("The new backing file, as the header is to name it (relative to the image's folder); \"\" for none.", valueName: "backing"))
    var backing: String?
    @Option(name: .customShort("F"), help: ArgumentHelp("The new backing file's format (required with a backing file).", valueName: "format"))
    var backingFormat: String?
    @Flag(name: .customShort("u"), help: "Unsafe: rewrite only the header; the backing files are not opened.") var unsafe = false
    @Option(name: .customShort("t"), help: "The image's cache mode: writeback, none, or unsafe.") var cache = CacheMode.writeback
    @Option(name: .customShort("T"), help: "The new backing file's cache mode: writeback, none, or unsafe.") var sourceCache = CacheMode.writeback
    @Flag(name: [.customShort("U"), .customLong("force-share")], help: "Open the new backing file without keeping others from writing it (QEMU's -U).")
    var forceShare = false
    @Flag(name: .customShort("p"), help: "Show progress even when stderr is not a terminal.") var progress = false
    @Flag(name: .customShort("q"), help: "Quiet: no progress.") var quiet = false
    @Option(help: "auto: lock when OFD locks work; on: always; off: never.") var locking: LockingMode = .auto
    @Option(help: ArgumentHelp("Make a request to the image fail, for testing error paths (docs/block-layer.md).", valueName: "rule"))
    var injectFault: [FaultRule] = []
    @Option(help: ArgumentHelp("Append every write and flush to the image to FILE, for crash-state tests.", valueName: "file"))
    var recordWrites: String?
    @OptionGroup(title: "Leases across hosts") var leases: LeaseConfigOptions
    @Flag(help: "Print errors also as JSON on stdout.") var json = false
    @Argument(help: "The image to rebase.") var image: String

    func validate() throws {
        guard unsafe || backing != nil else { throw ValidationError("Must specify backing file (-b) or use unsafe mode (-u)") }
    }

    func run() throws {
        // -b "" (or -u without -b): no backing file, and no format for it.
        let newName = backing.flatMap { $0.isEmpty ? nil : $0 }
        if let backingFormat, BlockFormats.named(backingFormat) == nil {
            throw report(BlockError(.unsupported, "Invalid format name: '\(backingFormat)'"), json: json)
        }
        if let newName, backingFormat == nil {
            throw report(BlockError(.invalidRequest, "Could not change the backing file to '\(newName)': backing format must be specified"), json: json)
        }
        var options = OpenOptions(format: format, writable: true, locking: locking, cache: cache, faults: injectFault,
                                  writeJournalPath: recordWrites, lease: leases.policy)
        options.opensBacking = !unsafe
        let opened = try openImage(image, options, json: json)
        let bar = quiet ? nil : Progress(forced: progress)
        do throws(BlockError) {
            if !unsafe {
                let newBacking = try newName.map { (name) throws(BlockError) in try openNewBacking(name) }
                let length = try opened.length()
                try ImageRebase(opened, onto: newBacking).run { done in
                    bar?.update(Double(done) / Double(max(length, 1)), "")
                }
                try newBacking?.close()
            }
            do throws(BlockError) {
                try opened.changeBackingFile(newName, format: newName == nil ? nil : backingFormat)
            } catch {
                var failed = error
                failed.message = "Could not change the backing file to '\(newName ?? "")': \(error.message)"
                throw failed
            }
            bar?.finish()
            try opened.close()
        } catch {
            bar?.finish()
            throw report(error, json: json)
        }
    }

    /// The new backing file, read-only and shared as qemu-img opens it: its path as the image's
    /// header will resolve it, beside the image.
    private func openNewBacking(_ name: String) throws(BlockError) -> BlockImage {
        let path: String
        if name.hasPrefix("/") {
            path = name
        } else if let slash = image.lastIndex(of: "/") {
            path = String(image[...slash]) + name
        } else {
            path = name
        }
        do throws(BlockError) {
            let opened = try BlockImage.open(path, options: OpenOptions(format: backingFormat, forceShare: forceShare, locking: locking,
                                                                       cache: sourceCache, lease: leases.policy))
            opened.warnings.forEach(printWarning)
            return opened
        } catch {
            var failed = error
            failed.message = "Could not open new backing file '\(name)': \(error.message)"
            throw failed
        }
    }
}
