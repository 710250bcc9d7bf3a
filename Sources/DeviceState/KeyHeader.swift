// KeyHeader: how a store is protected — not at all, by a key, or by a passphrase stretched with
// a salt and cost — and the key-check value that tells a wrong key from damaged data before any
// blob is decrypted. It lives in each directory slot (docs/state.md), so `rekey` changes the key
// and every blob's ciphertext in one atomic directory switch.
//
// Keys: the key given (or stretched from the passphrase) is the master key; HKDF-SHA256 with the
// store's id as salt derives from it the blob key (AES-256-GCM) and the check key, whose
// HMAC-SHA256 over a fixed label is the key-check value. The check value says nothing useful
// about the blob key, and one master key used for two stores gives unrelated check values.
import Crypto
import CryptoExtras

/// How a passphrase becomes a master key.
public enum KeyDerivation: Sendable, Hashable {
    case pbkdf2SHA256(iterations: UInt32)
    /// scrypt with N = 2^log2Rounds, r = blockSize, p = parallelism.
    case scrypt(log2Rounds: UInt8 = 15, blockSize: UInt32 = 8, parallelism: UInt32 = 1)

    /// OWASP's 2023 figure for PBKDF2-HMAC-SHA256.
    public static let pbkdf2 = KeyDerivation.pbkdf2SHA256(iterations: 600_000)

    /// The costs a store may ask for: 16 times PBKDF2's default, 64 times scrypt's N·r·p (a few
    /// seconds here). The cost is read from the image, so without a bound a crafted image could
    /// make every open compute for hours (found while writing the state-store fuzz target).
    static let maximumPBKDF2Iterations: UInt32 = 10_000_000
    static let maximumScryptWork: UInt64 = 1 << 24

    var isWithinBounds: Bool {
        switch self {
        case .pbkdf2SHA256(let iterations): (1...Self.maximumPBKDF2Iterations).contains(iterations)
        case .scrypt(let log2Rounds, let blockSize, let parallelism):
            (1...30).contains(log2Rounds) && (1...1024).contains(blockSize) && (1...64).contains(parallelism)
                && (UInt64(1) << log2Rounds) * UInt64(blockSize) * UInt64(parallelism) <= Self.maximumScryptWork
        }
    }

    var name: String {
        switch self {
        case .pbkdf2SHA256: "pbkdf2-sha256"
        case .scrypt: "scrypt"
        }
    }

    func derive(_ passphrase: SecretBytes, salt: [UInt8]) throws(StateError) -> SymmetricKey {
        do {
            return try passphrase.withUnsafeBytes { bytes in
                switch self {
                case .pbkdf2SHA256(let iterations):
                    try KDF.Insecure.PBKDF2.deriveKey(from: bytes, salt: salt, using: .sha256, outputByteCount: 32,
                                                      unsafeUncheckedRounds: Int(iterations))
                case .scrypt(let log2Rounds, let blockSize, let parallelism):
                    try KDF.Scrypt.deriveKey(from: bytes, salt: salt, outputByteCount: 32, rounds: 1 << Int(log2Rounds),
                                             blockSize: Int(blockSize), parallelism: Int(parallelism),
                                             maxMemory: 1 << 30)
                }
            }
        } catch {
            throw StateError(.corrupt, "the store's \(name) parameters cannot be used: \(error)")
        }
    }
}

/// How a store's blobs are protected, kept in each directory so a reader learns what key it
/// needs (and how to stretch a passphrase) before it reads any blob.
public struct KeyHeader: Sendable, Hashable {
    /// What opens the store: nothing, a 256-bit key, or a passphrase and how it is stretched; what
    /// `blk state list` shows without a key.
    public enum Protection: Sendable, Hashable {
        case none
        case key
        case passphrase(KeyDerivation)
    }

