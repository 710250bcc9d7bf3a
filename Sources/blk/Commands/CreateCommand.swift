// `blk create`: make a new image; over an image in use it is refused with QEMU's words.
import ArgumentParser
import BlockLayer
import BlockLocking
import FoundationEssentials

struct CreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create an image (qcow2 v3 by default).",
        discussion: "With -b, SIZE may be left out: the new image takes the backing image's size."
    )

    @Option(name: .shortAndLong, help: "raw or qcow2 (the default).") var format = "qcow2"
    @Option(help: "qcow2 cluster size, a power of two from 512 to 2M.") var clusterSize = ByteCount(65536)
    @Option(name: .customShort("b"), help: "qcow2: the backing image, relative to the new image's folder or absolute.") var backing: String?
    @Option(name: .customShort("F"), help: "qcow2: the backing image's format (probed when not given).") var backingFormat: String?
    @Option(help: "off (sparse); metadata (qcow2: every cluster mapped, the data left sparse); falloc (blocks reserved); full (zeroes written).")
    var preallocation: Preallocation = .off
    @Option(help: "auto: lock when OFD locks work; on: always; off: never.") var locking: LockingMode = .auto
    @OptionGroup(title: "Leases across hosts") var leases: LeaseConfigOptions
    @Flag(help: "Print errors also as JSON on stdout.") var json = false
    @Argument(help: "The image file to create.") var image: String
    @Argument(help: "Its virtual size, with K/M/G/T suffixes.") var size: ByteCount?

    func validate() throws {
        if size == nil && backing == nil { throw ValidationError("missing the image size") }
        if format == "raw" && (backing != nil || backingFormat != nil) { throw ValidationError("raw images have no backing file") }
    }

    func run() throws {
        do throws(BlockError) {
            guard let driver = BlockFormats.named(format) else {
                throw BlockError(.unsupported, "Unknown file format '\(format)'")
            }
            var options = ImageCreateOptions(virtualSize: 0, backingFile: backing, preallocation: preallocation, locking: locking,
                                             lease: leases.policy)
            // qemu-img's line: the options the format takes, as they were given or found.
            var line = "Formatting '\(image)', fmt=\(format)"
            if format == "raw" {
                if preallocation == .metadata { throw BlockError(.invalidRequest, "Unsupported preallocation mode: metadata") }
                options.virtualSize = size!.value
                line += " size=\(options.virtualSize)" + (preallocation == .off ? "" : " preallocation=\(preallocation)")
            } else {
                (options.virtualSize, options.backingFormat) = try sizeAndBackingFormat()
                options.clusterSize = Int(clusterSize.value)
                line += " cluster_size=\(clusterSize.value)"
                if let backing { line += " backing_file=\(backing)" }
                if let backingFormat = options.backingFormat { line += " backing_fmt=\(backingFormat)" }
                if preallocation != .off { line += " preallocation=\(preallocation)" }
                line += " size=\(options.virtualSize)"
            }
            print(line)
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
