// NBDReply: replies in transmission — simple replies (magic, error, cookie, then a read's data)
// and the chunks of structured replies (magic, flags, type, cookie, length, then the chunk's
// own fields), with the chunk types and the block status flags of the contexts served.
import NIOCore

/// The type of a structured reply chunk.
public struct NBDReplyType: RawRepresentable, Sendable, Hashable {
    /// The type as sent.
    public let rawValue: UInt16
    /// A chunk type from its number.
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// No content: only ends a reply.
    public static let none = NBDReplyType(rawValue: 0)
    /// Data at an offset.
    public static let offsetData = NBDReplyType(rawValue: 1)
    /// A run of zeroes at an offset, without its bytes.
    public static let offsetHole = NBDReplyType(rawValue: 2)
    /// Block status descriptors of one metadata context.
    public static let blockStatus = NBDReplyType(rawValue: 5)
    /// An error for the whole request.
    public static let error = NBDReplyType(rawValue: 1 << 15 | 1)
}

/// The flags of a structured reply chunk.
public struct NBDReplyFlags: OptionSet, Sendable, Hashable {
    /// The bits as sent.
    public let rawValue: UInt16
    /// Flags from their bits.
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// The last chunk of the reply.
    public static let done = NBDReplyFlags(rawValue: 1 << 0)
}

/// The status bits of the `base:allocation` metadata context.
public struct NBDAllocationStatus: OptionSet, Sendable, Hashable {
    /// The bits as sent.
    public let rawValue: UInt32
    /// Status from its bits.
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Not allocated: the range takes no storage.
    public static let hole = NBDAllocationStatus(rawValue: 1 << 0)
    /// The range reads as zeroes.
    public static let zero = NBDAllocationStatus(rawValue: 1 << 1)
}

extension ByteBuffer {
    /// The size of a simple reply's header.
    public static let nbdSimpleReplyHeaderSize = 16
    /// The size of a structured reply chunk's header.
    public static let nbdStructuredReplyHeaderSize = 20

    /// Appends a simple reply's header; a successful read's data follows it.
    public mutating func writeSimpleReply(cookie: UInt64, error: NBDErrorCode?) {
        writeInteger(NBDMagic.simpleReply)
        writeInteger(error?.rawValue ?? 0)
        writeInteger(cookie)
    }

    /// Appends a structured chunk's header, for `length` bytes of chunk fields that follow it.
    public mutating func writeChunkHeader(cookie: UInt64, type: NBDReplyType, flags: NBDReplyFlags, length: Int) {
        writeInteger(NBDMagic.structuredReply)
        writeInteger(flags.rawValue)
        writeInteger(type.rawValue)
        writeInteger(cookie)
        writeInteger(UInt32(length))
    }

    /// Appends an NBD_REPLY_TYPE_OFFSET_HOLE chunk.
    public mutating func writeHoleChunk(cookie: UInt64, offset: UInt64, length: UInt32, flags: NBDReplyFlags = []) {
        writeChunkHeader(cookie: cookie, type: .offsetHole, flags: flags, length: 12)
        writeInteger(offset)
        writeInteger(length)
    }

    /// Appends an NBD_REPLY_TYPE_ERROR chunk that ends the reply, with a message for people.
    public mutating func writeErrorChunk(cookie: UInt64, error: NBDErrorCode, message: String) {
        let text = Array(message.utf8.prefix(4096))
        writeChunkHeader(cookie: cookie, type: .error, flags: .done, length: 6 + text.count)
        writeInteger(error.rawValue)
        writeInteger(UInt16(text.count))
        writeBytes(text)
    }

    /// Appends the NBD_REPLY_TYPE_NONE chunk that ends a reply.
    public mutating func writeDoneChunk(cookie: UInt64) {
        writeChunkHeader(cookie: cookie, type: .none, flags: .done, length: 0)
    }
}
