// libFuzzer target: an input is what an NBD client sends after the server's greeting — its
// flags, then options and requests. The decoder must frame each or refuse the input, never trap,
// never consume nothing and call it a frame, never take a frame past its limits; option data
// must parse or be refused as malformed.
import FuzzSupport
import NBD
import NIOCore

let maximumOptionLength = 64 << 10
let maximumPayload = 32 << 20

runFuzzer { data, size in
    guard let data else { return 0 }
    var buffer = ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: size))
    var decoder = NBDMessageDecoder(maximumOptionLength: maximumOptionLength, maximumPayload: maximumPayload)
    while true {
        let before = buffer.readableBytes
        // nil: the rest is a partial frame; a throw: the connection would be closed.
        guard let message = try? decoder.nextMessage(from: &buffer) else { break }
        precondition(buffer.readableBytes < before, "a frame that consumed nothing")
        switch message {
        case .clientFlags:
            break
        case .option(let option):
            precondition(option.data.readableBytes <= maximumOptionLength)
            if let info = try? NBDExportInfoRequest(parsing: option.data) {
                precondition(info.exportName.utf8.count + 2 * info.items.count + 6 <= option.data.readableBytes)
            }
            if let meta = try? NBDMetaContextRequest(parsing: option.data) {
                precondition(meta.queries.count <= option.data.readableBytes / 4)
            }
        case .request(let request):
            precondition(request.payload.readableBytes <= maximumPayload)
            precondition(request.command != .write || request.payload.readableBytes == Int(request.length))
        }
    }
    return 0
}
