// `blk resize`: grow an image, as `qemu-img resize` does (SIZE, or +SIZE to add).
import ArgumentParser
import BlockCLI
import BlockLayer
import BlockLocking

struct ResizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resize", abstract: "Grow an image to SIZE, or by +SIZE. Shrinking is refused.")

    @Option(name: .shortAndLong, help: "The image format; probed from the image when not given.") var format: String?
    @Option(help: "auto: lock when OFD locks work; on: always; off: never.") var locking: LockingMode = .auto
    @OptionGroup(title: "Leases across hosts") var leases: LeaseConfigOptions
    @Flag(help: "Print errors also as JSON on stdout.") var json = false
    @Argument(help: "The image file.") var image: String
    @Argument(help: "The new size, or +SIZE to grow by SIZE; K/M/G/T suffixes.") var size: String

    func run() throws {
        let growth = size.hasPrefix("+")
        guard let amount = ByteCount.parse(growth ? String(size.dropFirst()) : size) else {
            throw ValidationError("Invalid image size specified: \(size)")
        }
        let opened = try openImage(image, OpenOptions(format: format, writable: true, locking: locking, lease: leases.policy), json: json)
        do throws(BlockError) {
            let current = try opened.length()
            let (target, overflow) = growth ? current.addingReportingOverflow(amount) : (amount, false)
            guard !overflow else { throw BlockError(.invalidRequest, "Invalid image size specified: \(size)") }
            guard target >= current else {
                throw BlockError(.unsupported, "shrinking images is not supported by blk resize (the image has \(current) bytes)")
            }
            try opened.resize(to: target)
            try opened.close()
        } catch {
            throw report(error, json: json)
        }
        print("Image resized.")
    }
}