    /// What the store asks for: `list` reports it, so a user knows which credential to give.
    public var protection: Protection
    /// 32 random bytes for passphrase stretching (zero for the other kinds).
    var salt: [UInt8]
    /// HMAC-SHA256(check key, label): 32 bytes (zero when unprotected).
    var keyCheck: [UInt8]

    /// The header of a store without encryption: no salt, no key check.
    public static let unprotected = KeyHeader(protection: .none, salt: zeroes, keyCheck: zeroes)
    static let zeroes = [UInt8](repeating: 0, count: 32)
    static let checkLabel = Array("BlockLayer device-state key check v1".utf8)

    /// Whether a credential is needed: giving one to a plain store is an error of its own.
    public var isEncrypted: Bool { protection != .none }

    /// A header protecting a store with `credential` (nil: unprotected), and the keys it opens.
    static func protecting(storeID: [UInt8], with credential: StateCredential?) throws(StateError) -> (KeyHeader, StoreKeys?) {
        guard let credential else { return (.unprotected, nil) }
        let master: SymmetricKey
        let header: KeyHeader
        switch credential.material {
        case .key(let key):
            master = key
            header = KeyHeader(protection: .key, salt: zeroes, keyCheck: zeroes)
        case .passphrase(let passphrase):
            guard credential.derivation.isWithinBounds else {
                throw StateError(.invalidRequest, "\(credential.derivation.name) costs above \(KeyDerivation.maximumPBKDF2Iterations) PBKDF2 iterations or 2^24 scrypt N·r·p would make the store unopenable")
            }
            let salt = (0..<32).map { _ in UInt8.random(in: 0...255) }
            master = try credential.derivation.derive(passphrase, salt: salt)
            header = KeyHeader(protection: .passphrase(credential.derivation), salt: salt, keyCheck: zeroes)
        }
        let keys = StoreKeys(master: master, storeID: storeID)
        var sealed = header
        sealed.keyCheck = keys.checkValue
        return (sealed, keys)
    }

    /// The keys `credential` opens this header with, or one of the three key errors.
    func open(storeID: [UInt8], with credential: StateCredential?) throws(StateError) -> StoreKeys? {
        switch (protection, credential) {
        case (.none, nil):
            return nil
        case (.none, .some):
            throw StateError(.keyNotNeeded, "a key was given but the state is not encrypted")
        case (_, nil):
            throw StateError(.keyRequired, "state is encrypted; a key is required")
        case (.key, .some(let credential)):
            guard case .key(let key) = credential.material else {
                throw StateError(.wrongKey, "wrong key: the state is encrypted with a key file, and a passphrase was given")
            }
            return try checked(StoreKeys(master: key, storeID: storeID))
        case (.passphrase(let derivation), .some(let credential)):
            guard case .passphrase(let passphrase) = credential.material else {
                throw StateError(.wrongKey, "wrong key: the state is encrypted with a passphrase, and a key file was given")
            }
            return try checked(StoreKeys(master: try derivation.derive(passphrase, salt: salt), storeID: storeID))
        }
    }

    private func checked(_ keys: StoreKeys) throws(StateError) -> StoreKeys {
        guard HMAC<SHA256>.isValidAuthenticationCode(keyCheck, authenticating: Self.checkLabel, using: keys.checkKey) else {
            throw StateError(.wrongKey, "wrong key")
        }
        return keys
    }
}

/// The keys derived from one master key for one store.
struct StoreKeys: Sendable {
    let blobKey: SymmetricKey
    let checkKey: SymmetricKey

    init(master: SymmetricKey, storeID: [UInt8]) {
        blobKey = HKDF<SHA256>.deriveKey(inputKeyMaterial: master, salt: storeID, info: Array("blob key".utf8), outputByteCount: 32)
        checkKey = HKDF<SHA256>.deriveKey(inputKeyMaterial: master, salt: storeID, info: Array("check key".utf8), outputByteCount: 32)
    }

    var checkValue: [UInt8] { Array(HMAC<SHA256>.authenticationCode(for: KeyHeader.checkLabel, using: checkKey)) }
}
