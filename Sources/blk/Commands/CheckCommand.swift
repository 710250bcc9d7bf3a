// `blk check`: verify an image's metadata, in qemu-img check's words and with its exit codes —
// 0 clean, 2 corruptions, 3 leaks only, 63 when the format has nothing to check.
import ArgumentParser
import BlockLayer
import BlockLocking
import Qcow2

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check", abstract: "Verify an image's metadata; with -r leaks, repair leaked clusters.")

    enum Repair: String, ExpressibleByArgument { case leaks, all }

    // qemu-img check's -r means repair, so check takes the image options but -r itself.
    @Option(name: .shortAndLong, help: "The image format; probed from the image when not given.") var format: String?
    @Flag(name: [.customShort("U"), .customLong("force-share")], help: "Check without keeping others from writing (QEMU's -U).")
    var forceShare = false
    @Option(help: "auto: lock when OFD locks work; on: always; off: never.") var locking: LockingMode = .auto
    @Option(name: .short, help: "Repair: leaks (all repairs leaks too; corruptions are only reported).") var r: Repair?
    @Flag(help: "Print JSON on stdout.") var json = false
    @Argument(help: "The image file.") var image: String

    struct CheckJSON: Encodable {
        var filename: String
        var format: String
        var checkErrors: Int
        var corruptions: Int
        var leaks: Int
        var leaksFixed: Int
        var totalClusters: UInt64
        var allocatedClusters: UInt64
        var imageEndOffset: UInt64
    }

    func run() throws {
        let opened = try openImage(image, OpenOptions(format: format, writable: r != nil, forceShare: forceShare, locking: locking), json: json)
        guard let qcow2 = opened.root.driver as? Qcow2Driver else {
            printError("This image format does not support checks")
            throw ExitCode(63)
        }
        let result: Qcow2CheckResult
        do throws(BlockError) {
            result = try qcow2.check(repairLeaks: r != nil)
        } catch {
            throw report(error, json: json)
        }
        let remainingLeaks = result.leaks.count - result.leaksFixed
        if json {
            printJSON(CheckJSON(filename: image, format: "qcow2", checkErrors: 0, corruptions: result.corruptions.count,
                                leaks: result.leaks.count, leaksFixed: result.leaksFixed, totalClusters: result.totalClusters,
                                allocatedClusters: result.allocatedClusters, imageEndOffset: result.imageEndOffset))
        } else {
            for leak in result.leaks {
                let verb = result.leaksFixed > 0 ? "Repairing" : "Leaked"
                print("\(verb) cluster \(leak.cluster) refcount=\(leak.refcount) reference=\(leak.references)")
            }
            result.corruptions.forEach { print($0) }
            if result.leaksFixed > 0 {
                print("The following inconsistencies were found and repaired:\n\n    \(result.leaksFixed) leaked clusters\n    0 corruptions\n")
            }
            if !result.corruptions.isEmpty {
                print("\n\(result.corruptions.count) errors were found on the image.")
                print("Data may be corrupted, or further writes to the image may corrupt it.")
            }
            if remainingLeaks > 0 {
                print("\n\(remainingLeaks) leaked clusters were found on the image.")
                print("This means waste of disk space, but no harm to data.")
            }
            if result.corruptions.isEmpty && remainingLeaks == 0 { print("No errors were found on the image.") }
            print("Image end offset: \(result.imageEndOffset)")
        }
        if !result.corruptions.isEmpty { throw ExitCode(2) }
        if remainingLeaks > 0 { throw ExitCode(3) }
    }
}
