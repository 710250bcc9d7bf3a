// Directory: the list of blobs, kept in two slots; the valid slot with the higher generation is
// the store's state, the other is the state before it. A commit writes the slot that does not
// hold the current directory, so a torn slot write leaves the current one intact.
//
// Slot layout (big-endian; docs/state.md §Directory):
//   0   8  magic "BLKSTDIR"
//   8   8  generation (1 for the first directory, +1 per commit)
//   16  4  used length: header, entries and the checksum
//   20  4  entry count
//   24  1  protection: 0 none, 1 key, 2 passphrase
//   25  1  passphrase stretching: 0 none, 1 PBKDF2-HMAC-SHA256, 2 scrypt
//   26  2  scrypt log2(N)
//   28  4  PBKDF2 iterations, or scrypt r
//   32  4  scrypt p
//   36  32 salt
//   68  32 key-check value
//   100    entries, each: name length (2), name (UTF-8), placement (1: 0 extent, 1 inline),
//          stored length (8), plain length (8), generation written (8), CRC32C of the stored
//          bytes (4), then the extent's offset (8), or the stored bytes themselves (inline)
//   end-4  CRC32C of bytes 0 ..< used length − 4
//
// Inline blobs: a small blob (stored ≤ 32 KiB, while the slot keeps 8 KiB free for entries) is
// kept in the directory slot itself. Its copy and the directory that names it are then one
// checksummed write, so such a commit needs one flush, not two; a torn slot is damage to that
// slot, which the other slot has always survived.

/// One blob as the directory records it: enough to find, check and decrypt its stored copy
/// without reading any other blob.
public struct BlobRecord: Sendable, Hashable {
    /// The blob's name (1–255 bytes of UTF-8, no control characters): what `get` asks for.
    public var name: String
    /// Where the stored bytes are, in the disk; nil for a blob kept inline in the directory.
    public var byteOffset: UInt64?
    /// The stored bytes of an inline blob.
    var inlineBytes: [UInt8]?
    /// The stored bytes: the plaintext, or nonce ‖ ciphertext ‖ tag.
    public var storedByteCount: UInt64
    /// The blob's own length.
    public var byteCount: UInt64
    /// The directory generation that wrote this copy (bound into its encryption).
    public var generation: UInt64
    /// CRC32C of the stored bytes, so damage is told apart from a wrong key before decryption.
    public var checksum: UInt32

    /// The blocks of its extent, nil when inline.
    var extent: Range<UInt64>? { byteOffset.map { $0..<$0 + storedByteCount } }

    /// Bytes its entry takes in a directory slot.
    var entryByteCount: Int { 2 + name.utf8.count + 1 + 28 + (inlineBytes?.count ?? 8) }
}

/// The store's state at one generation: which blobs exist, where, and how they are protected.
/// Two slots hold two directories, so a torn write of one leaves the other.
public struct StateDirectory: Sendable, Hashable {
    /// Counts commits: the valid slot with the higher generation is the current state.
    public var generation: UInt64
    /// How the blobs of this generation are protected, so a rekey changes key and blobs in one
    /// directory switch.
    public var keyHeader: KeyHeader
    /// Sorted by name.
    public var blobs: [BlobRecord]

    static let magic = Array("BLKSTDIR".utf8)
    static let headerLength = 100
    /// A blob name's limit in UTF-8 bytes, as file names have: swtpm's file names fit.
    public static let maximumNameBytes = 255
    static let inlineLimit = 32 << 10
    static let entryReserve = 8 << 10
    /// The largest blob (its plaintext): 4 times a UEFI variable store (OVMF_VARS_4M.fd, 4 MiB),
    /// the largest device state seen in practice; swtpm's state files are tens to hundreds of
    /// KiB. A directory naming a larger one is damaged, so no size read from an image makes a
    /// reader allocate more (docs/state.md §Limits).
    public static let maximumBlobBytes = 16 << 20
    /// The most all blobs of one directory hold together: bounds the time `verify` spends on a
    /// crafted directory naming many large blobs.
    public static let maximumTotalBytes = 256 << 20

    var encodedByteCount: Int { Self.headerLength + blobs.reduce(0) { $0 + $1.entryByteCount } + 4 }

    /// Whether a blob of `storedByteCount` bytes named `name` may be kept inline beside these
    /// entries in a slot of `slotSize` bytes.
    func canInline(_ storedByteCount: Int, name: String, slotSize: Int) -> Bool {
        storedByteCount <= Self.inlineLimit
            && encodedByteCount + 2 + name.utf8.count + 29 + storedByteCount <= slotSize - Self.entryReserve
    }

