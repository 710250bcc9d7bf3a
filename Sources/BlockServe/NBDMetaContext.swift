// NBDMetaContext: the metadata contexts block status reports — `base:allocation` (holes and
// zeroes, the spec's own) and `qemu:allocation-depth` (which image of the backing chain holds a
// range, QEMU's) — and how the queries of NBD_OPT_LIST/SET_META_CONTEXT select them.

/// A metadata context this server serves.
public enum NBDMetaContext: UInt32, Sendable, Hashable, CaseIterable {
    /// Holes and zeroes.
    case baseAllocation = 1
    /// 0 for a range no image of the chain holds, 1 for the image itself, 2 for its backing
    /// image, and so on.
    case allocationDepth = 2

    /// The context's name on the wire.
    public var name: String {
        switch self {
        case .baseAllocation: "base:allocation"
        case .allocationDepth: "qemu:allocation-depth"
        }
    }

    /// The context's id in NBD_REP_META_CONTEXT and block status chunks: fixed, one per context.
    public var id: UInt32 { rawValue }

    /// The contexts NBD_OPT_LIST_META_CONTEXT answers `queries` with: all for none; for a
    /// namespace alone ("base:"), its contexts; for a full name, that context. Queries of
    /// unknown namespaces select nothing, as the spec asks.
    public static func listed(by queries: [String]) -> [NBDMetaContext] {
        guard !queries.isEmpty else { return allCases }
        return allCases.filter { context in
            queries.contains { $0 == context.name || $0 == context.namespace + ":" }
        }
    }

    /// The contexts NBD_OPT_SET_META_CONTEXT selects: those named in full, each once.
    public static func selected(by queries: [String]) -> [NBDMetaContext] {
        allCases.filter { context in queries.contains(context.name) }
    }

    private var namespace: String { String(name.prefix { $0 != ":" }) }
}
