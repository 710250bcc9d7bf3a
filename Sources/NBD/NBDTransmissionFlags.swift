// NBDTransmissionFlags: what an export says it can do, sent with NBD_INFO_EXPORT or after
// NBD_OPT_EXPORT_NAME. A client relies on each bit, so a server sets only what is true.

/// The transmission flags of an export (16 bits).
public struct NBDTransmissionFlags: OptionSet, Sendable, Hashable {
    /// The bits as sent.
    public let rawValue: UInt16
    /// Flags from their bits.
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// Always set: the other bits mean something.
    public static let hasFlags = NBDTransmissionFlags(rawValue: 1 << 0)
    /// Writes, trims and write-zeroes are refused.
    public static let readOnly = NBDTransmissionFlags(rawValue: 1 << 1)
    /// NBD_CMD_FLUSH is understood.
    public static let sendFlush = NBDTransmissionFlags(rawValue: 1 << 2)
    /// NBD_CMD_FLAG_FUA is understood.
    public static let sendFUA = NBDTransmissionFlags(rawValue: 1 << 3)
    /// The storage is rotational (seek costs).
    public static let rotational = NBDTransmissionFlags(rawValue: 1 << 4)
    /// NBD_CMD_TRIM is understood.
    public static let sendTrim = NBDTransmissionFlags(rawValue: 1 << 5)
    /// NBD_CMD_WRITE_ZEROES is understood.
    public static let sendWriteZeroes = NBDTransmissionFlags(rawValue: 1 << 6)
    /// NBD_CMD_FLAG_DF is understood.
    public static let sendDF = NBDTransmissionFlags(rawValue: 1 << 7)
    /// A flush on one connection makes every connection's completed writes durable, and all
    /// connections see one another's writes.
    public static let canMultiConn = NBDTransmissionFlags(rawValue: 1 << 8)
    /// NBD_CMD_CACHE is understood.
    public static let sendCache = NBDTransmissionFlags(rawValue: 1 << 10)
    /// NBD_CMD_FLAG_FAST_ZERO is understood.
    public static let sendFastZero = NBDTransmissionFlags(rawValue: 1 << 11)
}