    /// The record `get` and `remove` work on; nil when this generation has no such blob.
    public func blob(named name: String) -> BlobRecord? { blobs.first { $0.name == name } }

    /// The generation of the next commit. The last one, 2^64 − 1, is never reached by commits
    /// (one a nanosecond would take 584 years): a directory holding it was crafted, and is
    /// refused as damage rather than wrapped or trapped on.
    func nextGeneration() throws(StateError) -> UInt64 {
        let (next, overflow) = generation.addingReportingOverflow(1)
        guard !overflow else {
            throw StateError(.corrupt, "the directory's generation is \(generation), the last there is: the store is damaged")
        }
        return next
    }

    func encoded() -> [UInt8] {
        var writer = FieldWriter()
        writer.append(Self.magic)
        writer.append(generation)
        writer.append(UInt32(encodedByteCount))
        writer.append(UInt32(blobs.count))
        switch keyHeader.protection {
        case .none:
            writer.append([0, 0, 0, 0] as [UInt8]); writer.append(UInt32(0)); writer.append(UInt32(0))
        case .key:
            writer.append([1, 0, 0, 0] as [UInt8]); writer.append(UInt32(0)); writer.append(UInt32(0))
        case .passphrase(.pbkdf2SHA256(let iterations)):
            writer.append([2, 1, 0, 0] as [UInt8]); writer.append(iterations); writer.append(UInt32(0))
        case .passphrase(.scrypt(let log2Rounds, let blockSize, let parallelism)):
            writer.append([2, 2, 0, log2Rounds] as [UInt8]); writer.append(blockSize); writer.append(parallelism)
        }
        writer.append(keyHeader.salt)
        writer.append(keyHeader.keyCheck)
        for blob in blobs {
            writer.append(UInt16(blob.name.utf8.count))
            writer.append(Array(blob.name.utf8))
            writer.append(UInt8(blob.inlineBytes == nil ? 0 : 1))
            writer.append(blob.storedByteCount)
            writer.append(blob.byteCount)
            writer.append(blob.generation)
            writer.append(blob.checksum)
            if let inline = blob.inlineBytes { writer.append(inline) } else { writer.append(blob.byteOffset ?? 0) }
        }
        writer.append(CRC32C.checksum(writer.bytes))
        return writer.bytes
    }

    /// The used length a slot's first bytes announce (to read the rest), nil when it has no magic.
    static func usedLength(ofSlotStart bytes: [UInt8]) -> Int? {
        guard bytes.starts(with: magic), bytes.count >= 20 else { return nil }
        return Int(bytes[16]) << 24 | Int(bytes[17]) << 16 | Int(bytes[18]) << 8 | Int(bytes[19])
    }

