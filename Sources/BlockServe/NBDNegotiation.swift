// NBDNegotiation: option haggling, fixed newstyle. Each option gets its replies here, as bytes,
// and the outcome: go on negotiating, start transmission, or close. No I/O of its own beyond
// asking an export its size, so the rules of the spec are all in one place:
//   - an unknown option gets NBD_REP_ERR_UNSUP, malformed data NBD_REP_ERR_INVALID, an unknown
//     export NBD_REP_ERR_UNKNOWN (or, after NBD_OPT_EXPORT_NAME, which cannot say so, a close);
//   - TLS, when the server has credentials, is required (the spec's FORCEDTLS, as qemu-nbd
//     with --tls-creds): before NBD_OPT_STARTTLS every option but NBD_OPT_ABORT gets
//     NBD_REP_ERR_TLS_REQD, and NBD_OPT_EXPORT_NAME, which cannot be refused, a close; the
//     STARTTLS accepted restarts the option state; a second one is NBD_REP_ERR_INVALID. Without
//     credentials STARTTLS gets NBD_REP_ERR_POLICY;
//   - the meta-context options need structured replies first, and a selection counts only for
//     the export it named.
import NBD
import NIOCore

/// The negotiation of one connection.
public struct NBDNegotiation {
    /// What to do after an option.
    public enum Outcome {
        /// Wait for the next option.
        case negotiating
        /// Send the replies in plain text, then start TLS: what follows comes through it.
        case startTLS
        /// Negotiation is over: serve requests.
        case transmission(NBDSession)
        /// End the connection (after sending the replies).
        case close(String)
    }

    private let exports: [NBDExport]
    private let allocator: ByteBufferAllocator
    /// The server has credentials: nothing but STARTTLS and ABORT before TLS.
    private let tlsRequired: Bool
    /// NBD_OPT_STARTTLS was accepted: the options since came through TLS.
    private var tlsStarted = false
    private var clientFlags: NBDClientFlags = []
    private var structuredReplies = false
    /// The last NBD_OPT_SET_META_CONTEXT's export and selection.
    private var selection: (exportName: String, contexts: [NBDMetaContext])?

    /// A negotiation offering `exports`, only through TLS when `tlsRequired`.
    public init(exports: [NBDExport], allocator: ByteBufferAllocator, tlsRequired: Bool = false) {
        self.exports = exports
        self.allocator = allocator
        self.tlsRequired = tlsRequired
    }

    /// Takes the client's flags; a flag this server does not know ends the session, as the spec
    /// asks.
    public mutating func receive(_ flags: NBDClientFlags) -> Outcome {
        guard NBDClientFlags.known.isSuperset(of: flags) else {
            return .close("unknown client flags 0x\(String(flags.rawValue, radix: 16))")
        }
        // The spec allows TLS only in fixed newstyle, and a server that requires it serves nothing else.
        guard !tlsRequired || flags.contains(.fixedNewstyle) else {
            return .close("TLS is required, and the client does not speak fixed newstyle")
        }
        clientFlags = flags
        return .negotiating
    }

