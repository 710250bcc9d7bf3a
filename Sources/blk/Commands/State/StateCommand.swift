// `blk state …`: the device-state store (interface.md §4, docs/state.md). The subcommands parse,
// call DeviceState.StateStore, print, and exit with interface.md's codes.
import ArgumentParser
import BlockCLI
import BlockLayer
import BlockLocking
import DeviceState
import FoundationEssentials
import Glibc
import SystemPackage

struct StateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "state",
        abstract: "Named blobs of a device's persistent state inside an image: atomic, checksummed, optionally encrypted.",
        subcommands: [StateInitCommand.self, StatePutCommand.self, StateGetCommand.self, StateListCommand.self,
                      StateRemoveCommand.self, StateVerifyCommand.self, StateRekeyCommand.self,
                      StateImportCommand.self, StateExportCommand.self]
    )
}

extension KeyDerivationName: ExpressibleByArgument {}

enum KeyDerivationName: String, CaseIterable {
    case scrypt
    case pbkdf2

    var derivation: KeyDerivation { self == .scrypt ? .scrypt() : .pbkdf2 }
}

/// Options every state command shares.
struct StateOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "The image format (raw, qcow2); probed from the image when not given.")
    var format: String?

    @Option(help: "auto: lock when OFD locks work; on: always; off: never.")
    var locking: LockingMode = .auto

    @Option(help: "Wait up to SEC seconds for the transaction lock (default 10; 0 to 1000000, decimals allowed).", transform: Seconds.parse)
    var timeout = Seconds(10)

    @Flag(help: "Print JSON on stdout.")
    var json = false

    @Option(help: ArgumentHelp("Make a request fail, for testing error paths: OP[@EVENT|@FIRST-LAST]:N[:eio|enospc][:always] — the Nth read, write or flush (during a step such as l2_update, or touching those file bytes) fails (repeatable; docs/block-layer.md).",
                               valueName: "rule"))
    var injectFault: [FaultRule] = []

    @Option(help: ArgumentHelp("Append every write and flush to FILE, for crash-state tests.", valueName: "file"))
    var recordWrites: String?

    @OptionGroup(title: "Leases across hosts") var leases: LeaseConfigOptions

    var storeOptions: StateStore.Options {
        StateStore.Options(format: format, locking: locking, timeout: timeout.duration, faults: injectFault,
                           writeJournalPath: recordWrites, lease: leases.policy)
    }
}

/// KEY of interface.md §4: a key file or a passphrase file, never the key itself.
struct KeyOptions: ParsableArguments {
    @Option(help: "A file holding the key: 32 raw bytes or 64 hex digits.")
    var keyFile: String?

    @Option(help: "A file holding a passphrase (stretched with the salt the store keeps).")
    var passphraseFile: String?

    @Option(help: "How a new passphrase is stretched: scrypt (default) or pbkdf2.")
    var kdf: KeyDerivationName = .scrypt

    func validate() throws {
        if keyFile != nil && passphraseFile != nil { throw ValidationError("--key-file and --passphrase-file exclude each other") }
    }

    func credential() throws(StateError) -> StateCredential? {
        if let keyFile {
            warnIfExposed(keyFile: keyFile)
            return try .keyFile(atPath: keyFile)
        }
        if let passphraseFile {
            warnIfExposed(keyFile: passphraseFile)
            return try .passphraseFile(atPath: passphraseFile, derivation: kdf.derivation)
        }
        return nil
    }
}

extension StateError {
    var exitStatus: Int32 {
        switch code {
        case .keyRequired, .keyNotNeeded, .wrongKey: ExitStatus.keyProblem
        case .corrupt, .notAStore: ExitStatus.dataError
        case .unsupported: ExitStatus.unsupported
        case .notFound: ExitStatus.notFound
        case .invalidRequest: ExitStatus.usage
        case .noRoom: ExitStatus.ioError
        case .busy: ExitStatus.tryAgain
        case .block: block?.exitStatus ?? ExitStatus.failure
        default: ExitStatus.failure
        }
    }
}

