// `blk state list|verify`: what the store holds, and the migration destination's early check.
import ArgumentParser
import BlockCLI
import DeviceState
import FoundationEssentials
import Posix

struct StateListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "Names, sizes and generations of the blobs; no key needed."
    )

    @OptionGroup var options: StateOptions
    @Argument(help: "The image file.") var image: String

    func run() throws {
        let listing = try stateCall(json: options.json) { () throws(StateError) in
            try StateStore.open(image, role: .reader, options: options.storeOptions).list()
        }
        listing.warnings.forEach(printWarning)
        if options.json {
            printJSON(ListingJSON(listing))
            return
        }
        guard let generation = listing.generation else {
            print("no state yet")
            return
        }
        print("generation \(generation), \(listing.protection.words), \(listing.blobs.count) blob\(listing.blobs.count == 1 ? "" : "s")")
        guard !listing.blobs.isEmpty else { return }
        let width = max(4, listing.blobs.map { $0.name.count }.max() ?? 0)
        print("NAME".padding(width + 1) + "SIZE".padding(11) + "GENERATION".padding(11) + "CRC32C")
        for blob in listing.blobs {
            print(blob.name.padding(width + 1) + "\(blob.byteCount)".padding(11) + "\(blob.generation)".padding(11)
                  + formatted("%08x", blob.checksum))
        }
    }
}

struct StateVerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check the state early (a migration destination): right key, every blob intact.",
        discussion: """
            Opens the image read-only with force-share and takes the shared transaction lock, so it \
            runs beside a writer and never sees a commit half done. Exits 0 when everything reads \
            back intact, 65 for damage, 75 when the lock is not had in time, 77 for a key problem.
            """
    )

    @OptionGroup var options: StateOptions
    @OptionGroup var key: KeyOptions
    @Argument(help: "The image file.") var image: String

    func run() throws {
        let result = try stateCall(json: options.json) { () throws(StateError) in
            try StateStore.open(image, role: .reader, credential: try key.credential(), options: options.storeOptions).verify()
        }
        result.warnings.forEach(printWarning)
        if options.json {
            printJSON(VerificationJSON(result))
        } else if let generation = result.generation {
            print("verified: generation \(generation), \(result.blobCount) blob\(result.blobCount == 1 ? "" : "s"), \(result.byteCount) bytes, \(result.encrypted ? "encrypted" : "not encrypted")")
        } else {
            print("verified: no state yet")
        }
    }
}

extension KeyHeader.Protection {
    var words: String {
        switch self {
        case .none: "not encrypted"
        case .key: "encrypted (key)"
        case .passphrase(.scrypt): "encrypted (passphrase, scrypt)"
        case .passphrase(.pbkdf2SHA256): "encrypted (passphrase, pbkdf2-sha256)"
        }
    }

    var jsonName: String {
        switch self {
        case .none: "none"
        case .key: "key"
        case .passphrase: "passphrase"
        }
    }
}

struct ListingJSON: Encodable {
    var generation: UInt64?
    var encryption: String
    var blobs: [BlobJSON]
    var slots: [String]

    init(_ listing: StateListing) {
        generation = listing.generation
        encryption = listing.protection.jsonName
        blobs = listing.blobs.map(BlobJSON.init)
        slots = listing.slots.map {
            switch $0 {
            case .empty: "empty"
            case .valid(let generation): "generation \(generation)"
            case .damaged: "damaged"
            }
        }
    }
}

struct VerificationJSON: Encodable {
    var verified = true
    var generation: UInt64?
    var encrypted: Bool
    var blobs: Int
    var bytes: UInt64
    var warnings: [String]

    init(_ result: StateVerification) {
        generation = result.generation
        encrypted = result.encrypted
        blobs = result.blobCount
        bytes = result.byteCount
        warnings = result.warnings
    }
}
