// Commits: init, put, remove, rekey. Every commit follows one protocol (docs/state.md §Commit):
//
//   1. new blob copies go where no blob of the current directory is (ExtentAllocator);
//   2. flush — the copies are durable;
//   3. the new directory, generation + 1, goes to the slot that does not hold the current one;
//   4. flush — the commit is durable.
//
//   crash before 4 completes:  the current slot is untouched and wins (its generation is the
//                              highest valid one); the new copies are unreferenced free space
//   crash after 4:             the new slot is valid and wins; its blobs were durable before
//
// Two flushes, so that a directory on disk never points at bytes that may not be there: any
// checksum failure is then damage, reported as such, never a torn commit silently rolled back
// (for a TPM, a silent rollback would undo its anti-hammering counters). Small blobs kept inline
// in the directory (Directory.swift) and removes write no extent: steps 3–4 only, one flush.
import BlockLayer
import Crypto

extension StateStore {
    /// Lays out an empty store on the disk: slot A (generation 1, no blobs, the key header of
    /// `credential`) and a cleared slot B, flush, then the superblock, flush — so a superblock
    /// is never seen without a directory. Refuses a disk holding anything unless `force`.
    public func initialise(force: Bool = false) throws(StateError) {
        try committing(replacing: force) { (view, image, state) throws(StateError) in
            if let superblock = view.superblock, !force {
                throw StateError(.invalidRequest, "'\(path)' already holds a device-state store (generation \(view.directory?.generation ?? 0), \(view.directory?.blobs.count ?? 0) blobs, store \(superblock.storeID.prefix(4).hex)…); give --force to replace it")
            }
            view = try layOut(image, state: &state, checkingEmpty: !force && view.superblock == nil)
        }
    }

    func layOut(_ image: BlockImage, state: inout State, checkingEmpty: Bool) throws(StateError) -> StoreView {
        let diskSize = try blockCall { () throws(BlockError) in try image.length() }
        guard diskSize >= Superblock.minimumDiskSize() else {
            throw StateError(.invalidRequest, "'\(path)' has a disk of \(diskSize) bytes; a state store needs at least \(Superblock.minimumDiskSize())")
        }
        if checkingEmpty, try !diskIsAllZeroes(image, size: diskSize) {
            throw StateError(.notAStore, "'\(path)' holds data that is not a device-state store (give `blk state init --force` to replace it)")
        }
        let storeSize = UInt64(diskSize) / UInt64(Superblock.blockSize) * UInt64(Superblock.blockSize)
        let superblock = Superblock(storeSize: storeSize, slotSize: Superblock.defaultSlotSize,
                                    storeID: (0..<16).map { _ in UInt8.random(in: 0...255) })
        let (header, keys) = try KeyHeader.protecting(storeID: superblock.storeID, with: state.credential)
        let directory = StateDirectory(generation: 1, keyHeader: header, blobs: [])
        try image.during(.storeInit) { () throws(StateError) in
            try withBytes(directory.encoded()) { (bytes) throws(StateError) in
                try writeBlocks(image, at: superblock.slotOffsets[0], bytes)
            }
            try withBytes([UInt8](repeating: 0, count: Superblock.blockSize)) { (bytes) throws(StateError) in
                try writeBlocks(image, at: superblock.slotOffsets[1], bytes)
            }
            try flush(image)
            try withBytes(superblock.encoded()) { (bytes) throws(StateError) in try writeBlocks(image, at: 0, bytes) }
            try flush(image)
        }
        state.keys = (header, superblock.storeID, keys)
        return StoreView(superblock: superblock, directory: directory, currentSlot: 0, slots: [.valid(generation: 1), .empty])
    }

    private func diskIsAllZeroes(_ image: BlockImage, size: Int64) throws(StateError) -> Bool {
        if try blockCall({ () throws(BlockError) in try image.readsAsZeroes(at: 0, byteCount: size) }) { return true }
        let chunk = 1 << 20
        var offset: Int64 = 0
        while offset < size {
            let count = Int(min(Int64(chunk), size - offset))
            if try blockCall({ () throws(BlockError) in try image.readsAsZeroes(at: offset, byteCount: Int64(count)) }) == false {
                guard try readBytes(image, at: offset, count: count).allSatisfy({ $0 == 0 }) else { return false }
            }
            offset += Int64(count)
        }
        return true
    }

