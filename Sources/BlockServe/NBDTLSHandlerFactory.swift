// NBDTLSHandlerFactory: what puts TLS in front of a connection's decoder once NBD_OPT_STARTTLS is
// answered. The program supplies it (blk serve: BlockServeTLS's credentials, on swift-nio-ssl),
// so the server core and what is built from it alone — the negotiation's fuzz target — do not
// link a TLS library.
import NIOCore

/// Makes the server side of TLS for one connection.
public protocol NBDTLSHandlerFactory: Sendable {
    /// A fresh TLS handler for one connection, made on its event loop.
    func makeServerHandler() -> any ChannelHandler
}
