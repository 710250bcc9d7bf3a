// `blk state import|export --swtpm DIR`: a swtpm state folder into the store in one commit, and
// back out into a folder swtpm starts from (docs/state.md §swtpm).
import ArgumentParser
import BlockCLI
import Crypto
import DeviceState

struct StateImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Store the blobs of a swtpm state folder (tpm2-00.permall, .volatilestate, .savestate) in one commit.",
        discussion: "Blob names: permall, volatile, savestate. Refused (exit 75) while a swtpm runs on the folder."
    )

    @OptionGroup var options: StateOptions
    @OptionGroup var key: KeyOptions
    @Option(help: "The swtpm state folder.") var swtpm: String
    @Option(help: "swtpm's own key (--key file=F): 16 or 32 raw bytes, or 32 or 64 hex digits.") var swtpmKeyFile: String?
    @Argument(help: "The image file.") var image: String

    func run() throws {
        let records = try stateCall(json: options.json) { () throws(StateError) in
            let swtpmKey = try readSwtpmKey(swtpmKeyFile)
            let blobs = try SwtpmDirectory(path: swtpm).readBlobs(key: swtpmKey)
            return try StateStore.withWriter(image, credential: try key.credential(), options: options.storeOptions) { (store) throws(StateError) in
                store.warnings.forEach(printWarning)
                return try store.put(blobs)
            }
        }
        if options.json { printJSON(records.map(BlobJSON.init)) } else {
            for record in records { print("\(record.name): \(record.byteCount) bytes, generation \(record.generation)") }
        }
    }
}

struct StateExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a swtpm state folder that swtpm starts from, each file durably (fsync, rename, fsync).",
        discussion: "State files of blobs the store lacks are removed from the folder, so swtpm never starts from a stale one."
    )

    @OptionGroup var options: StateOptions
    @OptionGroup var key: KeyOptions
    @Option(help: "The swtpm state folder (created when missing).") var swtpm: String
    @Option(help: "Encrypt the files as swtpm's --key file=F does (AES-CBC, HMAC-SHA256).") var swtpmKeyFile: String?
    @Argument(help: "The image file.") var image: String

    func run() throws {
        try stateCall(json: options.json) { () throws(StateError) in
            let swtpmKey = try readSwtpmKey(swtpmKeyFile)
            let known = SwtpmDirectory.files.map(\.blob)
            let exported = try StateStore.open(image, role: .reader, credential: try key.credential(), options: options.storeOptions).get(known)
            guard !exported.isEmpty else {
                throw StateError(.notFound, "the state store of '\(image)' holds none of \(known.joined(separator: ", "))")
            }
            try SwtpmDirectory(path: swtpm).write(exported, key: swtpmKey)
        }
    }
}

/// swtpm's own key from --swtpm-key-file, if given.
private func readSwtpmKey(_ path: String?) throws(StateError) -> SymmetricKey? {
    guard let path else { return nil }
    warnIfExposed(keyFile: path)
    return try SwtpmStateFile.key(fromFile: path)
}
