// NBDOption: option haggling on the wire — the options a client sends after the handshake, the
// reply types a server answers each with, and the information items of NBD_OPT_INFO and GO.
import NIOCore

/// An option a client sends during negotiation.
public struct NBDOption: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    /// The option's number as sent.
    public let rawValue: UInt32
    /// An option from its number.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Choose an export and start transmission, with no way to report an error.
    public static let exportName = NBDOption(rawValue: 1)
    /// End negotiation.
    public static let abort = NBDOption(rawValue: 2)
    /// List the exports.
    public static let list = NBDOption(rawValue: 3)
    /// Upgrade the connection to TLS.
    public static let startTLS = NBDOption(rawValue: 5)
    /// Describe an export.
    public static let info = NBDOption(rawValue: 6)
    /// Describe an export and start transmission.
    public static let go = NBDOption(rawValue: 7)
    /// Use structured replies in transmission.
    public static let structuredReply = NBDOption(rawValue: 8)
    /// List the metadata contexts a query matches.
    public static let listMetaContext = NBDOption(rawValue: 9)
    /// Select the metadata contexts NBD_CMD_BLOCK_STATUS reports.
    public static let setMetaContext = NBDOption(rawValue: 10)
    /// 64-bit request and reply headers.
    public static let extendedHeaders = NBDOption(rawValue: 11)

    /// The spec's name, for logs.
    public var description: String {
        switch rawValue {
        case 1: "NBD_OPT_EXPORT_NAME"
        case 2: "NBD_OPT_ABORT"
        case 3: "NBD_OPT_LIST"
        case 5: "NBD_OPT_STARTTLS"
        case 6: "NBD_OPT_INFO"
        case 7: "NBD_OPT_GO"
        case 8: "NBD_OPT_STRUCTURED_REPLY"
        case 9: "NBD_OPT_LIST_META_CONTEXT"
        case 10: "NBD_OPT_SET_META_CONTEXT"
        case 11: "NBD_OPT_EXTENDED_HEADERS"
        default: "option \(rawValue)"
        }
    }
}

/// The type of a reply to an option; the error types have bit 31 set.
public struct NBDOptionReplyType: RawRepresentable, Sendable, Hashable {
    /// The type as sent.
    public let rawValue: UInt32
    /// A reply type from its number.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// The option succeeded (and ends a list of other replies).
    public static let ack = NBDOptionReplyType(rawValue: 1)
    /// One export of NBD_OPT_LIST.
    public static let server = NBDOptionReplyType(rawValue: 2)
    /// One information item of NBD_OPT_INFO or GO.
    public static let info = NBDOptionReplyType(rawValue: 3)
    /// One metadata context.
    public static let metaContext = NBDOptionReplyType(rawValue: 4)
    /// The option is not supported.
    public static let errorUnsupported = NBDOptionReplyType(rawValue: 1 << 31 | 1)
    /// The option is refused by policy.
    public static let errorPolicy = NBDOptionReplyType(rawValue: 1 << 31 | 2)
    /// The option's data is malformed, or the option is not valid now.
    public static let errorInvalid = NBDOptionReplyType(rawValue: 1 << 31 | 3)
    /// The server could not do what was asked, through no fault of the request.
    public static let errorPlatform = NBDOptionReplyType(rawValue: 1 << 31 | 4)
    /// The server answers nothing but NBD_OPT_STARTTLS and NBD_OPT_ABORT before TLS.
    public static let errorTLSRequired = NBDOptionReplyType(rawValue: 1 << 31 | 5)
    /// The export does not exist.
    public static let errorUnknown = NBDOptionReplyType(rawValue: 1 << 31 | 6)
    /// The server is shutting down.
    public static let errorShutdown = NBDOptionReplyType(rawValue: 1 << 31 | 7)
    /// The request or its reply is too large.
    public static let errorTooBig = NBDOptionReplyType(rawValue: 1 << 31 | 9)
}

/// An information item of NBD_OPT_INFO and NBD_OPT_GO.
public struct NBDInfoType: RawRepresentable, Sendable, Hashable {
    /// The item's number as sent.
    public let rawValue: UInt16
    /// An item from its number.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// The export's size and transmission flags: always sent.
    public static let export = NBDInfoType(rawValue: 0)
    /// The export's canonical name.
    public static let name = NBDInfoType(rawValue: 1)
    /// A description for people.
    public static let description = NBDInfoType(rawValue: 2)
    /// The minimum, preferred and maximum block sizes.
    public static let blockSize = NBDInfoType(rawValue: 3)
}

/// One option as the client sent it: its number and its data.
public struct NBDOptionRequest: Sendable, Hashable {
    /// Which option.
    public var option: NBDOption
    /// The option's data, exactly as long as its header said.
    public var data: ByteBuffer

    /// An option with its data.
    public init(option: NBDOption, data: ByteBuffer) {
        self.option = option
        self.data = data
    }
}

extension ByteBuffer {
    /// Appends a reply to `option`: the reply magic, the option, the reply type, and `data`
    /// with its length before it.
    public mutating func writeOptionReply(to option: NBDOption, _ type: NBDOptionReplyType, data: ByteBuffer? = nil) {
        writeInteger(NBDMagic.optionReply)
        writeInteger(option.rawValue)
        writeInteger(type.rawValue)
        writeInteger(UInt32(data?.readableBytes ?? 0))
        if let data { writeImmutableBuffer(data) }
    }
}
