// BlobCipher: AES-256-GCM over one blob. A fresh random 96-bit nonce per write; the store's id,
// the generation the blob was written in and its name are the associated data, so a blob copied
// to another name, another store, or back from an older generation fails to open.
//
// Stored form: nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes).
import Crypto

enum BlobCipher {
    static let overhead = 12 + 16

    static func associatedData(storeID: [UInt8], generation: UInt64, name: String) -> [UInt8] {
        var writer = FieldWriter()
        writer.append(storeID)
        writer.append(generation)
        writer.append(Array(name.utf8))
        return writer.bytes
    }

    /// Seals `plaintext` into `stored` (exactly `plaintext.count + overhead` bytes).
    static func seal(_ plaintext: UnsafeRawBufferPointer, key: SymmetricKey, associatedData: [UInt8],
                     into stored: UnsafeMutableRawBufferPointer) throws(StateError) {
        let box: AES.GCM.SealedBox
        do {
            box = try AES.GCM.seal(plaintext, using: key, nonce: AES.GCM.Nonce(), authenticating: associatedData)
        } catch {
            throw StateError(.invalidRequest, "encryption failed: \(error)")
        }
        // A sealed box made by `seal` keeps the combined form: no copy to get it.
        guard let combined = box.combined, combined.count == stored.count else {
            throw StateError(.invalidRequest, "AES-GCM gave \(box.combined?.count ?? 0) bytes, not \(stored.count)")
        }
        combined.withUnsafeBytes { stored.copyMemory(from: $0) }
    }

    /// The plaintext, or `.corrupt` when authentication fails: the key was checked before, so a
    /// failure here means the stored bytes changed.
    static func open(_ stored: [UInt8], key: SymmetricKey, associatedData: [UInt8], name: String) throws(StateError) -> [UInt8] {
        do {
            let box = try AES.GCM.SealedBox(combined: stored)
            return Array(try AES.GCM.open(box, using: key, authenticating: associatedData))
        } catch {
            throw StateError(.corrupt, "blob '\(name)' fails authentication: its stored bytes were changed (the key is right)")
        }
    }
}
