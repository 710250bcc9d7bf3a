// `blk serve --tls-creds` with certificates made here by openssl: qemu-io, qemu-img and nbdinfo
// connect through TLS (Unix socket and TCP) and what they write is in the file; plain clients,
// clients without a certificate and clients of another authority are refused; the STARTTLS
// rules by hand (Tests/Fixtures/nbd_tls_client.py and a raw socket); credentials that cannot be
// used end the server with 77 before it listens.
import Foundation
import Glibc
import Testing

/// An authority and the certificates it issues, made with openssl in a folder of the test's.
struct TestAuthority {
    let folder: String

    /// A new authority in `scratch`/`name`.
    init(_ scratch: Scratch, _ name: String) throws {
        folder = scratch.directory + "/" + name
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                     "-subj", "/CN=\(name)", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                     "-keyout", folder + "/ca-key.pem", "-out", folder + "/ca-cert.pem"])
    }

    /// A folder in qemu's layout for `role` ("server" or "client"): this authority's ca-cert.pem (or
    /// `trusting`'s), and ROLE-cert.pem and ROLE-key.pem (mode 0600) issued by this authority.
    func credentials(_ role: String, in folder: String, trusting other: TestAuthority? = nil, serial: Int) throws -> String {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: (other ?? self).folder + "/ca-cert.pem", toPath: folder + "/ca-cert.pem")
        let key = folder + "/\(role)-key.pem", request = folder + "/\(role).csr", extensions = folder + "/\(role).ext"
        try openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=\(role)",
                     "-keyout", key, "-out", request])
        try Data("""
            basicConstraints=critical,CA:FALSE
            keyUsage=critical,digitalSignature,keyEncipherment
            extendedKeyUsage=\(role == "server" ? "serverAuth" : "clientAuth")
            subjectAltName=DNS:localhost,IP:127.0.0.1

            """.utf8).write(to: URL(fileURLWithPath: extensions))
        try openssl(["x509", "-req", "-in", request, "-CA", self.folder + "/ca-cert.pem", "-CAkey", self.folder + "/ca-key.pem",
                     "-set_serial", String(serial), "-days", "2", "-extfile", extensions, "-out", folder + "/\(role)-cert.pem"])
        chmod(key, 0o600)
        return folder
    }

    private func openssl(_ arguments: [String]) throws {
        let made = try run("/usr/bin/openssl", arguments)
        guard made.status == 0 else { throw TestFailure("openssl \(arguments.joined(separator: " ")): \(made)") }
    }
}

@Suite("blk serve: TLS")
struct ServeTLSTests {
    let scratch: Scratch
    let authority: TestAuthority
    let server: String
    let client: String

    init() throws {
        scratch = try Scratch()
        authority = try TestAuthority(scratch, "blk-test-ca")
        server = try authority.credentials("server", in: scratch.directory + "/server", serial: 1)
        client = try authority.credentials("client", in: scratch.directory + "/client", serial: 2)
    }

    /// qemu's options for a TLS client with `folder`'s credentials, then the image options. (On a
    /// Unix socket qemu checks the server's certificate against `tls-hostname`: there is no host.)
    func qemuTLS(_ folder: String, _ imageOptions: String) -> [String] {
        ["--object", "tls-creds-x509,id=tls0,dir=\(folder),endpoint=client", "--image-opts", imageOptions + ",tls-creds=tls0"]
    }

    @Test("qemu-io writes through TLS on a Unix socket, and the file holds what it wrote")
    func qemuIOOverUnixSocket() throws {
        let image = try scratch.rawImage(bytes: 4 << 20)
        let served = try ServedExport(scratch, [image], options: ["-f", "raw", "--tls-creds", server])
        let written = try run("/usr/bin/qemu-io", qemuTLS(client, "driver=nbd,server.type=unix,server.path=\(served.socket),tls-hostname=localhost")
                              + ["-c", "write -P 0xab 0 64k", "-c", "write -P 0xcd 1M 512k", "-c", "read -P 0xab 0 64k"])
        #expect(written.status == 0 && !written.stdout.contains("failed"), "\(written)")
        #expect(try served.stop() == 0)
        try qemuIO(["-f", "raw", "-c", "read -P 0xab 0 64k", "-c", "read -P 0xcd 1M 512k", "-c", "read -P 0 64k 960k", image])
    }