    /// Replaces (or adds) blob `name` with `bytes`, atomically. An all-zero disk is laid out
    /// first, protected by the store's credential.
    @discardableResult
    public func put(_ name: String, _ bytes: [UInt8]) throws(StateError) -> BlobRecord {
        try put([(name, bytes)])[0]
    }

    /// Replaces (or adds) several blobs in one commit: all or none of them.
    @discardableResult
    public func put(_ blobs: [(name: String, bytes: [UInt8])]) throws(StateError) -> [BlobRecord] {
        for blob in blobs {
            if let why = StateDirectory.validName(blob.name) { throw StateError(.invalidRequest, why) }
            guard blob.bytes.count <= StateDirectory.maximumBlobBytes else {
                throw StateError(.invalidRequest, "blob '\(blob.name)' has \(blob.bytes.count) bytes; a blob holds at most \(StateDirectory.maximumBlobBytes) (16 MiB)")
            }
        }
        guard Set(blobs.map(\.name)).count == blobs.count else { throw StateError(.invalidRequest, "a commit names a blob twice") }
        return try committing { (view, image, state) throws(StateError) -> [BlobRecord] in
            if view.superblock == nil { view = try layOut(image, state: &state, checkingEmpty: true) }
            guard let superblock = view.superblock, let current = view.directory else {
                throw StateError(.corrupt, "the state store of '\(path)' has no directory")
            }
            let keys = try self.keys(for: current, superblock: superblock, state: &state)
            var allocator = ExtentAllocator(superblock: superblock, live: current.blobs)
            var next = current
            next.generation = try current.nextGeneration()
            next.blobs.removeAll { old in blobs.contains { $0.name == old.name } }
            let total = next.blobs.reduce(0) { $0 + $1.byteCount } + blobs.reduce(0) { $0 + UInt64($1.bytes.count) }
            guard total <= UInt64(StateDirectory.maximumTotalBytes) else {
                throw StateError(.invalidRequest, "the store's blobs would hold \(total) bytes together; at most \(StateDirectory.maximumTotalBytes) (256 MiB)")
            }
            var records: [BlobRecord] = []
            for blob in blobs {
                let record = try writeCopy(of: blob.name, blob.bytes, beside: next, keys: keys, superblock: superblock,
                                           allocator: &allocator, image: image)
                records.append(record)
                next.blobs.append(record)
            }
            // Inline copies travel with the directory: only extents need their own flush.
            if records.contains(where: { $0.inlineBytes == nil }) { try image.during(.blobWrite) { () throws(StateError) in try flush(image) } }
            next.blobs.sort { $0.name < $1.name }
            try publish(next, view: &view, image: image)
            return records
        }
    }

    /// Deletes blob `name`, atomically.
    public func remove(_ name: String) throws(StateError) {
        try committing { (view, image, _) throws(StateError) in
            guard let current = view.directory, current.blob(named: name) != nil else {
                throw StateError(.notFound, "no blob '\(name)' in the state store of '\(path)'")
            }
            var next = current
            next.generation = try current.nextGeneration()
            next.blobs.removeAll { $0.name == name }
            try publish(next, view: &view, image: image)
        }
    }

