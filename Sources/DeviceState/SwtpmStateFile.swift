// SwtpmStateFile: one state file of swtpm's directory backend (swtpm 0.7.1,
// src/swtpm/swtpm_nvstore.c and tlv.c) — `tpm2-00.permall`, `tpm2-00.volatilestate`,
// `tpm2-00.savestate` — read and written byte for byte as swtpm does.
//
// Header (10 bytes, big-endian): version (1, = 2), minimum version (1, = 1), header size (2,
// = 10), flags (2), total length of the file (4). Flags: 0x1 encrypted, 0x8 with a 256-bit key.
// Then tag-length-value records: tag (2), length (4), value.
//   unencrypted  TAG_DATA (1): libtpms's blob — no checksum of any kind;
//   encrypted    TAG_ENCRYPTED_DATA (2): AES-CBC (128 or 256 by the key's length) of libtpms's
//                blob, padded PKCS#7-style to a multiple of the *key* length (32 bytes for
//                AES-256, not the 16 of the cipher's block); TAG_HMAC (3): HMAC-SHA256 with the
//                same key over ciphertext ‖ IV record; TAG_IVEC_ENCRYPTED_DATA (6): as many random
//                bytes as the key has, of which CBC uses the first 16.
// The blob a device state store keeps is libtpms's blob itself: the store brings the checksum,
// the encryption and the atomic, durable commits that swtpm's files lack.
import Crypto
import CryptoExtras
import FoundationEssentials

/// swtpm's state file format, kept apart from the folder handling so it is tested on bytes alone
/// and stays byte-for-byte what swtpm writes.
public enum SwtpmStateFile {
    static let tagData: UInt16 = 1
    static let tagEncryptedData: UInt16 = 2
    static let tagHMAC: UInt16 = 3
    static let tagIVec: UInt16 = 6
    static let flagEncrypted: UInt16 = 0x1
    static let flag256BitKey: UInt16 = 0x8

