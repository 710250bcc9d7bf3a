// CompressedCluster: one cluster made ready for a compressed write (QEMU's
// bdrv_co_pwritev_compressed, split in two): compressing needs no lock and runs on any thread,
// so a copy compresses many clusters at once and stores them in order.
/// One cluster compressed ahead of its write, so compressing runs in parallel and only the
/// store is serialised.
public struct CompressedCluster: Sendable {
    /// Where the cluster starts in the image.
    public let byteOffset: Int64
    /// What is stored: compressed, or as it is when compression would not shrink it.
    public let payload: Payload

    /// The two ways a cluster is stored by a compressed write.
    public enum Payload: Sendable {
        /// The compressed stream.
        case compressed([UInt8])
        /// The bytes as they are, since they would not shrink (QEMU stores those uncompressed).
        case uncompressed([UInt8])
    }

    /// A cluster made by a driver's `compressCluster`; only that driver knows how to store it.
    public init(byteOffset: Int64, payload: Payload) {
        self.byteOffset = byteOffset
        self.payload = payload
    }
}
