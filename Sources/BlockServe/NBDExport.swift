// NBDExport: one image served under a name — what negotiation tells a client about it (size,
// transmission flags, block sizes, metadata contexts). The commands are in ExportCommands.swift.
import BlockLayer
import NBD
import Synchronization

/// An open image served under a name.
public final class NBDExport: Sendable {
    /// The name clients ask for; empty for the default export.
    public let name: String
    /// The image every connection to this export shares. A hand-over's activation may replace
    /// it with a fresh open of the same file (ExportHandOver.swift).
    public var image: BlockImage { current.withLock { $0 } }
    let current: Mutex<BlockImage>
    /// The lease's loss has been logged (ExportLeaseLoss.swift): once per export.
    let leaseLossLogged = Atomic<Bool>(false)
    /// The least a request's offset and length must be multiples of.
    public let minimumBlockSize: UInt32
    /// The size requests are efficient at: the format's cluster, or 4 KiB.
    public let preferredBlockSize: UInt32
    /// The most one request carries: payload of a write, data of a read.
    public var maximumPayload: UInt32 { Self.payloadLimit }

    /// What trims do, and whether zeroing may deallocate.
    public let discard: DiscardMode
    /// Whether writes of zeroes become write-zeroes.
    public let detectZeroes: DetectZeroesMode

    /// The largest payload this server takes in one request, 32 MiB: the size the spec asks
    /// every peer to accept without calling it a denial of service.
    public static let payloadLimit: UInt32 = 32 << 20

    /// An export of `image` named `name`. The block sizes come from the image: a minimum of 512
    /// when it bypasses the page cache (O_DIRECT), else 1; the qcow2 cluster size preferred.
    public init(name: String, image: BlockImage, discard: DiscardMode = .ignore, detectZeroes: DetectZeroesMode = .off) {
        self.name = name
        current = Mutex(image)
        self.discard = discard
        self.detectZeroes = detectZeroes
        minimumBlockSize = image.options.cache == .none ? 512 : 1
        let cluster = image.clusterBytes.map(UInt32.init) ?? 4096
        preferredBlockSize = max(4096, cluster)
    }

    /// Whether writes are refused.
    public var isReadOnly: Bool { !image.isWritable }

    /// The transmission flags: what this export does, and nothing else, for a client that has
    /// negotiated `structuredReplies` or not. Not advertised: ROTATIONAL, RESIZE; on a read-only
    /// export, TRIM, WRITE_ZEROES and FAST_ZERO (as qemu-nbd -r: the commands would only get EPERM).
    ///
    /// DF only with structured replies, where it means anything: a read then comes in one data
    /// chunk. FAST_ZERO: a write-zeroes that would write zeroes is refused with ENOTSUP; the
    /// driver table says which would (BlockDriver.writeZeroesWithoutFallback).
    ///
    /// CAN_MULTI_CONN: every connection to the export shares this one `image`, so they see one
    /// another's writes at once, and a flush goes to `BlockImage.flush()`, which writes back the
    /// format's metadata cached for all of them and then fdatasyncs the whole file: a flush
    /// on any connection makes every connection's completed writes durable, as the flag promises.
    public func transmissionFlags(structuredReplies: Bool) -> NBDTransmissionFlags {
        var flags: NBDTransmissionFlags = [.hasFlags, .sendFlush, .sendFUA, .sendCache, .canMultiConn]
        if structuredReplies { flags.insert(.sendDF) }
        if isReadOnly {
            flags.insert(.readOnly)
        } else {
            flags.formUnion([.sendTrim, .sendWriteZeroes, .sendFastZero])
        }
        return flags
    }

    /// The export's size in bytes.
    public func size() throws(BlockError) -> UInt64 { UInt64(try image.length()) }
}
