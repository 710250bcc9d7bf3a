// libFuzzer target: NBD negotiation as a connection runs it — the decoder, then NBDNegotiation
// for each frame — without a socket. The first byte of an input chooses the server: TLS required
// or not, one export or two, read-only, and whether the client breaks the rule of sending nothing
// after NBD_OPT_STARTTLS before its reply. The rest is what the client sends after the greeting;
// when the negotiation accepts STARTTLS, what follows stands for what comes through TLS.
// Each option's replies are parsed back and held to the spec:
//   - every reply is framed (magic, the option it answers, its length) and the replies to an
//     option end in one ACK or error; NBD_OPT_EXPORT_NAME's reply is the export's size and flags;
//   - a server requiring TLS answers every option but STARTTLS and ABORT before TLS with
//     NBD_REP_ERR_TLS_REQD, and NBD_OPT_EXPORT_NAME with a close; after TLS, and without TLS
//     required, never;
//   - the decoder stops at exactly the STARTTLS the negotiation accepts, which it accepts once;
//     a byte before its reply is refused;
//   - transmission starts only on an export that exists, with meta contexts only after
//     structured replies, and none of those from before TLS.
import BlockLayer
import FuzzSupport
import Glibc
import NBD
import NIOCore
import BlockServe

/// A 1 MiB raw image in a folder of its own, opened once for every input.
let image: BlockImage = {
    let scratch = ScratchImage()
    [UInt8](repeating: 0, count: 512).withUnsafeBytes { scratch.replace(with: $0, minimumLength: 1 << 20) }
    return try! BlockImage.open(scratch.path, options: OpenOptions(format: "raw", writable: true, locking: .off, lease: .none))
}()
let exportSets: [[NBDExport]] = [
    [NBDExport(name: "", image: image)],
    [NBDExport(name: "vm", image: image), NBDExport(name: "spare", image: image)],
]
let allocator = ByteBufferAllocator()

/// The replies to one option, parsed; the type of the last.
func checkReplies(_ replies: ByteBuffer, to option: NBDOption) -> NBDOptionReplyType {
    var replies = replies
    var last: NBDOptionReplyType?
    while replies.readableBytes > 0 {
        precondition(last == nil || last == .server || last == .info || last == .metaContext, "a reply after the last")
        guard let magic = replies.readInteger(as: UInt64.self), let answered = replies.readInteger(as: UInt32.self),
              let type = replies.readInteger(as: UInt32.self), let length = replies.readInteger(as: UInt32.self) else {
            preconditionFailure("a truncated reply header")
        }
        precondition(magic == NBDMagic.optionReply && answered == option.rawValue, "a reply that answers another option")
        precondition(replies.readSlice(length: Int(length)) != nil, "a reply shorter than its length")
        last = NBDOptionReplyType(rawValue: type)
    }
    guard let last, last == .ack || last.rawValue >= 1 << 31 else { preconditionFailure("\(option)'s replies do not end") }
    return last
}

runFuzzer { data, size in
    guard let data, size > 0 else { return 0 }
    let mode = data[0]
    let tlsRequired = mode & 1 != 0, exports = exportSets[Int(mode >> 1 & 1)], sendsBeforeReply = mode & 4 != 0
    var buffer = ByteBuffer(bytes: UnsafeBufferPointer(start: data + 1, count: size - 1))
    let upgrade = tlsRequired ? NBDTLSUpgrade() : nil
    var decoder = NBDMessageDecoder(maximumOptionLength: 64 << 10, maximumPayload: 32 << 20, tlsUpgrade: upgrade)
    var negotiation = NBDNegotiation(exports: exports, allocator: allocator, tlsRequired: tlsRequired)
    var structuredSinceTLS = false
    while true {
        guard let message = try? decoder.nextMessage(from: &buffer) else { break }
        switch message {
        case .clientFlags(let flags):
            if case .close = negotiation.receive(flags) { return 0 }
        case .request:
            return 0 // the connection closes a request during negotiation
        case .option(let option):
            let stoppedAtStartTLS = upgrade?.phase == .awaitingReply
            if stoppedAtStartTLS && sendsBeforeReply && buffer.readableBytes > 0 {
                precondition((try? decoder.nextMessage(from: &buffer)) == nil && upgrade?.phase == .violated,
                             "bytes before STARTTLS's reply were taken")
                return 0
            }
            let tlsBefore = upgrade?.phase == .encrypted
            let (replies, outcome) = negotiation.receive(option)
            if option.option == .structuredReply && option.data.readableBytes == 0 { structuredSinceTLS = true }
            switch outcome {
            case .startTLS:
                precondition(stoppedAtStartTLS && checkReplies(replies, to: option.option) == .ack, "STARTTLS accepted, the decoder not stopped")
                precondition(upgrade!.encrypt(), "STARTTLS accepted twice")
                structuredSinceTLS = false
                continue
            case .close:
                precondition(!stoppedAtStartTLS, "STARTTLS the decoder stopped at was not accepted")
                if option.option == .exportName || option.option == .abort { return 0 }
                preconditionFailure("\(option.option) closed the connection")
            case .transmission(let session):
                precondition(!stoppedAtStartTLS, "STARTTLS the decoder stopped at was not accepted")
                precondition(!tlsRequired || tlsBefore, "transmission before TLS")
                precondition(exports.contains { $0 === session.export }, "an export that does not exist")
                precondition(session.metaContexts.isEmpty || (session.structuredReplies && structuredSinceTLS), "contexts without structured replies")
                if option.option == .exportName {
                    precondition(replies.readableBytes == 10 || replies.readableBytes == 134, "NBD_OPT_EXPORT_NAME's reply")
                } else {
                    precondition(option.option == .go && checkReplies(replies, to: option.option) == .ack, "\(option.option) started transmission")
                }
                return 0
            case .negotiating:
                precondition(!stoppedAtStartTLS, "STARTTLS the decoder stopped at was not accepted")
                let last = checkReplies(replies, to: option.option)
                let refusedForTLS = last == .errorTLSRequired
                let mustRefuse = tlsRequired && !tlsBefore && option.option != .startTLS && option.option != .abort
                precondition(refusedForTLS == mustRefuse, "\(option.option): TLS_REQD \(refusedForTLS), TLS required and not started \(mustRefuse)")
            }
        }
    }
    return 0
}