    /// Parses a slot's used bytes, checking everything a reader relies on: the checksum, the
    /// key header, each name, and that every extent lies in the data area without overlapping.
    static func parse(_ bytes: [UInt8], slot: String, superblock: Superblock) throws(StateError) -> StateDirectory {
        let what = "directory slot \(slot)"
        guard bytes.count >= headerLength + 4, bytes.starts(with: magic) else { throw StateError(.corrupt, "\(what) is damaged: no directory") }
        let checksum = UInt32(bytes[bytes.count - 4]) << 24 | UInt32(bytes[bytes.count - 3]) << 16
            | UInt32(bytes[bytes.count - 2]) << 8 | UInt32(bytes[bytes.count - 1])
        guard checksum == CRC32C.checksum(Array(bytes[0..<bytes.count - 4])) else {
            throw StateError(.corrupt, "\(what) fails its checksum")
        }
        var reader = FieldReader(Array(bytes[0..<bytes.count - 4]), at: 8, what: what)
        let generation = try reader.uint64()
        _ = try reader.uint32()
        let count = try reader.uint32()
        let protection = try reader.bytes(4)
        let first = try reader.uint32()
        let second = try reader.uint32()
        let salt = try reader.bytes(32)
        let keyCheck = try reader.bytes(32)
        let keyProtection: KeyHeader.Protection
        switch (protection[0], protection[1]) {
        case (0, 0): keyProtection = .none
        case (1, 0): keyProtection = .key
        case (2, 1), (2, 2):
            let derivation = protection[1] == 1 ? KeyDerivation.pbkdf2SHA256(iterations: first)
                : .scrypt(log2Rounds: protection[3], blockSize: first, parallelism: second)
            // The cost comes from the image: unbounded, a crafted one would make the open hang.
            guard derivation.isWithinBounds else { throw StateError(.corrupt, "\(what) asks for passphrase stretching beyond blk's bounds") }
            keyProtection = .passphrase(derivation)
        default:
            throw StateError(.corrupt, "\(what) names an unknown protection (\(protection[0]), \(protection[1]))")
        }
        var blobs: [BlobRecord] = []
        var totalBytes: UInt64 = 0
        for _ in 0..<count {
            let nameLength = Int(try reader.uint16())
            guard let name = String(validating: try reader.bytes(nameLength), as: UTF8.self), validName(name) == nil else {
                throw StateError(.corrupt, "\(what) holds an invalid blob name")
            }
            let placement = try reader.uint8()
            var blob = BlobRecord(name: name, byteOffset: nil, storedByteCount: try reader.uint64(),
                                  byteCount: try reader.uint64(), generation: try reader.uint64(), checksum: try reader.uint32())
            switch placement {
            case 0: blob.byteOffset = try reader.uint64()
            case 1:
                guard blob.storedByteCount <= UInt64(inlineLimit) else {
                    throw StateError(.corrupt, "\(what): inline blob '\(name)' claims \(blob.storedByteCount) bytes")
                }
                blob.inlineBytes = try reader.bytes(Int(blob.storedByteCount))
            default: throw StateError(.corrupt, "\(what): blob '\(name)' has an unknown placement \(placement)")
            }
            // Every size is bounded before any arithmetic or allocation uses it: a size near 2^64
            // trapped in the encrypted-size arithmetic, a 20 GiB one aborted the allocation of
            // its buffer, and an offset near 2^64 would wrap its extent's end.
            guard blob.byteCount <= UInt64(maximumBlobBytes) else {
                throw StateError(.corrupt, "\(what): blob '\(name)' claims \(blob.byteCount) bytes; a blob holds at most \(maximumBlobBytes)")
            }
            let extentFits = blob.byteOffset.map { offset in
                offset >= superblock.dataStart && offset % UInt64(Superblock.blockSize) == 0
                    && offset <= superblock.storeSize && blob.storedByteCount <= superblock.storeSize - offset
            } ?? true
            guard extentFits, blob.byteCount <= blob.storedByteCount,
                  blob.storedByteCount == (keyProtection == .none ? blob.byteCount
                                           : UInt64(BlobCipher.storedByteCount(plainByteCount: Int(blob.byteCount)))),
                  blob.generation <= generation else {
                throw StateError(.corrupt, "\(what): blob '\(name)' has an impossible extent (\(blob.storedByteCount) bytes at \(blob.byteOffset ?? 0))")
            }
            // Checked after each blob of at most 16 MiB: the sum stays far from overflowing.
            totalBytes += blob.byteCount
            guard totalBytes <= UInt64(maximumTotalBytes) else {
                throw StateError(.corrupt, "\(what) names more than \(maximumTotalBytes) bytes of blobs")
            }
            blobs.append(blob)
        }
        guard reader.remaining == 0 else { throw StateError(.corrupt, "\(what) has \(reader.remaining) bytes after its entries") }
        let byName = blobs.sorted { $0.name < $1.name }
        for (left, right) in zip(byName, byName.dropFirst()) where left.name == right.name {
            throw StateError(.corrupt, "\(what) names blob '\(left.name)' twice")
        }
        let byOffset = blobs.filter { $0.extent != nil }.sorted { $0.extent!.lowerBound < $1.extent!.lowerBound }
        for (left, right) in zip(byOffset, byOffset.dropFirst()) where left.extent!.upperBound > right.extent!.lowerBound {
            throw StateError(.corrupt, "\(what): blobs '\(left.name)' and '\(right.name)' overlap")
        }
        return StateDirectory(generation: generation, keyHeader: KeyHeader(protection: keyProtection, salt: salt, keyCheck: keyCheck), blobs: byName)
    }

    /// Why `name` cannot name a blob, or nil when it can.
    public static func validName(_ name: String) -> String? {
        if name.isEmpty { return "a blob name must not be empty" }
        if name.utf8.count > maximumNameBytes { return "a blob name is at most \(maximumNameBytes) bytes of UTF-8; this one has \(name.utf8.count)" }
        if name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            return "a blob name must not contain control characters"
        }
        return nil
    }
}
