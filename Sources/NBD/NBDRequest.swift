// NBDRequest: a transmission request — its header (magic, flags, type, cookie, offset,
// length) and, for NBD_CMD_WRITE only, its payload.
import NIOCore

/// The command of a request.
public struct NBDCommand: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The command's number as sent.
    public let rawValue: UInt16
    /// A command from its number.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Read `length` bytes at `offset`.
    public static let read = NBDCommand(rawValue: 0)
    /// Write the payload at `offset`.
    public static let write = NBDCommand(rawValue: 1)
    /// Disconnect once the requests under way are answered.
    public static let disconnect = NBDCommand(rawValue: 2)
    /// Make completed writes durable.
    public static let flush = NBDCommand(rawValue: 3)
    /// The range's contents are no longer needed.
    public static let trim = NBDCommand(rawValue: 4)
    /// Read the range ahead, into the server's caches.
    public static let cache = NBDCommand(rawValue: 5)
    /// Make the range read as zeroes.
    public static let writeZeroes = NBDCommand(rawValue: 6)
    /// What the range is, in the selected metadata contexts.
    public static let blockStatus = NBDCommand(rawValue: 7)

    /// The spec's name, for logs.
    public var description: String {
        switch rawValue {
        case 0: "NBD_CMD_READ"
        case 1: "NBD_CMD_WRITE"
        case 2: "NBD_CMD_DISC"
        case 3: "NBD_CMD_FLUSH"
        case 4: "NBD_CMD_TRIM"
        case 5: "NBD_CMD_CACHE"
        case 6: "NBD_CMD_WRITE_ZEROES"
        case 7: "NBD_CMD_BLOCK_STATUS"
        default: "command \(rawValue)"
        }
    }
}

/// The flags of a request (16 bits).
public struct NBDCommandFlags: OptionSet, Sendable, Hashable {
    /// The bits as sent.
    public let rawValue: UInt16
    /// Flags from their bits.
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// Durable before the reply (force unit access).
    public static let fua = NBDCommandFlags(rawValue: 1 << 0)
    /// NBD_CMD_WRITE_ZEROES: keep the range allocated.
    public static let noHole = NBDCommandFlags(rawValue: 1 << 1)
    /// NBD_CMD_READ: one content chunk.
    public static let dontFragment = NBDCommandFlags(rawValue: 1 << 2)
    /// NBD_CMD_BLOCK_STATUS: one descriptor per context.
    public static let requestOne = NBDCommandFlags(rawValue: 1 << 3)
    /// NBD_CMD_WRITE_ZEROES: fail with ENOTSUP rather than be slow.
    public static let fastZero = NBDCommandFlags(rawValue: 1 << 4)
}

/// One transmission request as received.
public struct NBDRequest: Sendable, Hashable {
    /// The request's flags.
    public var flags: NBDCommandFlags
    /// The command.
    public var command: NBDCommand
    /// The client's cookie (handle), returned in the reply unchanged.
    public var cookie: UInt64
    /// The first byte of the range.
    public var offset: UInt64
    /// The range's length (for NBD_CMD_WRITE, the payload's).
    public var length: UInt32
    /// NBD_CMD_WRITE's bytes; empty for the other commands.
    public var payload: ByteBuffer

    /// A request from its fields.
    public init(flags: NBDCommandFlags, command: NBDCommand, cookie: UInt64, offset: UInt64, length: UInt32, payload: ByteBuffer) {
        self.flags = flags
        self.command = command
        self.cookie = cookie
        self.offset = offset
        self.length = length
        self.payload = payload
    }
}
