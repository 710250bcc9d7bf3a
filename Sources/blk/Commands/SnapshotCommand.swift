// `blk snapshot`: an image's internal snapshots, as `qemu-img snapshot` creates (-c), applies
// (-a), deletes (-d) and lists (-l) them, with its messages. -a finds a snapshot by ID, then by
// name; -d by name only, as qemu-img 7.2 does (bdrv_snapshot_find); the first match wins.
// Exit codes are blk's (interface.md §3), where qemu-img exits 1 for every failure.
import ArgumentParser
import BlockCLI
import BlockLayer
import Glibc

struct SnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "Create, apply, delete or list an image's internal snapshots (qcow2).")

    @Option(name: .customShort("c"), help: ArgumentHelp("Create a snapshot named NAME.", valueName: "name")) var create: String?
    @Option(name: .customShort("a"), help: ArgumentHelp("Make the snapshot with this ID or name the image's content.", valueName: "snapshot"))
    var apply: String?
    @Option(name: .customShort("d"), help: ArgumentHelp("Delete the snapshot with this name.", valueName: "name")) var delete: String?
    @Flag(name: .customShort("l"), help: "List the snapshots (read-only; -U shares the image with writers).") var list = false
    @Flag(name: .customShort("q"), help: "Quiet: qemu-img's option; blk prints nothing on success anyway.") var quiet = false
    @OptionGroup var imageOptions: ImageOptions
    @Flag(help: "Print errors also as JSON on stdout.") var json = false
    @Argument(help: "The image file.") var image: String

    func validate() throws {
        let actions = [create != nil, apply != nil, delete != nil, list].filter { $0 }.count
        guard actions <= 1 else { throw ValidationError("Cannot mix '-l', '-a', '-c', '-d'") }
        guard actions == 1 else { throw ValidationError("Expecting one of '-l', '-a', '-c', '-d'") }
    }

    func run() throws {
        let opened = try imageOptions.open(image, writable: !list, json: json)
        do throws(BlockError) {
            if let create {
                var now = timespec()
                clock_gettime(CLOCK_REALTIME, &now)
                // qemu-img dates snapshots to the microsecond.
                _ = try failing("Could not create snapshot '\(create)'") { () throws(BlockError) in
                    try opened.createSnapshot(name: create, dateSeconds: UInt32(truncatingIfNeeded: now.tv_sec),
                                              dateNanoseconds: UInt32(now.tv_nsec / 1000 * 1000))
                }
            } else if let apply {
                try failing("Could not apply snapshot '\(apply)'") { () throws(BlockError) in
                    let snapshots = try opened.snapshots()
                    guard let found = snapshots.first(where: { $0.id == apply }) ?? snapshots.first(where: { $0.name == apply }) else {
                        throw BlockError(.notFound, "Failed to load snapshot: No such file or directory")
                    }
                    try opened.applySnapshot(id: found.id)
                }
            } else if let delete {
                let snapshots = try failing("Could not delete snapshot '\(delete)'") { () throws(BlockError) in try opened.snapshots() }
                guard let found = snapshots.first(where: { $0.name == delete }) else {
                    throw BlockError(.notFound, "Could not delete snapshot '\(delete)': snapshot not found")
                }
                try failing("Could not delete snapshot '\(delete)'") { () throws(BlockError) in try opened.deleteSnapshot(id: found.id) }
            } else {
                // A format without snapshots lists none, as qemu-img prints nothing for raw.
                let snapshots = try unlessNotSupportedByFormat { () throws(BlockError) in try opened.snapshots() } ?? []
                if !snapshots.isEmpty { printSnapshotList(snapshots) }
            }
            try opened.close()
        } catch {
            throw report(error, json: json)
        }
    }

    /// Runs `body`, its error said in qemu-img's words: what could not be done, then why.
    private func failing<Value>(_ what: String, _ body: () throws(BlockError) -> Value) throws(BlockError) -> Value {
        do throws(BlockError) {
            return try body()
        } catch {
            var error = error
            error.message = what + ": " + error.message
            throw error
        }
    }
}
