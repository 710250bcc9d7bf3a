// `blk state put|get|remove`: one blob at a time.
import ArgumentParser
import BlockCLI
import DeviceState
import FoundationEssentials
import Posix

struct StatePutCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "put",
        abstract: "Replace blob NAME atomically with FILE (or stdin); an all-zero disk gets a store first.",
        discussion: "Waits up to --timeout for a commit in progress elsewhere, then commits: one flush for a blob small enough to keep in the directory (stored ≤ 32 KiB), two otherwise."
    )

    @OptionGroup var options: StateOptions
    @OptionGroup var key: KeyOptions
    @Argument(help: "The image file.") var image: String
    @Argument(help: "The blob's name (UTF-8, 1–255 bytes).") var name: String
    @Argument(help: "The file to store; - or none for stdin.") var file: String?

    func run() throws {
        let name = try checkedBlobName(name, json: options.json)
        let bytes = try readInput(file)
        let record = try stateCall(json: options.json) { () throws(StateError) in
            try StateStore.withWriter(image, credential: try key.credential(), options: options.storeOptions) { (store) throws(StateError) in
                store.warnings.forEach(printWarning)
                return try store.put(name, bytes)
            }
        }
        if options.json { printJSON([BlobJSON(record)]) }
    }
}

struct StateGetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Read blob NAME back, verified, to FILE (or stdout)."
    )

    @OptionGroup var options: StateOptions
    @OptionGroup var key: KeyOptions
    @Argument(help: "The image file.") var image: String
    @Argument(help: "The blob's name.") var name: String
    @Argument(help: "Where to write it; - or none for stdout.") var file: String?

    func run() throws {
        let name = try checkedBlobName(name, json: options.json)
        let bytes = try stateCall(json: options.json) { () throws(StateError) in
            try StateStore.open(image, role: .reader, credential: try key.credential(), options: options.storeOptions).get(name)
        }
        try writeOutput(bytes, to: file)
    }
}

struct StateRemoveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove",
        abstract: "Delete blob NAME atomically."
    )

    @OptionGroup var options: StateOptions
    @Argument(help: "The image file.") var image: String
    @Argument(help: "The blob's name.") var name: String

    func run() throws {
        let name = try checkedBlobName(name, json: options.json)
        try stateCall(json: options.json) { () throws(StateError) in
            try StateStore.withWriter(image, options: options.storeOptions) { (store) throws(StateError) in
                try store.remove(name)
            }
        }
    }
}

struct BlobJSON: Encodable {
    var name: String
    var size: UInt64
    var storedSize: UInt64
    var generation: UInt64
    var crc32c: String
    /// Where the stored bytes start in the disk; nil when kept inline in the directory.
    var offset: UInt64?

    init(_ record: BlobRecord) {
        name = record.name
        offset = record.byteOffset
        size = record.byteCount
        storedSize = record.storedByteCount
        generation = record.generation
        crc32c = formatted("%08x", record.checksum)
    }
}
