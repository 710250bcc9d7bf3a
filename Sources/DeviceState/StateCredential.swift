// StateCredential: what opens an encrypted store — a 256-bit key (a key file of 32 raw bytes or
// 64 hex digits) or a passphrase (stretched with the salt and cost the store keeps). Never taken
// from the command line: argv is world-readable in /proc.
import Crypto

/// What opens an encrypted store, given once when the store is opened: the store checks it
/// against its key header before it reads any blob, so a wrong key is never taken for damage.
public struct StateCredential: Sendable {
    /// The secret itself: a key used as it is, or a passphrase stretched with the store's salt.
    public enum Material: Sendable {
        case key(SymmetricKey)
        case passphrase(SecretBytes)
    }

    /// The key or passphrase this credential carries.
    public let material: Material
    /// How a passphrase is stretched when this credential protects a store for the first time
    /// (init, rekey); an existing store's own choice is used to open it.
    public var derivation: KeyDerivation

    /// A 256-bit key, as AES-256-GCM needs; any other size is refused as a key problem.
    public static func key(_ key: SymmetricKey) throws(StateError) -> StateCredential {
        guard key.bitCount == 256 else { throw StateError(.wrongKey, "a key is 256 bits; this one has \(key.bitCount)") }
        return StateCredential(material: .key(key), derivation: .scrypt())
    }

    /// A passphrase, stretched into a key with the store's salt and cost; `derivation` is the
    /// cost a new store or a rekey records (scrypt N = 2^15 by default). An empty one is refused.
    public static func passphrase(_ passphrase: SecretBytes, derivation: KeyDerivation = .scrypt()) throws(StateError) -> StateCredential {
        guard passphrase.count > 0 else { throw StateError(.wrongKey, "the passphrase is empty") }
        return StateCredential(material: .passphrase(passphrase), derivation: derivation)
    }

    /// A key file: exactly 32 bytes, or 64 hex digits (a trailing newline allowed).
    public static func keyFile(atPath path: String) throws(StateError) -> StateCredential {
        let contents = try SecretBytes.contents(ofFile: path)
        let key: SymmetricKey? = contents.withUnsafeBytes { bytes in
            if bytes.count == 32 { return SymmetricKey(data: bytes) }
            var digits = bytes.count
            while digits > 0 && (bytes[digits - 1] == 0x0a || bytes[digits - 1] == 0x0d) { digits -= 1 }
            guard digits == 64 else { return nil }
            return hexKey(UnsafeRawBufferPointer(rebasing: bytes[0..<digits]))
        }
        guard let key else {
            throw StateError(.wrongKey, "the key file '\(path)' holds \(contents.count) bytes; a key file holds 32 raw bytes or 64 hex digits")
        }
        return try .key(key)
    }

    /// A passphrase file: its bytes, without one trailing newline.
    public static func passphraseFile(atPath path: String, derivation: KeyDerivation = .scrypt()) throws(StateError) -> StateCredential {
        let contents = try SecretBytes.contents(ofFile: path)
        let trimmed = contents.withUnsafeBytes { bytes in
            var end = bytes.count
            if end > 0 && bytes[end - 1] == 0x0a { end -= 1 }
            if end > 0 && bytes[end - 1] == 0x0d { end -= 1 }
            return SecretBytes(copying: UnsafeRawBufferPointer(rebasing: bytes[0..<end]))
        }
        guard trimmed.count > 0 else { throw StateError(.wrongKey, "the passphrase file '\(path)' is empty") }
        return try .passphrase(trimmed, derivation: derivation)
    }
}

/// The key `digits` (hex, upper or lower case) spell, decoded in memory that is zeroed after; nil
/// for anything but hex digits in pairs.
func hexKey(_ digits: UnsafeRawBufferPointer) -> SymmetricKey? {
    guard digits.count.isMultiple(of: 2) else { return nil }
    let decoded = UnsafeMutableRawBufferPointer.allocate(byteCount: max(digits.count / 2, 1), alignment: 16)
    defer {
        decoded.initializeMemory(as: UInt8.self, repeating: 0)
        decoded.deallocate()
    }
    for index in 0..<digits.count / 2 {
        guard let high = hexValue(digits[2 * index]), let low = hexValue(digits[2 * index + 1]) else { return nil }
        decoded[index] = high << 4 | low
    }
    return SymmetricKey(data: UnsafeRawBufferPointer(rebasing: decoded[0..<digits.count / 2]))
}

private func hexValue(_ digit: UInt8) -> UInt8? {
    switch digit {
    case 0x30...0x39: digit - 0x30
    case 0x61...0x66: digit - 0x61 + 10
    case 0x41...0x46: digit - 0x41 + 10
    default: nil
    }
}
