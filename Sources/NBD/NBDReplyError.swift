// NBDReplyError: whether a reply the server made reports an error, read back from its first
// header — for a server's statistics and logs, which see replies only as bytes.
import NIOCore

extension ByteBuffer {
    /// Whether the reply at the reader index is an error: a simple reply with a non-zero error,
    /// or a structured reply whose first chunk is an error chunk (the type's bit 15). A server
    /// that makes each reply whole before sending it answers a failed request with that chunk
    /// alone. False for bytes that are neither.
    public var nbdReplyReportsError: Bool {
        switch getInteger(at: readerIndex, as: UInt32.self) {
        case NBDMagic.simpleReply:
            return (getInteger(at: readerIndex + 4, as: UInt32.self) ?? 0) != 0
        case NBDMagic.structuredReply:
            return (getInteger(at: readerIndex + 6, as: UInt16.self) ?? 0) & 1 << 15 != 0
        default:
            return false
        }
    }
}
