// `blk check`: verify an image's metadata, in qemu-img check's words and with its exit codes —
// 0 clean, 2 corruptions, 3 leaks only, 63 when the format has nothing to check. As qemu-img,
// the findings go to stderr and the summary to stdout; after a repair the image is checked again
// and that second check decides the exit code.
import ArgumentParser
import BlockCLI
import BlockLayer
import BlockLocking
import FoundationEssentials
import Posix

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check", abstract: "Verify an image's metadata; with -r, repair it.")

    enum Repair: String, ExpressibleByArgument {
        case leaks, all

        var mode: RepairMode { self == .leaks ? .leaks : .all }
    }

    // qemu-img check's -r means repair, so check takes the image options but -r itself.
    @Option(name: .shortAndLong, help: "The image format; probed from the image when not given.") var format: String?
    @Flag(name: [.customShort("U"), .customLong("force-share")], help: "Check without keeping others from writing (QEMU's -U).")
    var forceShare = false
    @Option(help: "auto: lock when OFD locks work; on: always; off: never.") var locking: LockingMode = .auto
    @OptionGroup(title: "Leases across hosts") var leases: LeaseConfigOptions
    @Option(name: .short, help: "Repair: leaks (lower leaked refcounts) or all (also raise refcounts that are too low and set COPIED flags right).")
    var r: Repair?
    @Flag(help: "Print JSON on stdout.") var json = false
    @Argument(help: "The image file.") var image: String

    struct CheckJSON: Encodable {
        var filename: String
        var format: String
        var checkErrors: Int
        var corruptions: Int?
        var leaks: Int?
        var leaksFixed: Int?
        var corruptionsFixed: Int?
        var totalClusters: UInt64
        var allocatedClusters: UInt64
        var fragmentedClusters: UInt64?
        var compressedClusters: UInt64?
        var imageEndOffset: UInt64
    }

    func run() throws {
        let options = OpenOptions(format: format, writable: r != nil, forceShare: forceShare, locking: locking, repairing: r != nil,
                                  lease: leases.policy)
        let opened = try openImage(image, options, json: json)
        var result: ImageCheckResult
        do throws(BlockError) {
            result = try opened.check(repair: r?.mode)
        } catch where error.code == .notSupportedByFormat {
            // qemu-img's own code for a format with nothing to check.
            printError(error.message)
            throw ExitCode(63)
        } catch {
            throw report(error, json: json)
        }
        var fixed = (leaks: 0, corruptions: 0)
        do throws(BlockError) {
            if !json { printFindings(result, repaired: r) }
            fixed = (result.leaksFixed, result.corruptionsFixed)
            if fixed.leaks + fixed.corruptions > 0 {
                if !json {
                    print("The following inconsistencies were found and repaired:\n\n    \(fixed.leaks) leaked clusters\n    \(fixed.corruptions) corruptions\n")
                    print("Double checking the fixed image now...")
                }
                result = try opened.check()
                if !json { printFindings(result, repaired: nil) }
            }
        } catch {
            throw report(error, json: json)
        }
        if json {
            printJSON(CheckJSON(filename: image, format: opened.format, checkErrors: 0,
                                corruptions: result.corruptionCount == 0 ? nil : result.corruptionCount,
                                leaks: result.leaks.isEmpty ? nil : result.leaks.count,
                                leaksFixed: fixed.leaks == 0 ? nil : fixed.leaks,
                                corruptionsFixed: fixed.corruptions == 0 ? nil : fixed.corruptions,
                                totalClusters: result.totalClusters, allocatedClusters: result.allocatedClusters,
                                fragmentedClusters: result.fragmentedClusters == 0 ? nil : result.fragmentedClusters,
                                compressedClusters: result.compressedClusters == 0 ? nil : result.compressedClusters,
                                imageEndOffset: result.imageEndOffset))
        } else {
            printSummary(result)
        }
        if result.corruptionCount > 0 { throw ExitCode(2) }
        if !result.leaks.isEmpty { throw ExitCode(3) }
    }

    /// One line per finding, on stderr as qemu-img prints them and in its order (what it finds
    /// while counting references, then the refcount comparison, then the COPIED flags);
    /// "Repairing" for what was repaired. Of each kind only the findings the check kept are
    /// listed, then how many more there were.
    private func printFindings(_ result: ImageCheckResult, repaired: Repair?) {
        var lines: [String] = []
        func list<Finding>(_ findings: ImageCheckResult.Findings<Finding>, _ what: String, _ line: (Finding) -> String) {
            lines += findings.listed.map(line)
            if findings.unlisted > 0 { lines.append("... and \(findings.unlisted) more \(what) (\(findings.count) in all)") }
        }
        list(result.otherErrors, "other errors") { $0 }
        list(result.leaks, "leaked clusters") {
            "\(repaired != nil ? "Repairing" : "Leaked") cluster \($0.cluster) refcount=\($0.refcount) reference=\($0.references)"
        }
        list(result.refcountErrors, "refcount errors") {
            "\(repaired == .all ? "Repairing" : "ERROR") cluster \($0.cluster) refcount=\($0.refcount) reference=\($0.references)"
        }
        list(result.flagErrors, "OFLAG_COPIED errors") { "\(repaired == .all ? "Repairing" : "ERROR") \($0)" }
        if !lines.isEmpty { writeStandardError(lines.joined(separator: "\n") + "\n") }
    }

    private func printSummary(_ result: ImageCheckResult) {
        if result.corruptionCount > 0 {
            print("\n\(result.corruptionCount) errors were found on the image.")
            print("Data may be corrupted, or further writes to the image may corrupt it.")
        }
        if !result.leaks.isEmpty {
            print("\n\(result.leaks.count) leaked clusters were found on the image.")
            print("This means waste of disk space, but no harm to data.")
        }
        if result.corruptionCount == 0 && result.leaks.isEmpty { print("No errors were found on the image.") }
        // As qemu-img: only when something is allocated.
        if result.totalClusters > 0 && result.allocatedClusters > 0 {
            func percent(_ part: UInt64, of whole: UInt64) -> String {
                formatted("%.2f%%", whole == 0 ? 0 : Double(part) * 100 / Double(whole))
            }
            print("\(result.allocatedClusters)/\(result.totalClusters) = \(percent(result.allocatedClusters, of: result.totalClusters)) allocated, "
                  + "\(percent(result.fragmentedClusters, of: result.allocatedClusters)) fragmented, "
                  + "\(percent(result.compressedClusters, of: result.allocatedClusters)) compressed clusters")
        }
        print("Image end offset: \(result.imageEndOffset)")
    }
}
