// NBDTLSCredentials: the server's X.509 credentials in the layout of qemu's tls-creds-x509 object
// (endpoint=server): DIR/ca-cert.pem, the authority whose certificates clients must present;
// DIR/server-cert.pem, the server's certificate (then any intermediates); DIR/server-key.pem, its
// key. As qemu's default verify-peer=on, a client without a certificate from that authority is
// refused in the handshake. TLS 1.2 at least, as the NBD spec asks.
//
// Loaded and checked before the server listens, so a bad directory fails at start with a message
// naming the file, never later in a client's handshake:
//   - each file must be a regular file of at most 1 MiB that parses;
//   - the key must be the certificate's;
//   - the key must not be open to other users (any bit of "others"): a key anyone on the host
//     can read authenticates nobody. Group access is allowed, as Debian shares service keys
//     through the ssl-cert group;
//   - ca-crl.pem, which qemu would honour, is refused: swift-nio-ssl cannot check revocation
//     lists, and ignoring one would let revoked clients in.
import BlockServe
import Glibc
import NIOCore
import NIOSSL
import Posix
import SystemPackage

/// TLS credentials that cannot be used, and why.
public struct NBDTLSCredentialError: Error, Sendable, CustomStringConvertible {
    /// The message, naming the file.
    public var description: String
    init(_ description: String) { self.description = description }
}

/// The TLS context every connection's handshake uses.
public struct NBDTLSCredentials: NBDTLSHandlerFactory {
    /// The context: the server's certificate and key, and the authority clients must come from.
    public let context: NIOSSLContext

    /// The most a credentials file may hold: a certificate chain is a few KiB.
    static let fileLimit = 1 << 20

    /// The credentials in `directory` (qemu's layout), checked.
    public init(directory: String) throws(NBDTLSCredentialError) {
        let folder = directory.hasSuffix("/") ? directory : directory + "/"
        guard access(folder + "ca-crl.pem", F_OK) != 0 else {
            throw NBDTLSCredentialError("\(folder)ca-crl.pem: blk serve cannot check certificate revocation lists; remove it to serve without one")
        }
        let authorities = try Self.certificates(in: folder + "ca-cert.pem")
        let chain = try Self.certificates(in: folder + "server-cert.pem")
        let keyPath = folder + "server-key.pem"
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(bytes: try Self.contents(of: keyPath, secret: true), format: .pem)
        } catch let error as NBDTLSCredentialError {
            throw error
        } catch {
            throw NBDTLSCredentialError("\(keyPath): not a PEM private key (\(error))")
        }
        var configuration = TLSConfiguration.makeServerConfigurationWithMTLS(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key), trustRoots: .certificates(authorities))
        configuration.minimumTLSVersion = .tlsv12
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            // BoringSSL refuses a key that is not the certificate's here (KEY_VALUES_MISMATCH).
            throw NBDTLSCredentialError("\(keyPath) cannot serve with \(folder)server-cert.pem (is it that certificate's key?): \(error)")
        }
    }

    /// swift-nio-ssl's server handler on these credentials.
    public func makeServerHandler() -> any ChannelHandler { NIOSSLServerHandler(context: context) }

    /// The certificates of the PEM file at `path`: at least one.
    private static func certificates(in path: String) throws(NBDTLSCredentialError) -> [NIOSSLCertificate] {
        let bytes = try contents(of: path, secret: false)
        guard let certificates = try? NIOSSLCertificate.fromPEMBytes(bytes), !certificates.isEmpty else {
            throw NBDTLSCredentialError("\(path): not a PEM certificate")
        }
        return certificates
    }

    /// The bytes of the regular file at `path` (followed, as qemu follows it); a `secret` file must
    /// not be open to other users.
    private static func contents(of path: String, secret: Bool) throws(NBDTLSCredentialError) -> [UInt8] {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw NBDTLSCredentialError("\(path): \(Errno.current)") }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw NBDTLSCredentialError("\(path): \(Errno.current)") }
        guard status.st_mode & S_IFMT == S_IFREG else { throw NBDTLSCredentialError("\(path): not a regular file") }
        if secret && status.st_mode & 0o007 != 0 {
            let mode = formatted("%04o", status.st_mode & 0o7777)
            throw NBDTLSCredentialError("\(path) has mode \(mode): other users may read or change the server's key (chmod o-rwx it)")
        }
        switch FileDescriptor(rawValue: descriptor).readToEnd(limit: fileLimit + 1, expectedCount: Int(status.st_size) + 1) {
        case .success(let bytes) where bytes.count <= fileLimit: return bytes
        case .success: throw NBDTLSCredentialError("\(path): over \(fileLimit >> 20) MiB, too large for credentials")
        case .failure(let error): throw NBDTLSCredentialError("\(path): \(error)")
        }
    }
}
