// LeaseOwner: a host holding an image's lease, for conflict messages, `blk locks` and JSON.

/// A host that holds an image's lease, as the lease storage records it.
public struct LeaseOwner: Sendable, Hashable, CustomStringConvertible {
    /// The host's id in the lockspace (sanlock: 1–2000).
    public var hostID: UInt64
    /// The name the host's lock daemon announces (sanlock daemon -e), when it is recorded.
    public var hostName: String?
    /// Bumped each time the host joins the lockspace: a lease of an older generation is stale.
    public var generation: UInt64
    /// How the lease is held, when the storage tells.
    public var mode: LeaseMode?
    /// The host's state as this host's lock daemon sees it ("live", "fail", "dead", …), when known.
    /// A failed host's leases can be taken once its own lease on the lockspace expires.
    public var hostState: String?

    /// An owner as an engine reads it from the lease storage; name, mode and state as far as the
    /// storage tells.
    public init(hostID: UInt64, hostName: String?, generation: UInt64, mode: LeaseMode?, hostState: String? = nil) {
        self.hostID = hostID
        self.hostName = hostName
        self.generation = generation
        self.mode = mode
        self.hostState = hostState
    }

    /// "host 1 (node-a), generation 3, exclusive" — and ", host fail" once its daemon has seen
    /// it stop renewing ("unknown", the state of a host not yet watched long, says nothing).
    public var description: String {
        "host \(hostID)" + (hostName.map { " (\(escapingControlCharacters($0)))" } ?? "") + ", generation \(generation)" + (mode.map { ", \($0)" } ?? "")
            + (hostState.map { ["fail", "dead"].contains($0) ? ", host \($0)" : "" } ?? "")
    }
}