    /// Re-encrypts every blob for `newCredential` (nil: decrypts), atomically: every new copy
    /// is written beside the old ones, then one directory switch changes key and blobs together.
    public func rekey(to newCredential: StateCredential?) throws(StateError) {
        try committing { (view, image, state) throws(StateError) in
            if view.superblock == nil { view = try layOut(image, state: &state, checkingEmpty: true) }
            guard let superblock = view.superblock, let current = view.directory else { return }
            let oldKeys = try self.keys(for: current, superblock: superblock, state: &state)
            let (header, newKeys) = try KeyHeader.protecting(storeID: superblock.storeID, with: newCredential)
            var allocator = ExtentAllocator(superblock: superblock, live: current.blobs)
            var next = StateDirectory(generation: try current.nextGeneration(), keyHeader: header, blobs: [])
            for blob in current.blobs {
                let plaintext = try readBlob(blob, keys: oldKeys, storeID: superblock.storeID, image: image)
                next.blobs.append(try writeCopy(of: blob.name, plaintext, beside: next, keys: newKeys, superblock: superblock,
                                                allocator: &allocator, image: image))
            }
            if next.blobs.contains(where: { $0.inlineBytes == nil }) { try image.during(.blobWrite) { () throws(StateError) in try flush(image) } }
            try publish(next, view: &view, image: image)
            state.credential = newCredential
            state.keys = (header, superblock.storeID, newKeys)
        }
    }

    /// Seals (when encrypted) one blob copy for `directory` (generation and entries so far) and
    /// keeps it inline when it is small and the slot has room, or writes it where no live blob
    /// is (not yet durable). The stored form is built once, in the block-aligned buffer written.
    private func writeCopy(of name: String, _ bytes: [UInt8], beside directory: StateDirectory, keys: StoreKeys?,
                           superblock: Superblock, allocator: inout ExtentAllocator, image: BlockImage) throws(StateError) -> BlobRecord {
        let storedCount = keys == nil ? bytes.count : BlobCipher.storedByteCount(plainByteCount: bytes.count)
        let inline = directory.canInline(storedCount, name: name, slotSize: superblock.slotSize)
        let offset = inline ? nil : try allocator.allocate(UInt64(storedCount), for: name)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(ExtentAllocator.roundUp(UInt64(max(storedCount, 1)))),
                                                            alignment: Superblock.blockSize)
        defer { buffer.deallocate() }
        let stored = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<storedCount])
        UnsafeMutableRawBufferPointer(rebasing: buffer[storedCount...]).initializeMemory(as: UInt8.self, repeating: 0)
        if let keys {
            try withBytes(bytes) { (plaintext) throws(StateError) in
                try BlobCipher.seal(plaintext, key: keys.blobKey, storeID: superblock.storeID, generation: directory.generation,
                                    name: name, into: stored)
            }
        } else {
            bytes.withUnsafeBytes { stored.copyMemory(from: $0) }
        }
        if let offset {
            try blockCall { () throws(BlockError) in
                try image.during(.blobWrite) { () throws(BlockError) in try image.write(at: Int64(offset), from: UnsafeRawBufferPointer(buffer)) }
            }
        }
        var record = BlobRecord(name: name, byteOffset: offset, storedByteCount: UInt64(storedCount), byteCount: UInt64(bytes.count),
                                generation: directory.generation, checksum: CRC32C.checksum(UnsafeRawBufferPointer(stored)))
        if offset == nil { record.inlineBytes = Array(stored) }
        return record
    }

    /// Steps 3 and 4: the directory to the other slot, flush.
    private func publish(_ directory: StateDirectory, view: inout StoreView, image: BlockImage) throws(StateError) {
        guard let superblock = view.superblock else { return }
        let encoded = directory.encoded()
        guard encoded.count <= superblock.slotSize else {
            throw StateError(.noRoom, "the directory would need \(encoded.count) bytes; a slot holds \(superblock.slotSize) (fewer or shorter names)")
        }
        let slot = 1 - view.currentSlot
        try image.during(.directoryPublish) { () throws(StateError) in
            try withBytes(encoded) { (bytes) throws(StateError) in try writeBlocks(image, at: superblock.slotOffsets[slot], bytes) }
            try flush(image)
        }
        view.directory = directory
        view.currentSlot = slot
        view.slots[slot] = .valid(generation: directory.generation)
    }

    private func flush(_ image: BlockImage) throws(StateError) {
        try blockCall { () throws(BlockError) in try image.flush() }
    }
}

extension Sequence where Element == UInt8 {
    var hex: String { map { String($0, radix: 16).leftPadded(to: 2) }.joined() }
}

extension String {
    func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
