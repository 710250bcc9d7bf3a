// Superblock: block 0 of the disk, written once by init. It says "this disk holds a state
// store", which format version wrote it, and where the directory slots and the data area are.
//
// Layout (big-endian; docs/state.md §Superblock):
//   0   8  magic "BLKSTATE"
//   8   4  format version (1)
//   12  4  header length: the bytes the checksum covers (52 in version 1)
//   16  4  block size (4096): every slot and extent starts on one
//   20  4  directory slot size (bytes, a multiple of the block size)
//   24  8  store size: the bytes of the disk the store may use
//   32  16 store id (random; bound into every blob's encryption and the key check)
//   48  4  reserved (0)
//   52  4  CRC32C of bytes 0 ..< header length
// The rest of the block is zero. Slot A starts at one block, slot B one slot later, the data area
// after slot B.

/// Block 0 of a store: what marks a disk as holding one, written once by init, so every later
/// commit touches only the directory slots and the data area.
public struct Superblock: Sendable, Hashable {
    static let magic = Array("BLKSTATE".utf8)
    /// The layout this build writes and reads; a store of a newer version is refused as unsupported
    /// rather than misread.
    public static let formatVersion: UInt32 = 1
    static let headerLength: UInt32 = 52
    /// Every slot and extent starts on a block, so no write of one shares a sector with another.
    public static let blockSize = 4096
    /// Room for a directory of many blobs plus the small ones kept inline.
    public static let defaultSlotSize = 64 << 10

    /// The bytes of the disk the store may use: the disk's size when it was laid out.
    public var storeSize: UInt64
    /// The size of each directory slot, a multiple of the block size.
    public var slotSize: Int
    /// 16 random bytes, bound into every blob's encryption and the key check, so a blob copied from
    /// another store does not decrypt here.
    public var storeID: [UInt8]

    var slotOffsets: [Int64] { [Int64(Self.blockSize), Int64(Self.blockSize + slotSize)] }
    var dataStart: UInt64 { UInt64(Self.blockSize + 2 * slotSize) }

    /// The smallest disk a store fits on: the superblock, two slots and one data block.
    static func minimumDiskSize(slotSize: Int = defaultSlotSize) -> Int64 { Int64(2 * blockSize + 2 * slotSize) }

    func encoded() -> [UInt8] {
        var writer = FieldWriter()
        writer.append(Self.magic)
        writer.append(Self.formatVersion)
        writer.append(Self.headerLength)
        writer.append(UInt32(Self.blockSize))
        writer.append(UInt32(slotSize))
        writer.append(storeSize)
        writer.append(storeID)
        writer.append(UInt32(0))
        writer.append(CRC32C.checksum(writer.bytes))
        return writer.bytes + [UInt8](repeating: 0, count: Self.blockSize - writer.bytes.count)
    }

    /// Parses block 0: nil when it does not start with the magic (no store).
    static func parse(_ block: [UInt8], diskSize: Int64) throws(StateError) -> Superblock? {
        guard block.starts(with: magic) else { return nil }
        var reader = FieldReader(block, at: 8, what: "the state store's superblock")
        let version = try reader.uint32()
        guard version <= formatVersion else {
            throw StateError(.unsupported, "the state store was written by format version \(version); this blk reads versions up to \(formatVersion)")
        }
        let length = try reader.uint32()
        guard version >= 1, length == headerLength else {
            throw StateError(.corrupt, "the state store's superblock is damaged: version \(version), header length \(length)")
        }
        let stored = FieldReader(block, at: Int(length), what: "the state store's superblock")
        var checksumReader = stored
        guard try checksumReader.uint32() == CRC32C.checksum(Array(block[0..<Int(length)])) else {
            throw StateError(.corrupt, "the state store's superblock fails its checksum")
        }
        let blockSize = try reader.uint32()
        let slotSize = try reader.uint32()
        let storeSize = try reader.uint64()
        let storeID = try reader.bytes(16)
        guard blockSize == Self.blockSize, slotSize >= blockSize, slotSize % blockSize == 0, slotSize <= 16 << 20 else {
            throw StateError(.corrupt, "the state store's superblock is damaged: block size \(blockSize), slot size \(slotSize)")
        }
        let superblock = Superblock(storeSize: storeSize, slotSize: Int(slotSize), storeID: storeID)
        guard storeSize >= superblock.dataStart, storeSize <= UInt64(diskSize) else {
            throw StateError(.corrupt, "the state store's superblock claims \(storeSize) bytes on a disk of \(diskSize)")
        }
        return superblock
    }
}
