// StoredBlobReader: one blob's stored bytes, read front to back in chunks of at most 1 MiB and
// checksummed on the way, so checking a blob takes memory for a chunk, not for the blob. The
// blob's extent was checked against the store when its directory was parsed; nothing is
// allocated from its size here.
import BlockLayer

struct StoredBlobReader {
    static let chunkBytes = 1 << 20

    private let image: BlockImage
    private let blob: BlobRecord
    /// Stored bytes not yet read from the disk.
    private var unread: Int
    /// Bytes read and not yet handed out start at `bufferedStart`.
    private var buffered: [UInt8] = []
    private var bufferedStart = 0
    /// The CRC32C of every stored byte read so far.
    private(set) var checksum: UInt32 = 0

    init(_ blob: BlobRecord, image: BlockImage) {
        self.image = image
        self.blob = blob
        if let inline = blob.inlineBytes {
            buffered = inline
            checksum = CRC32C.checksum(inline)
            unread = 0
        } else {
            unread = Int(blob.storedByteCount)
        }
    }

    /// The next `count` stored bytes (`count` at most a chunk more than is buffered).
    mutating func next(_ count: Int) throws(StateError) -> ArraySlice<UInt8> {
        while buffered.count - bufferedStart < count && unread > 0 { try readChunk() }
        guard buffered.count - bufferedStart >= count else {
            throw StateError(.corrupt, "blob '\(blob.name)' ends \(count - (buffered.count - bufferedStart)) bytes early")
        }
        defer { bufferedStart += count }
        return buffered[bufferedStart..<bufferedStart + count]
    }

    private mutating func readChunk() throws(StateError) {
        let count = min(Self.chunkBytes, unread)
        let offset = Int64(blob.byteOffset ?? 0) + Int64(Int(blob.storedByteCount) - unread)
        let chunk = try readBytes(image, at: offset, count: count)
        checksum = chunk.withUnsafeBytes { CRC32C.checksum($0, continuing: checksum) }
        buffered.removeFirst(bufferedStart)
        bufferedStart = 0
        buffered += chunk
        unread -= count
    }
}
