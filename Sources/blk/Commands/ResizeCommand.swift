// `blk resize`: grow or shrink an image, as `qemu-img resize` 7.2 does (SIZE, +SIZE to add,
// -SIZE to take away; a smaller size only with --shrink). Blk.main lets a last argument such as
// `-1G` through as the size, as qemu-img takes its last argument before parsing options.
import ArgumentParser
import BlockCLI
import BlockLayer
import BlockLocking

struct ResizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resize", abstract: "Resize an image to SIZE, or by +SIZE or -SIZE; a smaller size needs --shrink.")

    @Option(name: .shortAndLong, help: "The image format; probed from the image when not given.") var format: String?
    @Flag(help: "Allow the image to become smaller: the data past its new end is lost.") var shrink = false
    @Flag(name: .customShort("q"), help: "Quiet: print nothing on success.") var quiet = false
    @Option(help: "auto: lock when OFD locks work; on: always; off: never.") var locking: LockingMode = .auto
    @OptionGroup(title: "Leases across hosts") var leases: LeaseConfigOptions
    @Flag(help: "Print errors also as JSON on stdout.") var json = false
    @Option(help: ArgumentHelp("Make a request to the image fail (testing; as --inject-fault of other commands).", valueName: "rule", visibility: .hidden))
    var injectFault: [FaultRule] = []
    @Option(help: ArgumentHelp("Append the image's writes and flushes to FILE (crash-state tests).", valueName: "file", visibility: .hidden))
    var recordWrites: String?
    @Argument(help: "The image file.") var image: String
    @Argument(help: "The new size, +SIZE to grow by SIZE or -SIZE to shrink by SIZE; K/M/G/T suffixes.") var size: String

    func run() throws {
        let sign: Int64? = size.hasPrefix("+") ? 1 : size.hasPrefix("-") ? -1 : nil
        guard let amount = ByteCount.parse(sign == nil ? size : String(size.dropFirst())) else {
            throw ValidationError("Invalid image size specified: \(size)")
        }
        let options = OpenOptions(format: format, writable: true, locking: locking, faults: injectFault, writeJournalPath: recordWrites,
                                  lease: leases.policy)
        let opened = try openImage(image, options, json: json)
        var shrinkRefused = false
        do throws(BlockError) {
            let current = try opened.length()
            let (target, overflow) = sign.map { current.addingReportingOverflow($0 * amount) } ?? (amount, false)
            guard !overflow else { throw BlockError(.invalidRequest, "Invalid image size specified: \(size)") }
            // qemu-img's checks, in its order and words.
            guard target > 0 else { throw BlockError(.invalidRequest, "New image size must be positive") }
            if target < current && !shrink {
                shrinkRefused = true
            } else {
                try opened.resize(to: target).forEach(printWarning)
            }
            try opened.close()
        } catch {
            throw report(error, json: json)
        }
        if shrinkRefused {
            let status = report(BlockError(.invalidRequest, "Use the --shrink option to perform a shrink operation."), json: json)
            printWarning("Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.")
            throw status
        }
        if !quiet { print("Image resized.") }
    }
}
