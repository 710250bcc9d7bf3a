// `blk create`: make a new image; over an image in use it is refused with QEMU's words.
import ArgumentParser
import BlockCLI
import BlockLayer
import BlockLocking
import FoundationEssentials

struct CreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create an image (qcow2 v3 by default).",
        discussion: "With -b, SIZE may be left out: the new image takes the backing image's size."
    )

    @Option(name: .shortAndLong, help: "raw or qcow2 (the default).") var format = "qcow2"
    @Option(help: "qcow2 cluster size, a power of two from 512 to 2M (default 64k).") var clusterSize: ByteCount?
    @Option(name: .customShort("b"), help: "qcow2: the backing image, relative to the new image's folder or absolute.") var backing: String?
    @Option(name: .customShort("F"), help: "qcow2: the backing image's format (probed when not given).") var backingFormat: String?
    @Option(help: "off (sparse); metadata (qcow2: every cluster mapped, the data left sparse); falloc (blocks reserved); full (zeroes written).")
    var preallocation: Preallocation = .off
    @Option(name: .customShort("o"), help: ArgumentHelp("Format options, NAME=VALUE,... (qcow2: extended_l2=on|off, data_file=PATH, data_file_raw=on|off).", valueName: "options"))
    var formatOptions: [String] = []
    @Option(help: "auto: lock when OFD locks work; on: always; off: never.") var locking: LockingMode = .auto
    @OptionGroup(title: "Leases across hosts") var leases: LeaseConfigOptions
    @Flag(help: "Print errors also as JSON on stdout.") var json = false
    @Argument(help: "The image file to create.") var image: String
    @Argument(help: "Its virtual size, with K/M/G/T suffixes.") var size: ByteCount?

    func validate() throws {
        if size == nil && backing == nil { throw ValidationError("missing the image size") }
        if let driver = BlockFormats.named(format), !driver.storesBackingFile && (backing != nil || backingFormat != nil) {
            throw ValidationError("\(format) images have no backing file")
        }
    }

    func run() throws {
        do throws(BlockError) {
            guard let driver = BlockFormats.named(format) else {
                throw BlockError(.unsupported, "Unknown file format '\(format)'")
            }
            var options = ImageCreateOptions(virtualSize: 0, clusterSize: clusterSize.map { Int($0.value) }, backingFile: backing,
                                             preallocation: preallocation, locking: locking, lease: leases.policy)
            (options.virtualSize, options.backingFormat) = try sizeAndBackingFormat()
            if !formatOptions.isEmpty { options.formatOptions = try FormatOptions(parsing: formatOptions) }
            // qemu-img's line, then the format's refusals, as qemu-img orders them.
            print("Formatting '\(image)', fmt=\(format) " + driver.creationSummary(options))
            try driver.create(at: image, options: options)
        } catch {
            throw report(error, json: json)
        }
    }

    /// The size (given, or the backing image's) and the backing format (given, or probed), both
    /// read through the backing image opened read-only, sharing everything, as qemu-img does.
    private func sizeAndBackingFormat() throws(BlockError) -> (Int64, String?) {
        guard let backing else { return (size!.value, nil) }
        let directory = URL(fileURLWithPath: image).deletingLastPathComponent().path
        let path = backing.hasPrefix("/") ? backing : directory + "/" + backing
        let opened = try BlockImage.open(path, options: OpenOptions(format: backingFormat, forceShare: true, locking: locking))
        var virtualSize = try opened.length()
        if let size { virtualSize = size.value }
        return (virtualSize, backingFormat ?? opened.format)
    }
}
