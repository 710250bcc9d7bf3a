// NBDMessageDecoder: bytes from a client into frames (NBDClientMessage). First the 4-byte client
// flags, then options ("IHAVEOPT" headers) and requests (their own magic), told apart by their
// magic: which of them is allowed when is the session's business, not the framing's.
//
// Hostile input: every length is checked before anything is buffered for it. An option's data
// and a write's payload larger than the limits given here end the connection (the spec lets a
// server hard-disconnect a client that breaks a MUST or that looks like a denial of service);
// so the decoder never waits for, nor holds, more than one frame of bounded size.
//
// TLS: on a connection that offers it, the decoder frames nothing past the NBD_OPT_STARTTLS the
// server will accept until the server has put TLS in front of it (NBDTLSUpgrade).
import NIOCore

/// A client sent something that cannot be framed: the connection is closed.
public struct NBDFramingError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What was wrong, for logs.
    public var description: String
    /// A framing error, and why.
    public init(_ description: String) { self.description = description }
}

/// Splits a client's bytes into frames, bounding every length first.
public struct NBDMessageDecoder: ByteToMessageDecoder, Sendable {
    /// The frames this decoder produces.
    public typealias InboundOut = NBDClientMessage

    /// The size of a transmission request's header.
    static let requestHeaderSize = 28
    /// The size of an option's header.
    static let optionHeaderSize = 16

    private var expectingClientFlags = true
    /// The most option data accepted.
    public let maximumOptionLength: Int
    /// The most payload one NBD_CMD_WRITE may carry.
    public let maximumPayload: Int
    /// The connection's way to TLS, when it offers TLS.
    public let tlsUpgrade: NBDTLSUpgrade?

    /// A decoder for a new connection, refusing option data over `maximumOptionLength` and
    /// write payloads over `maximumPayload`; `tlsUpgrade` when the connection offers TLS.
    public init(maximumOptionLength: Int, maximumPayload: Int, tlsUpgrade: NBDTLSUpgrade? = nil) {
        self.maximumOptionLength = maximumOptionLength
        self.maximumPayload = maximumPayload
        self.tlsUpgrade = tlsUpgrade
    }

    /// The most bytes the decoder's buffer needs to hold: one frame at its largest.
    public var maximumFrameSize: Int { max(Self.optionHeaderSize + maximumOptionLength, Self.requestHeaderSize + maximumPayload) }

    /// One frame from the front of `buffer`, when all of it is there.
    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let message = try nextMessage(from: &buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(message))
        return .continue
    }

    /// At the end of input: the frames that are complete; a partial one is dropped.
    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }

    /// The frame at the front of `buffer`, consumed, or nil (nothing consumed) until it is all
    /// there. Throws for bytes that are no frame or a length over the limits.
    public mutating func nextMessage(from buffer: inout ByteBuffer) throws(NBDFramingError) -> NBDClientMessage? {
        if let tlsUpgrade, tlsUpgrade.phase == .awaitingReply || tlsUpgrade.phase == .violated {
            guard buffer.readableBytes == 0 else {
                tlsUpgrade.violatedByClient()
                throw NBDFramingError("\(buffer.readableBytes) bytes after NBD_OPT_STARTTLS, before its reply")
            }
            return nil
        }
        if expectingClientFlags {
            guard let flags = buffer.readInteger(as: UInt32.self) else { return nil }
            expectingClientFlags = false
            return .clientFlags(NBDClientFlags(rawValue: flags))
        }
        guard let magic = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        if magic == NBDMagic.request { return try nextRequest(from: &buffer) }
        if magic == UInt32(truncatingIfNeeded: NBDMagic.option >> 32) { return try nextOption(from: &buffer) }
        throw NBDFramingError("bad magic 0x\(String(magic, radix: 16)) where an option or a request begins")
    }

    private func nextRequest(from buffer: inout ByteBuffer) throws(NBDFramingError) -> NBDClientMessage? {
        let start = buffer.readerIndex
        guard buffer.readableBytes >= Self.requestHeaderSize,
              let flags = buffer.getInteger(at: start + 4, as: UInt16.self),
              let command = buffer.getInteger(at: start + 6, as: UInt16.self),
              let cookie = buffer.getInteger(at: start + 8, as: UInt64.self),
              let offset = buffer.getInteger(at: start + 16, as: UInt64.self),
              let length = buffer.getInteger(at: start + 24, as: UInt32.self) else { return nil }
        let payloadLength = command == NBDCommand.write.rawValue ? Int(length) : 0
        guard payloadLength <= maximumPayload else {
            throw NBDFramingError("a write payload of \(length) bytes, over the maximum of \(maximumPayload)")
        }
        guard buffer.readableBytes >= Self.requestHeaderSize + payloadLength else { return nil }
        buffer.moveReaderIndex(forwardBy: Self.requestHeaderSize)
        let payload = buffer.readSlice(length: payloadLength)!
        return .request(NBDRequest(flags: NBDCommandFlags(rawValue: flags), command: NBDCommand(rawValue: command),
                                   cookie: cookie, offset: offset, length: length, payload: payload))
    }

    private func nextOption(from buffer: inout ByteBuffer) throws(NBDFramingError) -> NBDClientMessage? {
        let start = buffer.readerIndex
        guard buffer.readableBytes >= Self.optionHeaderSize,
              let magic = buffer.getInteger(at: start, as: UInt64.self),
              let option = buffer.getInteger(at: start + 8, as: UInt32.self),
              let length = buffer.getInteger(at: start + 12, as: UInt32.self) else { return nil }
        guard magic == NBDMagic.option else { throw NBDFramingError("bad option magic 0x\(String(magic, radix: 16))") }
        guard Int(length) <= maximumOptionLength else {
            throw NBDFramingError("\(NBDOption(rawValue: option)) with \(length) bytes of data, over the maximum of \(maximumOptionLength)")
        }
        guard buffer.readableBytes >= Self.optionHeaderSize + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: Self.optionHeaderSize)
        let request = NBDOptionRequest(option: NBDOption(rawValue: option), data: buffer.readSlice(length: Int(length))!)
        if let tlsUpgrade, tlsUpgrade.accepts(request) { tlsUpgrade.startTLSFramed() }
        return .option(request)
    }
}
