// Reads: get, list, verify — each one transaction under the shared transaction lock, so a
// commit is seen whole or not at all.
import BlockLayer

/// What `list` shows: no key needed.
public struct StateListing: Sendable, Hashable {
    /// nil: the disk holds no state yet.
    public var generation: UInt64?
    public var protection: KeyHeader.Protection
    public var blobs: [BlobRecord]
    public var slots: [SlotState]
    public var warnings: [String]
}

/// What `verify` found: every blob read back, checksummed and (when encrypted) authenticated.
public struct StateVerification: Sendable, Hashable {
    public var generation: UInt64?
    public var encrypted: Bool
    public var blobCount: Int
    public var byteCount: UInt64
    public var warnings: [String]
}

extension StateStore {
    /// The blob's bytes, verified: checksum, then (encrypted) authentication.
    public func get(_ name: String) throws(StateError) -> [UInt8] {
        try reading { (view, image, state) throws(StateError) in
            guard let superblock = view.superblock, let directory = view.directory else {
                throw StateError(.notFound, "no blob '\(name)': '\(path)' holds no state yet")
            }
            guard let blob = directory.blob(named: name) else {
                throw StateError(.notFound, "no blob '\(name)' in the state store of '\(path)'")
            }
            let keys = try keys(for: directory, superblock: superblock, state: &state)
            return try readBlob(blob, keys: keys, storeID: superblock.storeID, image: image)
        }
    }

    /// Every blob, verified, read in one transaction: one generation, whole.
    public func getAll() throws(StateError) -> [(name: String, bytes: [UInt8])] {
        try reading { (view, image, state) throws(StateError) in
            guard let superblock = view.superblock, let directory = view.directory else { return [] }
            let keys = try keys(for: directory, superblock: superblock, state: &state)
            var blobs: [(name: String, bytes: [UInt8])] = []
            for blob in directory.blobs {
                blobs.append((blob.name, try readBlob(blob, keys: keys, storeID: superblock.storeID, image: image)))
            }
            return blobs
        }
    }

    public func list() throws(StateError) -> StateListing {
        try reading { (view, _, _) throws(StateError) in
            StateListing(generation: view.directory?.generation, protection: view.directory?.keyHeader.protection ?? .none,
                         blobs: view.directory?.blobs ?? [], slots: view.slots, warnings: view.damageWarnings)
        }
    }

    /// The migration destination's early check: the key is right, and every blob reads back
    /// intact. The key is checked before any blob is read, so a wrong key is never mistaken for
    /// damage.
    public func verify() throws(StateError) -> StateVerification {
        try reading { (view, image, state) throws(StateError) in
            // No state yet: nothing to check, with or without a key (the first commit will use it).
            guard let superblock = view.superblock, let directory = view.directory else {
                return StateVerification(generation: nil, encrypted: false, blobCount: 0, byteCount: 0, warnings: [])
            }
            let keys = try keys(for: directory, superblock: superblock, state: &state)
            var total: UInt64 = 0
            for blob in directory.blobs {
                total += UInt64(try readBlob(blob, keys: keys, storeID: superblock.storeID, image: image).count)
            }
            return StateVerification(generation: directory.generation, encrypted: directory.keyHeader.isEncrypted,
                                     blobCount: directory.blobs.count, byteCount: total, warnings: view.damageWarnings)
        }
    }

    /// Async twins: they wait for the transaction lock without blocking a task thread, and a
    /// cancelled task stops waiting at once.
    public func get(_ name: String) async throws(StateError) -> [UInt8] {
        try await holding(.shared) { () throws(StateError) in try self.get(name) }
    }

    public func verify() async throws(StateError) -> StateVerification {
        try await holding(.shared) { () throws(StateError) in try self.verify() }
    }

    @discardableResult
    public func put(_ name: String, _ bytes: [UInt8]) async throws(StateError) -> BlobRecord {
        try await holding(.exclusive) { () throws(StateError) in try self.put(name, bytes) }
    }

    func readBlob(_ blob: BlobRecord, keys: StoreKeys?, storeID: [UInt8], image: BlockImage) throws(StateError) -> [UInt8] {
        let stored: [UInt8]
        if let inline = blob.inlineBytes {
            stored = inline
        } else {
            stored = try readBytes(image, at: Int64(blob.byteOffset ?? 0), count: Int(blob.storedByteCount))
        }
        guard CRC32C.checksum(stored) == blob.checksum else {
            throw StateError(.corrupt, "blob '\(blob.name)' fails its checksum: its stored bytes are damaged")
        }
        guard let keys else { return stored }
        return try BlobCipher.open(stored, key: keys.blobKey, storeID: storeID, generation: blob.generation, name: blob.name,
                                   plainByteCount: Int(blob.byteCount))
    }
}
