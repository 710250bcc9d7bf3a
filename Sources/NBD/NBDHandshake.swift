// NBDHandshake: the first step of a session — the server's greeting and the client's flags.
// Only fixed newstyle is spoken: the greeting offers options, and oldstyle clients are not served.
import NIOCore

/// The flags of the server's greeting (16 bits).
public struct NBDHandshakeFlags: OptionSet, Sendable, Hashable {
    /// The bits as sent.
    public let rawValue: UInt16
    /// Flags from their bits.
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// The server speaks fixed newstyle: unknown options get an error reply, not a disconnect.
    public static let fixedNewstyle = NBDHandshakeFlags(rawValue: 1 << 0)
    /// The client may ask to leave out the 124 zero bytes after NBD_OPT_EXPORT_NAME's reply.
    public static let noZeroes = NBDHandshakeFlags(rawValue: 1 << 1)
}

/// The flags the client answers the greeting with (32 bits).
public struct NBDClientFlags: OptionSet, Sendable, Hashable {
    /// The bits as received.
    public let rawValue: UInt32
    /// Flags from their bits.
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The client speaks fixed newstyle.
    public static let fixedNewstyle = NBDClientFlags(rawValue: 1 << 0)
    /// The client does not want the zero padding after NBD_OPT_EXPORT_NAME's reply.
    public static let noZeroes = NBDClientFlags(rawValue: 1 << 1)
    /// Every bit this server understands; a client setting another must be disconnected.
    public static let known: NBDClientFlags = [.fixedNewstyle, .noZeroes]
}

/// The handshake's server side on the wire.
public enum NBDHandshake {
    /// The flags this server greets with.
    public static let serverFlags: NBDHandshakeFlags = [.fixedNewstyle, .noZeroes]

    /// The greeting: "NBDMAGIC", "IHAVEOPT" and the handshake flags.
    public static func greeting(allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 18)
        buffer.writeInteger(NBDMagic.server)
        buffer.writeInteger(NBDMagic.option)
        buffer.writeInteger(serverFlags.rawValue)
        return buffer
    }

    /// The end of NBD_OPT_EXPORT_NAME: the export's size and transmission flags, then 124 zero
    /// bytes unless the client asked for none.
    public static func exportNameReply(size: UInt64, flags: NBDTransmissionFlags, zeroPadding: Bool,
                                       allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 134)
        buffer.writeInteger(size)
        buffer.writeInteger(flags.rawValue)
        if zeroPadding { buffer.writeRepeatingByte(0, count: 124) }
        return buffer
    }
}