    /// The replies to `request` and what follows it.
    public mutating func receive(_ request: NBDOptionRequest) -> (replies: ByteBuffer, outcome: Outcome) {
        var replies = allocator.buffer(capacity: 64)
        let option = request.option
        func refuse(_ type: NBDOptionReplyType, _ message: String) {
            replies.writeOptionReply(to: option, type, data: allocator.buffer(string: message))
        }
        /// The option's data and the export it names, or nil with the refusal written.
        func parsed<Asked: NBDExportOptionData>(_: Asked.Type) -> (asked: Asked, export: NBDExport)? {
            let asked: Asked
            do {
                asked = try Asked(parsing: request.data)
            } catch {
                refuse(.errorInvalid, error.reason)
                return nil
            }
            guard let export = exports.first(where: { $0.name == asked.exportName }) else {
                refuse(.errorUnknown, "no export named '\(asked.exportName)'")
                return nil
            }
            return (asked, export)
        }
        if tlsRequired && !tlsStarted {
            switch option {
            case .startTLS:
                guard request.data.readableBytes == 0 else {
                    refuse(.errorInvalid, "NBD_OPT_STARTTLS takes no data")
                    return (replies, .negotiating)
                }
                replies.writeOptionReply(to: option, .ack)
                // The spec: nothing negotiated before STARTTLS survives it.
                structuredReplies = false
                selection = nil
                tlsStarted = true
                return (replies, .startTLS)
            case .exportName:
                return (replies, .close("NBD_OPT_EXPORT_NAME before TLS, which this server requires"))
            case .abort:
                break
            default:
                refuse(.errorTLSRequired, "this server requires TLS: send NBD_OPT_STARTTLS first")
                return (replies, .negotiating)
            }
        }
        switch option {
        case .exportName:
            guard let name = String(validating: request.data.readableBytesView, as: UTF8.self) else {
                return (replies, .close("an export name that is not UTF-8 (NBD_OPT_EXPORT_NAME)"))
            }
            guard let export = exports.first(where: { $0.name == name }), let size = try? export.size() else {
                return (replies, .close("no export named '\(name)' (NBD_OPT_EXPORT_NAME)"))
            }
            let flags = export.transmissionFlags(structuredReplies: structuredReplies)
            replies.writeImmutableBuffer(NBDHandshake.exportNameReply(size: size, flags: flags,
                                                                      zeroPadding: !clientFlags.contains(.noZeroes), allocator: allocator))
            return (replies, .transmission(session(for: export)))
        case .abort:
            replies.writeOptionReply(to: option, .ack)
            return (replies, .close("the client aborted negotiation"))
        case .list:
            guard request.data.readableBytes == 0 else {
                refuse(.errorInvalid, "NBD_OPT_LIST takes no data")
                break
            }
            for export in exports {
                var data = allocator.buffer(capacity: 4 + export.name.utf8.count)
                data.writeInteger(UInt32(export.name.utf8.count))
                data.writeString(export.name)
                replies.writeOptionReply(to: option, .server, data: data)
            }
            replies.writeOptionReply(to: option, .ack)
        case .startTLS:
            if tlsStarted {
                refuse(.errorInvalid, "TLS is already started")
            } else {
                refuse(.errorPolicy, "this server is not configured for TLS (blk serve --tls-creds)")
            }
        case .info, .go:
            guard let (asked, export) = parsed(NBDExportInfoRequest.self) else { break }
            guard writeInfo(of: export, items: asked.items, for: option, into: &replies) else {
                replies.clear()
                refuse(.errorPlatform, "the size of '\(export.name)' cannot be read")
                break
            }
            replies.writeOptionReply(to: option, .ack)
            if option == .go { return (replies, .transmission(session(for: export))) }
        case .structuredReply:
            guard request.data.readableBytes == 0 else {
                refuse(.errorInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
                break
            }
            structuredReplies = true
            replies.writeOptionReply(to: option, .ack)
        case .listMetaContext, .setMetaContext:
            if option == .setMetaContext { selection = nil }
            guard structuredReplies else {
                refuse(.errorInvalid, "negotiate structured replies first")
                break
            }
            guard let (asked, _) = parsed(NBDMetaContextRequest.self) else { break }
            let contexts = option == .setMetaContext ? NBDMetaContext.selected(by: asked.queries) : NBDMetaContext.listed(by: asked.queries)
            for context in contexts {
                var data = allocator.buffer(capacity: 4 + context.name.utf8.count)
                // A list's ids are reserved, zero; a selection's are what block status uses.
                data.writeInteger(option == .setMetaContext ? context.id : 0)
                data.writeString(context.name)
                replies.writeOptionReply(to: option, .metaContext, data: data)
            }
            replies.writeOptionReply(to: option, .ack)
            if option == .setMetaContext { selection = (asked.exportName, contexts) }
        default:
            refuse(.errorUnsupported, "\(option) is not supported")
        }
        return (replies, .negotiating)
    }

    /// NBD_INFO_EXPORT, and the items asked for that this server knows; false when the export's
    /// size cannot be read.
    private func writeInfo(of export: NBDExport, items: [NBDInfoType], for option: NBDOption, into replies: inout ByteBuffer) -> Bool {
        guard let size = try? export.size() else { return false }
        var info = allocator.buffer(capacity: 14)
        info.writeInteger(NBDInfoType.export.rawValue)
        info.writeInteger(size)
        info.writeInteger(export.transmissionFlags(structuredReplies: structuredReplies).rawValue)
        replies.writeOptionReply(to: option, .info, data: info)
        if items.contains(.name) {
            var name = allocator.buffer(capacity: 2 + export.name.utf8.count)
            name.writeInteger(NBDInfoType.name.rawValue)
            name.writeString(export.name)
            replies.writeOptionReply(to: option, .info, data: name)
        }
        if items.contains(.blockSize) {
            var sizes = allocator.buffer(capacity: 14)
            sizes.writeInteger(NBDInfoType.blockSize.rawValue)
            sizes.writeInteger(export.minimumBlockSize)
            sizes.writeInteger(export.preferredBlockSize)
            sizes.writeInteger(export.maximumPayload)
            replies.writeOptionReply(to: option, .info, data: sizes)
        }
        return true
    }

    /// The session for `export`, with the meta contexts selected for it (none if the last
    /// selection named another export).
    private func session(for export: NBDExport) -> NBDSession {
        let contexts = selection.flatMap { $0.exportName == export.name ? $0.contexts : nil } ?? []
        return NBDSession(export: export, structuredReplies: structuredReplies, metaContexts: contexts)
    }
}