func report(_ error: StateError, json: Bool) -> ExitCode {
    if let block = error.block { return report(block, json: json) }
    printError(error.description)
    if json { printJSON(ErrorJSON(error: .init(kind: error.code.name, message: error.message, holders: []))) }
    return ExitCode(error.exitStatus)
}

/// Runs a state operation, turning its error into the report and exit code.
func stateCall<Value>(json: Bool, _ body: () throws(StateError) -> Value) throws -> Value {
    do throws(StateError) {
        return try body()
    } catch {
        throw report(error, json: json)
    }
}

/// A blob name from the command line, refused (exit 64) when it cannot name a blob. Arguments
/// arrive decoded with invalid UTF-8 repaired, so the raw bytes are looked at to tell.
func checkedBlobName(_ name: String, json: Bool) throws -> String {
    let raw = (0..<Int(CommandLine.argc)).compactMap { CommandLine.unsafeArgv[$0] }
    for argument in raw {
        let bytes = Array(UnsafeBufferPointer(start: UnsafeRawPointer(argument).assumingMemoryBound(to: UInt8.self), count: strlen(argument)))
        if String(decoding: bytes, as: UTF8.self) == name && String(validating: bytes, as: UTF8.self) == nil {
            throw report(StateError(.invalidRequest, "a blob name must be valid UTF-8"), json: json)
        }
    }
    if let why = StateDirectory.validName(name) { throw report(StateError(.invalidRequest, why), json: json) }
    return name
}

/// Reads FILE, or stdin for "-" or none: at most one blob's worth, refused (64) past that
/// before the rest is read, so a huge or endless input costs no more memory than a blob.
func readInput(_ path: String?) throws -> [UInt8] {
    let fromStandardInput = path == nil || path == "-"
    let name = fromStandardInput ? "standard input" : "'\(path!)'"
    let descriptor = fromStandardInput ? STDIN_FILENO : open(path!, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else {
        throw report(StateError(.notFound, "Could not read \(name): \(String(cString: strerror(errno)))"), json: false)
    }
    defer { if !fromStandardInput { close(descriptor) } }
    let limit = StateDirectory.maximumBlobBytes
    let bytes: [UInt8]
    do throws(Errno) {
        bytes = try readToEnd(descriptor, limit: limit + 1)
    } catch {
        throw report(StateError(.notFound, "Could not read \(name): \(error)"), json: false)
    }
    guard bytes.count <= limit else {
        throw report(StateError(.invalidRequest, "\(name) holds more than \(limit) bytes (16 MiB), the most a blob holds"), json: false)
    }
    return bytes
}

/// Writes FILE, or stdout for "-" or none. FILE is replaced whole and durably by a new file of
/// mode 0600 (the blob may be a secret), created exclusively under a random name beside it and
/// renamed over it: a link at FILE is replaced, never written through, and a file someone
/// planted under a temporary name is never used. The folders on the way are the caller's choice.
func writeOutput(_ bytes: [UInt8], to path: String?) throws {
    if path == nil || path == "-" {
        do throws(Errno) {
            try writeAll(STDOUT_FILENO, bytes)
        } catch {
            throw report(StateError(.invalidRequest, "Could not write to standard output: \(error)"), json: false)
        }
        return
    }
    let file = FilePath(path!)
    guard let name = file.lastComponent?.string, name != "." && name != ".." else {
        throw report(StateError(.invalidRequest, "'\(path!)' names a folder, not a file to write"), json: false)
    }
    let folderPath = file.removingLastComponent().string
    do throws(StateError) {
        let folder = try OpenFolder(path: folderPath.isEmpty ? "." : folderPath, followingLink: true)
        try folder.replace(name, with: bytes, givingToFolderOwner: false)
        try folder.sync()
    } catch {
        throw report(error, json: false)
    }
}
