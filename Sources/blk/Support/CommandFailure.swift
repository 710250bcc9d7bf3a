// CommandFailure: how a failed command ends — its message on stderr (and, with --json, one
// JSON object on stdout), and the sysexits code of interface.md §3.
import ArgumentParser
import BlockLayer
import BlockLocking
import FoundationEssentials

enum ExitStatus {
    static let failure: Int32 = 1
    static let usage: Int32 = 64
    static let dataError: Int32 = 65
    static let notFound: Int32 = 66
    static let unsupported: Int32 = 69
    static let ioError: Int32 = 74
    static let tryAgain: Int32 = 75
    static let keyProblem: Int32 = 77
}

extension BlockError {
    var exitStatus: Int32 {
        switch code {
        case .conflict, .timedOut, .stale: ExitStatus.tryAgain
        case .unsupported, .notSupportedByFormat, .leaseUnavailable: ExitStatus.unsupported
        case .notFound: ExitStatus.notFound
        case .corrupt: ExitStatus.dataError
        case .invalidRequest: ExitStatus.usage
        case .ioError, .noSpace, .lockLost: ExitStatus.ioError
        default: ExitStatus.failure
        }
    }
}

/// Prints `error` as interface.md §1 asks and returns the exit code to end with.
func report(_ error: BlockError, json: Bool) -> ExitCode {
    printError(error.description)
    if json {
        let holders = (error.locking?.holders ?? []).map(HolderJSON.init)
        let owners = (error.locking?.leaseOwners ?? []).map(LeaseOwnerJSON.init)
        printJSON(ErrorJSON(error: .init(kind: error.code.name, message: error.message, holders: holders,
                                         leaseOwners: owners.isEmpty ? nil : owners)))
    }
    return ExitCode(error.exitStatus)
}

/// What `body` returns, or nil when the image's format has no such operation (raw's format
/// information, snapshots): for commands that show what there is.
func unlessNotSupportedByFormat<Value>(_ body: () throws(BlockError) -> Value) throws(BlockError) -> Value? {
    do {
        return try body()
    } catch where error.code == .notSupportedByFormat {
        return nil
    }
}

func report(_ error: LockingError, json: Bool) -> ExitCode {
    report(BlockError(error), json: json)
}

/// Errors and warnings quote paths, names and words from images, state folders and other
/// processes: whatever of those reached the message unescaped, no control character but the
/// message's own line feeds reaches the terminal.
func printError(_ message: String) {
    writeStandardError("blk: " + escapingControlCharacters(message, keepingNewlines: true) + "\n")
}

func printWarning(_ message: String) {
    writeStandardError("blk: warning: " + escapingControlCharacters(message, keepingNewlines: true) + "\n")
}

struct ErrorJSON: Encodable {
    struct Body: Encodable {
        var kind: String
        var message: String
        var holders: [HolderJSON]
        var leaseOwners: [LeaseOwnerJSON]?
    }
    var error: Body
}
