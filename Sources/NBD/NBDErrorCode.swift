// NBDErrorCode: the error values a reply may carry. The protocol fixes them (errno's usual
// numbers on Linux), whatever the server's own errno is.

/// An error value of a simple reply or an error chunk.
public struct NBDErrorCode: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The value as sent.
    public let rawValue: UInt32
    /// An error value from its number.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Operation not permitted: a write to a read-only export.
    public static let permission = NBDErrorCode(rawValue: 1)
    /// Input/output error.
    public static let io = NBDErrorCode(rawValue: 5)
    /// Cannot allocate memory.
    public static let noMemory = NBDErrorCode(rawValue: 12)
    /// Invalid argument: malformed, unaligned or out of range, an unknown command or flag.
    public static let invalid = NBDErrorCode(rawValue: 22)
    /// No space left on device, or a write past the end of the export.
    public static let noSpace = NBDErrorCode(rawValue: 28)
    /// Value too large: a length over what the server handles in one request.
    public static let overflow = NBDErrorCode(rawValue: 75)
    /// Operation not supported (NBD_CMD_FLAG_FAST_ZERO that would be slow).
    public static let notSupported = NBDErrorCode(rawValue: 95)
    /// The server is shutting down.
    public static let shutdown = NBDErrorCode(rawValue: 108)

    /// The errno name, for logs.
    public var description: String {
        switch rawValue {
        case 1: "EPERM"
        case 5: "EIO"
        case 12: "ENOMEM"
        case 22: "EINVAL"
        case 28: "ENOSPC"
        case 75: "EOVERFLOW"
        case 95: "ENOTSUP"
        case 108: "ESHUTDOWN"
        default: "error \(rawValue)"
        }
    }
}