    /// libtpms's blob from the bytes of a state file, decrypted with `key` when swtpm encrypted it.
    public static func blob(from file: [UInt8], key: SymmetricKey?, path: String) throws(StateError) -> [UInt8] {
        var reader = FieldReader(file, what: "the swtpm state file '\(path)'")
        let version = try reader.uint8()
        let minimumVersion = try reader.uint8()
        let headerSize = try reader.uint16()
        let flags = try reader.uint16()
        let totalLength = try reader.uint32()
        guard minimumVersion <= 2, headerSize >= 10, Int(headerSize) <= file.count, Int(totalLength) == file.count else {
            throw StateError(.corrupt, "'\(path)' is not a swtpm state file (version \(version), header \(headerSize) bytes, length \(totalLength) of \(file.count))")
        }
        reader = FieldReader(file, at: Int(headerSize), what: "the swtpm state file '\(path)'")
        var records: [UInt16: [UInt8]] = [:]
        while reader.remaining > 0 {
            let tag = try reader.uint16()
            let length = try reader.uint32()
            guard records[tag] == nil else { throw StateError(.corrupt, "'\(path)' holds record \(tag) twice") }
            records[tag] = try reader.bytes(Int(length))
        }
        guard flags & flagEncrypted != 0 else {
            guard let data = records[tagData] else { throw StateError(.corrupt, "'\(path)' holds no data record") }
            if key != nil { throw StateError(.keyNotNeeded, "a swtpm key was given but '\(path)' is not encrypted") }
            return data
        }
        guard let key else { throw StateError(.keyRequired, "'\(path)' is encrypted by swtpm; give --swtpm-key-file") }
        guard let ciphertext = records[tagEncryptedData], let mac = records[tagHMAC], let ivec = records[tagIVec], ivec.count >= 16 else {
            throw StateError(.corrupt, "'\(path)' is marked encrypted but lacks its ciphertext, HMAC or IV (swtpm files older than 0.2 are not read)")
        }
        let keyBytes = key.bitCount / 8
        guard (flags & flag256BitKey != 0) == (keyBytes == 32) else {
            throw StateError(.wrongKey, "wrong swtpm key: '\(path)' was encrypted with a \(flags & flag256BitKey != 0 ? 256 : 128)-bit key, this one has \(key.bitCount) bits")
        }
        guard HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: ciphertext + ivec, using: key) else {
            throw StateError(.wrongKey, "wrong swtpm key for '\(path)' (or the file is damaged: swtpm's HMAC cannot tell)")
        }
        let padded: [UInt8]
        do {
            padded = Array(try AES._CBC.decrypt(ciphertext, using: key, iv: try AES._CBC.IV(ivBytes: ivec.prefix(16)), noPadding: true))
        } catch {
            throw StateError(.corrupt, "'\(path)' passes swtpm's HMAC but does not decrypt: \(error)")
        }
        // swtpm's own check: the last byte n is 1…key length, and the last n bytes are all n.
        guard let pad = padded.last, (1...keyBytes).contains(Int(pad)), padded.count >= Int(pad),
              padded.suffix(Int(pad)).allSatisfy({ $0 == pad }) else {
            throw StateError(.corrupt, "'\(path)' passes swtpm's HMAC but its padding is wrong")
        }
        return Array(padded.dropLast(Int(pad)))
    }

    /// The bytes of a state file holding `blob`, encrypted with `key` (as swtpm's `--key`) or not.
    public static func file(holding blob: [UInt8], key: SymmetricKey?) throws(StateError) -> [UInt8] {
        var records = FieldWriter()
        var flags: UInt16 = 0
        if let key {
            flags = flagEncrypted | (key.bitCount == 256 ? flag256BitKey : 0)
            let keyBytes = key.bitCount / 8
            let ivec = (0..<keyBytes).map { _ in UInt8.random(in: 0...255) }
            let pad = keyBytes - blob.count % keyBytes
            let padded = blob + [UInt8](repeating: UInt8(pad), count: pad)
            let ciphertext: [UInt8]
            do {
                ciphertext = Array(try AES._CBC.encrypt(padded, using: key, iv: try AES._CBC.IV(ivBytes: ivec.prefix(16)), noPadding: true))
            } catch {
                throw StateError(.invalidRequest, "AES-CBC encryption failed: \(error)")
            }
            let mac = Array(HMAC<SHA256>.authenticationCode(for: ciphertext + ivec, using: key))
            for (tag, value) in [(tagEncryptedData, ciphertext), (tagHMAC, mac), (tagIVec, ivec)] {
                records.append(tag)
                records.append(UInt32(value.count))
                records.append(value)
            }
        } else {
            records.append(tagData)
            records.append(UInt32(blob.count))
            records.append(blob)
        }
        var file = FieldWriter()
        file.append(UInt8(2))
        file.append(UInt8(1))
        file.append(UInt16(10))
        file.append(flags)
        file.append(UInt32(10 + records.bytes.count))
        file.append(records.bytes)
        return file.bytes
    }

    /// A swtpm key file (`--key file=F,format=hex|binary`): 16 or 32 raw bytes, or 32 or 64 hex
    /// digits (after an optional `0x`, as swtpm allows).
    public static func key(fromFile path: String) throws(StateError) -> SymmetricKey {
        let contents = try SecretBytes.contents(ofFile: path)
        let key: SymmetricKey? = contents.withUnsafeBytes { bytes in
            if bytes.count == 16 || bytes.count == 32 { return SymmetricKey(data: bytes) }
            // Whitespace around, and an optional 0x, as swtpm allows.
            var start = 0, end = bytes.count
            let whitespace: Set<UInt8> = [0x20, 0x09, 0x0a, 0x0d]
            while start < end && whitespace.contains(bytes[start]) { start += 1 }
            while end > start && whitespace.contains(bytes[end - 1]) { end -= 1 }
            if end - start >= 2 && bytes[start] == 0x30 && (bytes[start + 1] == 0x78 || bytes[start + 1] == 0x58) { start += 2 }
            guard end - start == 32 || end - start == 64 else { return nil }
            return hexKey(UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
        }
        guard let key else {
            throw StateError(.wrongKey, "the swtpm key file '\(path)' holds \(contents.count) bytes; it holds 16 or 32 raw bytes, or 32 or 64 hex digits")
        }
        return key
    }
}
