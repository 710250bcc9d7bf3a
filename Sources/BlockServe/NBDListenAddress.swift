// NBDListenAddress: where the server listens — a Unix socket (the default: only local users,
// and only those the file's mode lets in) or a TCP address, loopback unless another is named.
import BlockLayer

/// Where the server accepts connections.
public enum NBDListenAddress: Sendable, Hashable, CustomStringConvertible {
    /// A Unix socket at a path the server creates (and refuses to replace).
    case unix(path: String)
    /// A TCP host and port.
    case tcp(host: String, port: Int)

    /// NBD's registered port.
    public static let defaultPort = 10809

    /// Parses `--bind`'s ADDR:PORT, [IPv6]:PORT, ADDR or :PORT; the address defaults to
    /// 127.0.0.1 and the port to 10809.
    public init(bind text: String) throws(BlockError) {
        var host = text
        var port = Self.defaultPort
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw BlockError(.invalidRequest, "--bind '\(text)': no ']' after the IPv6 address") }
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { throw BlockError(.invalidRequest, "--bind '\(text)': expected ':PORT' after ']'") }
                port = try Self.port(rest.dropFirst(), in: text)
            }
        } else if let colon = text.lastIndex(of: ":") {
            host = String(text[..<colon])
            port = try Self.port(text[text.index(after: colon)...], in: text)
        }
        self = .tcp(host: host.isEmpty ? "127.0.0.1" : host, port: port)
    }

    private static func port(_ text: Substring, in whole: String) throws(BlockError) -> Int {
        guard let port = Int(text), (0...65535).contains(port) else {
            throw BlockError(.invalidRequest, "--bind '\(whole)': the port must be a number from 0 to 65535")
        }
        return port
    }

    /// "unix:PATH" or "HOST:PORT", as the server reports where it listens.
    public var description: String {
        switch self {
        case .unix(let path): "unix:\(path)"
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }
    }
}
