// `blk create`: make a new image; over an image in use it is refused with QEMU's words.
import ArgumentParser
import BlockLayer
import BlockLocking

struct CreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create an image.")

    @Option(name: .shortAndLong, help: "raw or qcow2 (the default).") var format = "qcow2"
    @Option(help: "auto: lock when OFD locks work; on: always; off: never.") var locking: LockingMode = .auto
    @Flag(help: "Print errors also as JSON on stdout.") var json = false
    @Argument(help: "The image file to create.") var image: String
    @Argument(help: "Its virtual size, with K/M/G/T suffixes.") var size: ByteCount

    func run() throws {
        guard format == "raw" else {
            throw report(BlockError(.unsupported, "creating \(format) images is not supported by this build of blk; use -f raw"), json: json)
        }
        print("Formatting '\(image)', fmt=raw size=\(size.value)")
        do throws(BlockError) {
            try RawDriver.create(at: image, byteCount: size.value, locking: locking)
        } catch {
            throw report(error, json: json)
        }
    }
}
