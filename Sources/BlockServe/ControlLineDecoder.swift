// ControlLineDecoder: the control socket's framing — one request a line, each at most
// `maximumLength` bytes. A longer line is not buffered: its bytes are dropped as they come, up
// to its newline, and it yields `.overlong` once, which the socket answers with an error before
// going on with the next line. Memory is bounded by the limit, whatever a client sends.
import NIOCore

/// A line of the control protocol, or the note that one was too long to take.
enum ControlLine: Sendable {
    /// A line's bytes, without its newline.
    case request(ByteBuffer)
    /// A line over the limit, dropped.
    case overlong
}

/// Splits the control socket's input into lines.
struct ControlLineDecoder: ByteToMessageDecoder {
    typealias InboundOut = ControlLine

    /// The longest line taken, without its newline.
    let maximumLength: Int
    /// The rest of an over-long line is being dropped, up to its newline.
    private var dropping = false

    init(maximumLength: Int) {
        self.maximumLength = maximumLength
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let bytes = buffer.readableBytesView
        guard let newline = bytes.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > maximumLength {
                buffer.moveReaderIndex(to: buffer.writerIndex)
                if !dropping { context.fireChannelRead(wrapInboundOut(.overlong)) }
                dropping = true
            }
            return .needMoreData
        }
        let length = bytes.distance(from: bytes.startIndex, to: newline)
        let line = buffer.readSlice(length: length)!
        buffer.moveReaderIndex(forwardBy: 1)
        if dropping {
            dropping = false
        } else {
            context.fireChannelRead(wrapInboundOut(length > maximumLength ? .overlong : .request(line)))
        }
        return .continue
    }

    /// A last line without its newline counts as a line.
    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        if buffer.readableBytes > 0 && !dropping {
            context.fireChannelRead(wrapInboundOut(.request(buffer.readSlice(length: buffer.readableBytes)!)))
        }
        return .needMoreData
    }
}
