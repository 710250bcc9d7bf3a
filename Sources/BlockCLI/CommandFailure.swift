// CommandFailure: how a failed command ends — its message on stderr (and, with --json, one
// JSON object on stdout), and the sysexits code of interface.md §3 (ExitStatus). In BlockCLI
// because blk and blk-serve end the same way.
import ArgumentParser
import BlockLayer
import BlockLocking
import FoundationEssentials

/// Prints `error` as interface.md §1 asks and returns the exit code to end with.
package func report(_ error: BlockError, json: Bool) -> ExitCode {
    printError(error.description)
    if json {
        let holders = (error.locking?.holders ?? []).map(HolderJSON.init)
        let owners = (error.locking?.leaseOwners ?? []).map(LeaseOwnerJSON.init)
        printJSON(ErrorJSON(error: .init(kind: error.code.name, message: error.message, holders: holders,
                                         leaseOwners: owners.isEmpty ? nil : owners)))
    }
    return ExitCode(error.exitStatus)
}

package func report(_ error: LockingError, json: Bool) -> ExitCode {
    report(BlockError(error), json: json)
}

/// Errors and warnings quote paths, names and words from images, state folders and other
/// processes: whatever of those reached the message unescaped, no control character but the
/// message's own line feeds reaches the terminal.
package func printError(_ message: String) {
    writeStandardError("blk: " + escapingControlCharacters(message, keepingNewlines: true) + "\n")
}

package func printWarning(_ message: String) {
    writeStandardError("blk: warning: " + escapingControlCharacters(message, keepingNewlines: true) + "\n")
}

package struct ErrorJSON: Encodable {
    package struct Body: Encodable {
        package var kind: String
        package var message: String
        package var holders: [HolderJSON]
        package var leaseOwners: [LeaseOwnerJSON]?

        package init(kind: String, message: String, holders: [HolderJSON], leaseOwners: [LeaseOwnerJSON]? = nil) {
            self.kind = kind
            self.message = message
            self.holders = holders
            self.leaseOwners = leaseOwners
        }
    }
    package var error: Body

    package init(error: Body) { self.error = error }
}
