// `blk locks [--json] IMAGE`: every lock on the image in words, and who holds it.
import ArgumentParser
import BlockCLI
import BlockLocking

struct LocksCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "locks",
        abstract: "Show every lock on an image: QEMU permissions, the transaction lock, and who holds them.",
        discussion: "With a lease area configured (see blk lease), also the hosts holding the image's sanlock lease."
    )

    @Flag(help: "Print JSON on stdout.") var json = false
    @Argument(help: "The image file.") var image: String
    @OptionGroup(title: "Leases across hosts") var leases: LeaseConfigOptions

    func run() throws {
        do throws(LockingError) {
            // Locking off: this open must take no lock, or it would report itself.
            let file = try LockedImageFile(path: image, writable: false, mode: .off)
            let report = try LockReport.inspect(descriptor: file.descriptor, path: image)
            let lease = try LeaseReport.inspect(image, settings: try leases.settings())
            if json {
                var output = LocksJSON(report)
                output.lease = lease.map(LeaseJSON.init)
                printJSON(output)
            } else {
                print(report.text + (lease.map { $0.text + "\n" } ?? ""), terminator: "")
            }
        } catch {
            throw report(error, json: json)
        }
    }
}

extension LockReport {
    var text: String {
        var lines = ["image: \(escapingControlCharacters(path))"]
        lines.append("permissions held: \(heldPermissions)")
        lines.append("permissions not shared: \(unsharedPermissions)")
        lines.append("transaction lock: \(transactionLock.map { "\($0)" } ?? "free")")
        if !waiters.isEmpty {
            let what = waiters.flatMap { LockHolder(pid: nil, program: nil, locks: [$0]).meanings }
            lines.append("waiting: \(waiters.count) request\(waiters.count == 1 ? "" : "s") (\(what.joined(separator: ", ")))")
        }
        if holders.isEmpty && invisibleBytes.isEmpty {
            lines.append("holders: none")
        } else {
            lines.append("holders:")
            lines += holders.map { "  \($0.summary)" }
            if !invisibleBytes.isEmpty {
                let what = invisibleBytes.map { LockByte.meaning(of: $0, kind: $0 == LockByte.transaction ? transactionLock ?? .shared : .shared) }
                lines.append("  a process this host cannot see (another host?): \(LockHolder.joinedMeanings(what))")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// The image's lease on shared storage, when a lease area is configured.
struct LeaseReport {
    var engine: SanlockEngine
    var owners: [LeaseOwner]

    static func inspect(_ path: String, settings: LeaseSettings?) throws(LockingError) -> LeaseReport? {
        guard let settings else { return nil }
        let engine = SanlockEngine(settings: settings)
        return LeaseReport(engine: engine, owners: try engine.owners(of: try SanlockEngine.leasedImage(path: path)))
    }

    var text: String {
        let heading = "lease (sanlock lockspace \(engine.settings.lockspace)): "
        return heading + (owners.isEmpty ? "free" : "held by " + owners.map(\.description).joined(separator: "; "))
    }
}

struct LeaseJSON: Encodable {
    var lockspace: String
    var leaseDir: String
    var owners: [LeaseOwnerJSON]

    init(_ report: LeaseReport) {
        lockspace = report.engine.settings.lockspace
        leaseDir = report.engine.settings.location
        owners = report.owners.map(LeaseOwnerJSON.init)
    }
}

struct LocksJSON: Encodable {
    var lease: LeaseJSON?
    var image: String
    var permissionsHeld: [String]
    var permissionsNotShared: [String]
    var transactionLock: String
    var holders: [HolderJSON]
    var waiters: [RangeJSON]
    var lockedBytesWithoutLocalHolder: [Int64]

    init(_ report: LockReport) {
        image = report.path
        permissionsHeld = report.heldPermissions.jsonNames
        permissionsNotShared = report.unsharedPermissions.jsonNames
        transactionLock = report.transactionLock?.description ?? "free"
        holders = report.holders.map(HolderJSON.init)
        waiters = report.waiters.map(RangeJSON.init)
        lockedBytesWithoutLocalHolder = report.invisibleBytes
    }
}
