// CompressedCluster: one cluster made ready for a compressed write (QEMU's
// bdrv_co_pwritev_compressed, split in two): compressing needs no lock and runs on any thread,
// so a copy compresses many clusters at once and stores them in order.
public struct CompressedCluster: Sendable {
    /// Where the cluster starts in the image.
    public let byteOffset: Int64
    public let payload: Payload

    public enum Payload: Sendable {
        /// The compressed stream.
        case compressed([UInt8])
        /// The bytes as they are, since they would not shrink (QEMU stores those uncompressed).
        case uncompressed([UInt8])
    }

    public init(byteOffset: Int64, payload: Payload) {
        self.byteOffset = byteOffset
        self.payload = payload
    }
}
