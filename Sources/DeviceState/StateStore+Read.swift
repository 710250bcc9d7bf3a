// Reads: get, list, verify — each one transaction under the shared transaction lock, so a
// commit is seen whole or not at all.
import BlockLayer

/// What `list` shows: no key needed.
public struct StateListing: Sendable, Hashable {
    /// nil: the disk holds no state yet.
    public var generation: UInt64?
    /// What opens the store, so the user knows which credential to give.
    public var protection: KeyHeader.Protection
    /// The blobs of the current generation, by name: names and sizes, never contents.
    public var blobs: [BlobRecord]
    /// Both directory slots, so damage to the older one shows before it is ever needed.
    public var slots: [SlotState]
    /// Damage found while listing (a damaged slot), which does not stop the listing.
    public var warnings: [String]
}

/// What `verify` found: every blob read back, checksummed and (when encrypted) authenticated.
public struct StateVerification: Sendable, Hashable {
    /// The generation verified; nil: the disk holds no state yet, which is not a failure.
    public var generation: UInt64?
    /// Whether authentication was checked too, not only checksums.
    public var encrypted: Bool
    /// How many blobs read back intact.
    public var blobCount: Int
    /// Their plaintext bytes together.
    public var byteCount: UInt64
    /// Damage to the other directory slot: the current state is intact and serves, and the next
    /// commit rewrites the damaged slot.
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

    /// The blobs of `names` the store holds, verified, read in one transaction: one generation,
    /// whole. Named, not all: a crafted directory may name thousands of blobs.
    public func get(_ names: [String]) throws(StateError) -> [(name: String, bytes: [UInt8])] {
        try reading { (view, image, state) throws(StateError) in
            guard let superblock = view.superblock, let directory = view.directory else { return [] }
            let keys = try keys(for: directory, superblock: superblock, state: &state)
            var blobs: [(name: String, bytes: [UInt8])] = []
            for blob in directory.blobs where names.contains(blob.name) {
                blobs.append((blob.name, try readBlob(blob, keys: keys, storeID: superblock.storeID, image: image)))
            }
            return blobs
        }
    }

    /// What the store holds, read from the directory alone: no key needed and no blob read.
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
            // Each blob streams through a chunk and is dropped: memory for a chunk, whatever
            // the directory claims (parse bounded the total, so the sum cannot overflow).
            var total: UInt64 = 0
            for blob in directory.blobs {
                try readBlob(blob, keys: keys, storeID: superblock.storeID, image: image) { _ in }
                total += blob.byteCount
            }
            return StateVerification(generation: directory.generation, encrypted: directory.keyHeader.isEncrypted,
                                     blobCount: directory.blobs.count, byteCount: total, warnings: view.damageWarnings)
        }
    }

    /// Async twins: the lock wait and the work (reads, writes, fdatasync) run on threads of
    /// their own, never on a task thread; a cancelled task stops waiting at once, and a commit
    /// that has begun completes.
    public func get(_ name: String) async throws(StateError) -> [UInt8] {
        try await holding(.shared) { () throws(StateError) in try self.get(name) }
    }

    /// `verify()` for async code.
    public func verify() async throws(StateError) -> StateVerification {
        try await holding(.shared) { () throws(StateError) in try self.verify() }
    }

    /// `put(_:_:)` for async code.
    @discardableResult
    public func put(_ name: String, _ bytes: [UInt8]) async throws(StateError) -> BlobRecord {
        try await holding(.exclusive) { () throws(StateError) in try self.put(name, bytes) }
    }

    /// The blob's plaintext, verified (at most `StateDirectory.maximumBlobBytes`).
    func readBlob(_ blob: BlobRecord, keys: StoreKeys?, storeID: [UInt8], image: BlockImage) throws(StateError) -> [UInt8] {
        var plaintext: [UInt8] = []
        plaintext.reserveCapacity(Int(blob.byteCount))
        try readBlob(blob, keys: keys, storeID: storeID, image: image) { plaintext += $0 }
        return plaintext
    }

    /// Reads the blob front to back, a chunk or a segment at a time, handing each piece of
    /// plaintext to `body` (which must drop what it got if this throws), then judges it: the
    /// checksum of the stored bytes first, then (encrypted) authentication — so damage reads as
    /// a checksum failure, as it did when the whole blob was read first.
    func readBlob(_ blob: BlobRecord, keys: StoreKeys?, storeID: [UInt8], image: BlockImage,
                  _ body: (ArraySlice<UInt8>) -> Void) throws(StateError) {
        var reader = StoredBlobReader(blob, image: image)
        var failedSegment: Int?
        if let keys {
            let plainByteCount = Int(blob.byteCount)
            let count = BlobCipher.segmentCount(plainByteCount: plainByteCount)
            for segment in 0..<count {
                let stored = try reader.next(BlobCipher.storedSegmentByteCount(segment, plainByteCount: plainByteCount))
                // After a failure, read on only to finish the checksum.
                guard failedSegment == nil else { continue }
                if let plaintext = BlobCipher.openSegment(stored, key: keys.blobKey, storeID: storeID, generation: blob.generation,
                                                          segment: segment, of: count, name: blob.name) {
                    body(plaintext[...])
                } else {
                    failedSegment = segment
                }
            }
        } else {
            var left = Int(blob.storedByteCount)
            while left > 0 {
                let piece = try reader.next(min(left, StoredBlobReader.chunkBytes))
                body(piece)
                left -= piece.count
            }
        }
        guard reader.checksum == blob.checksum else {
            throw StateError(.corrupt, "blob '\(blob.name)' fails its checksum: its stored bytes are damaged")
        }
        if let failedSegment {
            throw StateError(.corrupt, "blob '\(blob.name)' fails authentication in segment \(failedSegment): its stored bytes were changed (the key is right)")
        }
    }
}