    @Test("qemu-img converts from the export over TCP with TLS, the server's name checked")
    func qemuImgOverTCP() throws {
        let image = try scratch.qcow2Image(size: "8M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x5e 0 128k", "-c", "write -P 0x5f 3M 64k", image])
        let served = try ServedExport(scratch, [image], options: ["-f", "qcow2", "--tls-creds", server, "--persistent"], tcp: true)
        let port = served.uri.split(separator: ":").last!.split(separator: "/").first!
        let copy = scratch.directory + "/copy.raw"
        let converted = try run("/usr/bin/qemu-img", ["convert", "-O", "raw"]
                                + qemuTLS(client, "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=\(port)") + [copy])
        #expect(converted.status == 0, "\(converted)")
        #expect(try served.stop() == 0)
        try qemuImg(["compare", "-f", "raw", "-F", "qcow2", copy, image])
    }

    @Test("nbdinfo connects with nbds+unix and tls-certificates")
    func nbdinfo() throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        let served = try ServedExport(scratch, [image], options: ["-f", "raw", "--tls-creds", server])
        let info = try run("/usr/bin/nbdinfo", ["nbds+unix:///?socket=\(served.socket)&tls-certificates=\(client)"])
        #expect(info.status == 0 && info.stdout.contains("export-size: 1048576") && info.stdout.contains("with TLS"), "\(info)")
        #expect(served.process.exitStatus(within: 30) == 0)
    }

    @Test("clients without TLS, without a certificate, or with one of another authority are refused")
    func refusals() throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        let served = try ServedExport(scratch, [image], options: ["-f", "raw", "--tls-creds", server, "--persistent"])
        let plainURI = "nbd+unix:///?socket=\(served.socket)"
        let qemuPlain = try run("/usr/bin/qemu-img", ["info", "-f", "raw", plainURI])
        #expect(qemuPlain.status != 0 && qemuPlain.stderr.contains("TLS negotiation required"), "\(qemuPlain)")
        let script = testsDirectory.appendingPathComponent("Fixtures/nbd_tls_client.py").path
        let libnbdPlain = try run("/usr/bin/python3", [script, "plain", plainURI])
        #expect(libnbdPlain.stdout.contains("server requires TLS encryption first"), "\(libnbdPlain)")

        // The authority's ca-cert.pem to check the server, but no client certificate.
        let anonymous = scratch.directory + "/anonymous"
        try FileManager.default.createDirectory(atPath: anonymous, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: client + "/ca-cert.pem", toPath: anonymous + "/ca-cert.pem")
        let stranger = try TestAuthority(scratch, "other-ca").credentials("client", in: scratch.directory + "/stranger",
                                                                              trusting: authority, serial: 3)
        for folder in [anonymous, stranger] {
            let refused = try run("/usr/bin/nbdinfo", ["--size", "nbds+unix:///?socket=\(served.socket)&tls-certificates=\(folder)"])
            #expect(refused.status != 0 && !refused.stdout.contains("1048576"), "\(folder): \(refused)")
            let qemu = try run("/usr/bin/qemu-io", qemuTLS(folder, "driver=nbd,server.type=unix,server.path=\(served.socket),tls-hostname=localhost")
                               + ["-c", "read 0 4k"])
            #expect(qemu.status != 0 || qemu.stdout.contains("failed"), "\(folder): \(qemu)")
        }
        // The server goes on serving the clients it should.
        let info = try run("/usr/bin/nbdinfo", ["--size", "nbds+unix:///?socket=\(served.socket)&tls-certificates=\(client)"])
        #expect(info.status == 0 && info.stdout == "1048576\n", "\(info)")
        #expect(try served.stop() == 0)
    }

    @Test("the STARTTLS rules: TLS_REQD before, INVALID with data and twice, a close for EXPORT_NAME or bytes before the reply")
    func startTLSRules() throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        let served = try ServedExport(scratch, [image], options: ["-f", "raw", "--tls-creds", server, "--persistent"])
        let script = testsDirectory.appendingPathComponent("Fixtures/nbd_tls_client.py").path
        let byHand = try run("/usr/bin/python3", [script, "tls", served.socket, client])
        #expect(byHand.status == 0 && byHand.stdout == "ok\n", "\(byHand)")

        // NBD_OPT_EXPORT_NAME cannot be refused: the connection closes, nothing sent.
        let exportName = try RawNBDClient(served.socket)
        try exportName.handshake()
        try exportName.send(bigEndian(UInt64(0x4948_4156_454f_5054)) + bigEndian(UInt32(1)) + bigEndian(UInt32(0)))
        #expect(try exportName.receive(1) == nil)
        // A client that sends its TLS hello with STARTTLS, before the reply: closed, no ACK.
        let eager = try RawNBDClient(served.socket)
        try eager.handshake()
        try eager.send(bigEndian(UInt64(0x4948_4156_454f_5054)) + bigEndian(UInt32(5)) + bigEndian(UInt32(0)) + [0x16, 0x03, 0x01, 0x00, 0x05])
        #expect(try eager.receive(1) == nil)
        // NBD_OPT_ABORT is answered before TLS.
        let aborting = try RawNBDClient(served.socket)
        try aborting.handshake()
        #expect(try aborting.option(2, data: []) == 1)
        #expect(aborting.isClosedByServer())

        #expect(try served.stop() == 0)
        try qemuIO(["-f", "raw", "-c", "read -P 0x5a 0 4k", image])
    }

    @Test("SIGTERM with a client connected through TLS: its input ends beneath TLS, and the server exits 0")
    func stopWithTLSClient() throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        let served = try ServedExport(scratch, [image], options: ["-f", "raw", "--tls-creds", server])
        let script = testsDirectory.appendingPathComponent("Fixtures/nbd_tls_client.py").path
        let holder = try LineProcess("/usr/bin/python3", [script, "hold", served.socket, client])
        #expect(try holder.nextLine(within: 30) == "connected")
        #expect(try served.stop() == 0)
        holder.child.closeInput()
        _ = holder.exitStatus(within: 30)
        try qemuIO(["-f", "raw", "-c", "read -P 0x3c 0 4k", image])
    }

    @Test("credentials that cannot be used end the server with 77 before it listens; --tls-required alone is usage")
    func badCredentials() throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        func serve(_ folder: String) throws -> Finished {
            try run(blkPath, ["serve", "-f", "raw", "--socket", scratch.directory + "/nbd.sock", "--tls-creds", folder, image], within: 30)
        }
        func copy(_ name: String, change: (String) throws -> Void) throws -> String {
            let folder = scratch.directory + "/" + name
            try FileManager.default.copyItem(atPath: server, toPath: folder)
            try change(folder)
            return folder
        }
        let other = try TestAuthority(scratch, "other-ca").credentials("server", in: scratch.directory + "/other", serial: 4)
        let cases: [(String, String)] = [
            (scratch.directory + "/absent", "ca-cert.pem"),
            (try copy("no-key") { try FileManager.default.removeItem(atPath: $0 + "/server-key.pem") }, "server-key.pem"),
            (try copy("open-key") { chmod($0 + "/server-key.pem", 0o644) }, "mode 0644"),
            (try copy("garbage-cert") { try Data("not a certificate\n".utf8).write(to: URL(fileURLWithPath: $0 + "/server-cert.pem")) },
             "not a PEM certificate"),
            (try copy("wrong-key") { folder in
                try FileManager.default.removeItem(atPath: folder + "/server-key.pem")
                try FileManager.default.copyItem(atPath: other + "/server-key.pem", toPath: folder + "/server-key.pem")
            }, "that certificate's key"),
            (try copy("crl") { try Data().write(to: URL(fileURLWithPath: $0 + "/ca-crl.pem")) }, "revocation"),
        ]
        for (folder, words) in cases {
            let refused = try serve(folder)
            #expect(refused.status == 77 && refused.stderr.contains(words) && !refused.stdout.contains("listening"), "\(folder): \(refused)")
        }
        // The image was never opened: nothing holds it.
        try qemuIO(["-f", "raw", "-c", "write 0 4k", image])
        let usage = try run(blkPath, ["serve", "-f", "raw", "--socket", scratch.directory + "/nbd.sock", "--tls-required", image], within: 30)
        #expect(usage.status == 64 && usage.stderr.contains("--tls-creds"), "\(usage)")
    }
}
