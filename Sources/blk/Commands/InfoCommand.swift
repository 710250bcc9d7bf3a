// `blk info`: what an image is and who else holds it, in qemu-img's words and JSON field names.
import ArgumentParser
import BlockLayer
import BlockLocking

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "Show an image's format, sizes and holders.")

    @OptionGroup var imageOptions: ImageOptions
    @Flag(help: "Print JSON on stdout.") var json = false
    @Argument(help: "The image file.") var image: String

    struct InfoJSON: Encodable {
        var filename: String
        var format: String
        var virtualSize: Int64
        var actualSize: Int64?
        var dirtyFlag: Bool
        var holders: [HolderJSON]
    }

    func run() throws {
        let opened = try imageOptions.open(image, writable: false, json: json)
        let virtualSize: Int64, actualSize: Int64?, holders: [LockHolder]
        do throws(BlockError) {
            virtualSize = try opened.length()
            actualSize = try opened.allocatedBytes()
            holders = try otherHolders(of: opened)
        } catch {
            throw report(error, json: json)
        }
        if json {
            printJSON(InfoJSON(filename: image, format: opened.format, virtualSize: virtualSize, actualSize: actualSize,
                               dirtyFlag: false, holders: holders.map(HolderJSON.init)))
            return
        }
        print("image: \(image)")
        print("file format: \(opened.format)")
        print("virtual size: \(humanSize(virtualSize)) (\(virtualSize) bytes)")
        print("disk size: \(actualSize.map(humanSize) ?? "unavailable")")
        if holders.isEmpty {
            print("held by: no other process")
        } else {
            print("held by:")
            for holder in holders { print("  \(holder.summary)") }
        }
    }

    /// Who holds the image besides this open, seen through a descriptor that holds no locks.
    private func otherHolders(of opened: BlockImage) throws(BlockError) -> [LockHolder] {
        do throws(LockingError) {
            let probe = try LockedImageFile(path: image, writable: false, mode: .off)
            let ownLocks = (opened.root.protocolNode.driver as? FileDriver)?.locks.descriptor
            return try LockReport.inspect(descriptor: probe.descriptor, path: image, excluding: ownLocks).holders
        } catch {
            throw BlockError(error)
        }
    }
}
