// NBDTLSUpgrade: where a connection stands on its way from plain text to TLS, shared by its
// decoder and the code that answers NBD_OPT_STARTTLS. The spec lets a client send nothing after
// NBD_OPT_STARTTLS until the server has answered it; so on a connection that offers TLS the
// decoder frames nothing past a STARTTLS that will be accepted, and a byte that arrives before
// the answer is a protocol violation that ends the connection, never plain text taken for a TLS
// record or a TLS record taken for an option. The server answers, puts TLS in front of the
// decoder and marks the upgrade done in one step on the channel's event loop, so the first byte
// the decoder sees afterwards has come through TLS.
//
// Confined to the channel's event loop (or, in the fuzz target, to one thread): the decoder and
// the upgrade step both run there.

/// A connection's upgrade to TLS.
public final class NBDTLSUpgrade: @unchecked Sendable {
    /// Where the connection stands.
    public enum Phase: Sendable, Hashable {
        /// Plain text, TLS not yet asked for.
        case plaintext
        /// NBD_OPT_STARTTLS framed; nothing may arrive until the server has answered it.
        case awaitingReply
        /// The client sent bytes before the answer: the connection ends.
        case violated
        /// TLS is in front of the decoder: what it frames was decrypted.
        case encrypted
    }

    /// Where the connection stands now.
    public private(set) var phase = Phase.plaintext

    /// A connection in plain text that offers TLS.
    public init() {}

    /// Whether `option` is the STARTTLS the server accepts: the first, without data (a STARTTLS
    /// with data is refused, and after TLS one is an error, both answered in the stream as usual).
    func accepts(_ option: NBDOptionRequest) -> Bool {
        phase == .plaintext && option.option == .startTLS && option.data.readableBytes == 0
    }

    /// The decoder framed the accepted STARTTLS.
    func startTLSFramed() { phase = .awaitingReply }

    /// The decoder saw bytes while the answer was outstanding.
    func violatedByClient() { phase = .violated }

    /// The answer is sent and TLS is in front of the decoder. False (and nothing changes) when the
    /// client has already broken the rule, or no STARTTLS awaits its answer.
    public func encrypt() -> Bool {
        guard phase == .awaitingReply else { return false }
        phase = .encrypted
        return true
    }
}
