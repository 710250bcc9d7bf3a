// `blk state init|rekey`: lay out a store, and change how it is protected.
import ArgumentParser
import BlockCLI
import DeviceState

struct StateInitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Lay out an empty store (refuses a disk that holds other data unless --force)."
    )

    @OptionGroup var options: StateOptions
    @OptionGroup var key: KeyOptions
    @Flag(help: "Replace whatever the disk holds, a store included.") var force = false
    @Argument(help: "The image file.") var image: String

    func run() throws {
        try stateCall(json: options.json) { () throws(StateError) in
            try StateStore.withWriter(image, credential: try key.credential(), options: options.storeOptions) { (store) throws(StateError) in
                store.warnings.forEach(printWarning)
                try store.initialise(force: force)
            }
        }
    }
}

struct StateRekeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rekey",
        abstract: "Re-encrypt every blob atomically with a new key (or encrypt, or with --decrypt, decrypt).",
        discussion: "KEY opens the store as it is; --new-key-file or --new-passphrase-file protects it from now on."
    )

    @OptionGroup var options: StateOptions
    @OptionGroup var key: KeyOptions
    @Option(help: "The new key: 32 raw bytes or 64 hex digits.") var newKeyFile: String?
    @Option(help: "The new passphrase (stretched as --kdf says).") var newPassphraseFile: String?
    @Flag(help: "Store the blobs unencrypted from now on.") var decrypt = false
    @Argument(help: "The image file.") var image: String

    func validate() throws {
        let choices = [newKeyFile != nil, newPassphraseFile != nil, decrypt].filter { $0 }.count
        guard choices == 1 else { throw ValidationError("give exactly one of --new-key-file, --new-passphrase-file, --decrypt") }
    }

    func run() throws {
        try stateCall(json: options.json) { () throws(StateError) in
            let newCredential: StateCredential?
            if let newKeyFile {
                warnIfExposed(keyFile: newKeyFile)
                newCredential = try .keyFile(atPath: newKeyFile)
            } else if let newPassphraseFile {
                warnIfExposed(keyFile: newPassphraseFile)
                newCredential = try .passphraseFile(atPath: newPassphraseFile, derivation: key.kdf.derivation)
            } else {
                newCredential = nil
            }
            try StateStore.withWriter(image, credential: try key.credential(), options: options.storeOptions) { (store) throws(StateError) in
                try store.rekey(to: newCredential)
            }
        }
    }
}
