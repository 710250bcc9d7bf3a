// NBDNegotiation: option haggling, fixed newstyle. Each option gets its replies here, as bytes,
// and the outcome: go on negotiating, start transmission, or close. No I/O of its own beyond
// asking an export its size, so the rules of the spec are all in one place:
//   - an unknown option gets NBD_REP_ERR_UNSUP, malformed data NBD_REP_ERR_INVALID, an unknown
//     export NBD_REP_ERR_UNKNOWN (or, after NBD_OPT_EXPORT_NAME, which cannot say so, a close);
//   - NBD_OPT_STARTTLS is refused with NBD_REP_ERR_UNSUP: this server has no TLS yet;
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
        /// Negotiation is over: serve requests.
        case transmission(NBDSession)
        /// End the connection (after sending the replies).
        case close(String)
    }

    private let exports: [NBDExport]
    private let allocator: ByteBufferAllocator
    private var clientFlags: NBDClientFlags = []
    private var structuredReplies = false
    /// The last NBD_OPT_SET_META_CONTEXT's export and selection.
    private var selection: (exportName: String, contexts: [NBDMetaContext])?

    /// A negotiation offering `exports`.
    public init(exports: [NBDExport], allocator: ByteBufferAllocator) {
        self.exports = exports
        self.allocator = allocator
    }

    /// Takes the client's flags; a flag this server does not know ends the session, as the spec
    /// asks.
    public mutating func receive(_ flags: NBDClientFlags) -> Outcome {
        guard NBDClientFlags.known.isSuperset(of: flags) else {
            return .close("unknown client flags 0x\(String(flags.rawValue, radix: 16))")
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
        switch option {
        case .exportName:
            guard let name = String(validating: request.data.readableBytesView, as: UTF8.self) else {
                return (replies, .close("an export name that is not UTF-8 (NBD_OPT_EXPORT_NAME)"))
            }
            guard let export = exports.first(where: { $0.name == name }), let size = try? export.size() else {
                return (replies, .close("no export named '\(name)' (NBD_OPT_EXPORT_NAME)"))
            }
            replies.writeImmutableBuffer(NBDHandshake.exportNameReply(size: size, flags: export.transmissionFlags,
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
            refuse(.errorUnsupported, "this server does not offer TLS")
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
        info.writeInteger(export.transmissionFlags.rawValue)
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
