// NBDClientMessage: what a client sends, one frame at a time, as the decoder hands it on.
import NIOCore

/// One frame from a client.
public enum NBDClientMessage: Sendable, Hashable {
    /// The client's answer to the greeting.
    case clientFlags(NBDClientFlags)
    /// An option of negotiation.
    case option(NBDOptionRequest)
    /// A request of transmission.
    case request(NBDRequest)
}
