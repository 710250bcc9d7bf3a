// NBDSession: what a connection's negotiation agreed on, which transmission goes by.
import NBD

/// The terms of a connection's transmission phase.
public struct NBDSession: Sendable {
    /// The export chosen.
    public var export: NBDExport
    /// Reads are answered with structured replies (data and hole chunks).
    public var structuredReplies: Bool
    /// The contexts NBD_CMD_BLOCK_STATUS reports, in the order selected; empty: the command is
    /// refused.
    public var metaContexts: [NBDMetaContext]
}
