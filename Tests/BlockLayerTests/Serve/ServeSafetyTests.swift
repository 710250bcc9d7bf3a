// `blk serve` against hostile local users and clients: a file or symlink planted at the socket
// path, the socket's mode, garbage and oversized lengths in the handshake and in requests, and
// a client that vanishes in the middle of a write. The server survives each, serves the next
// client, and leaves the image as its tools expect.
import Foundation
import Glibc
import Testing

@Suite("blk serve: hostile paths and clients")
struct ServeSafetyTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("a file or symlink already at the socket path is refused and left alone")
    func plantedSocketPath() throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        let victim = scratch.directory + "/victim"
        try scratch.write(victim, Data("precious".utf8))
        let socket = scratch.directory + "/nbd.sock"
        for planted in ["file", "symlink"] {
            if planted == "file" { try scratch.write(socket, Data("planted".utf8)) } else { symlink(victim, socket) }
            let refused = try run(blkPath, ["serve", "-f", "raw", "--socket", socket, image], within: 30)
            #expect(refused.status == 75, "\(refused)")
            #expect(refused.stderr.contains("already exists"), "\(refused)")
            var status = stat()
            #expect(lstat(socket, &status) == 0 && (status.st_mode & S_IFMT) == (planted == "file" ? S_IFREG : S_IFLNK))
            #expect(try String(contentsOfFile: victim, encoding: .utf8) == "precious")
            unlink(socket)
        }
    }

    @Test("the socket is its owner's alone, and is removed on exit")
    func socketMode() throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        let served = try ServedExport(scratch, [image], options: ["-f", "raw", "--persistent"])
        var status = stat()
        #expect(lstat(served.socket, &status) == 0)
        #expect(status.st_mode & S_IFMT == S_IFSOCK)
        #expect(status.st_mode & 0o777 == 0o600)
        #expect(try served.stop() == 0)
        #expect(access(served.socket, F_OK) != 0)
    }

    @Test("garbage and oversized lengths end only their own connection; the image is untouched")
    func malformedInput() throws {
        let image = try scratch.rawImage(bytes: 4 << 20)
        try qemuIO(["-f", "raw", "-c", "write -P 0x99 0 4M", image])
        let served = try ServedExport(scratch, [image], options: ["-f", "raw", "--persistent", "--shared", "4"])

        let garbage = try RawNBDClient(served.socket)
        try garbage.handshake()
        try garbage.send(Array("GET / HTTP/1.1\r\n\r\n".utf8))
        #expect(garbage.isClosedByServer())

        let hugeOption = try RawNBDClient(served.socket)
        try hugeOption.handshake()
        try hugeOption.send(bigEndian(UInt64(0x4948_4156_454f_5054)) + bigEndian(UInt32(7)) + bigEndian(UInt32.max))
        #expect(hugeOption.isClosedByServer())

        let hugeWrite = try RawNBDClient(served.socket)
        try hugeWrite.handshake()
        try hugeWrite.go()
        try hugeWrite.request(command: 1, cookie: 1, offset: 0, length: UInt32.max)
        #expect(hugeWrite.isClosedByServer())

        let errors = try RawNBDClient(served.socket)
        try errors.handshake()
        // Option errors: a name that is not UTF-8, data on LIST, STARTTLS, an unknown option.
        #expect(try errors.option(6, data: bigEndian(UInt32(4)) + [0x64, 0x69, 0x73, 0x96] + bigEndian(UInt16(0))) == 1 << 31 | 3)
        #expect(try errors.option(3, data: [0]) == 1 << 31 | 3)
        #expect(try errors.option(5, data: []) == 1 << 31 | 2) // NBD_REP_ERR_POLICY: no --tls-creds, as qemu-nbd
        #expect(try errors.option(99, data: [1, 2, 3]) == 1 << 31 | 1)
        #expect(try errors.option(10, data: bigEndian(UInt32(0)) + bigEndian(UInt32(0))) == 1 << 31 | 3) // before structured replies
        try errors.go()
        try errors.request(command: 42, cookie: 7, offset: 0, length: 0)
        #expect(try errors.simpleReply() == .init(error: 22, cookie: 7))           // unknown command: EINVAL
        try errors.request(command: 0, cookie: 8, offset: 4 << 20, length: 512)
        #expect(try errors.simpleReply() == .init(error: 22, cookie: 8))           // read past the end: EINVAL
        try errors.request(command: 6, cookie: 9, offset: 4 << 20, length: 512)
        #expect(try errors.simpleReply() == .init(error: 28, cookie: 9))           // write-zeroes past the end: ENOSPC
        try errors.request(command: 0, flags: 1 << 2, cookie: 10, offset: 0, length: 512)
        #expect(try errors.simpleReply() == .init(error: 22, cookie: 10))          // DF, not advertised: EINVAL
        try errors.request(command: 7, cookie: 11, offset: 0, length: 512)
        #expect(try errors.simpleReply() == .init(error: 22, cookie: 11))          // block status, no context: EINVAL
        try errors.request(command: 2, cookie: 12, offset: 0, length: 0)
        #expect(errors.isClosedByServer())                     // NBD_CMD_DISC

        try qemuIO(["-f", "raw", "-c", "read -P 0x99 0 4M", served.uri])
        #expect(try served.stop() == 0)
        try qemuIO(["-f", "raw", "-c", "read -P 0x99 0 4M", image])
    }

    @Test("a write to a read-only export is EPERM")
    func readOnlyWriteIsEPERM() throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        let served = try ServedExport(scratch, [image], options: ["-f", "raw", "-r", "--persistent"])
        let client = try RawNBDClient(served.socket)
        try client.handshake()
        try client.go()
        try client.request(command: 1, cookie: 3, offset: 0, length: 512)
        try client.send([UInt8](repeating: 0xee, count: 512))
        #expect(try client.simpleReply() == .init(error: 1, cookie: 3))
        try client.request(command: 4, cookie: 4, offset: 0, length: 512)
        #expect(try client.simpleReply() == .init(error: 1, cookie: 4))
        #expect(try served.stop() == 0)
    }

    @Test("a client vanishing in the middle of a write hurts neither the image nor the next client")
    func clientVanishesMidWrite() throws {
        let image = try scratch.qcow2Image(size: "16M")
        let served = try ServedExport(scratch, [image], options: ["-f", "qcow2", "--persistent", "--shared", "2"])
        let vanishing = try RawNBDClient(served.socket)
        try vanishing.handshake()
        try vanishing.go()
        try vanishing.request(command: 1, cookie: 1, offset: 1 << 20, length: 1 << 20)
        try vanishing.send([UInt8](repeating: 0xde, count: 300 << 10))
        vanishing.hangUp()
        try qemuIO(["-f", "raw", "-c", "write -P 0x33 0 64k", "-c", "read -P 0x33 0 64k", served.uri])
        #expect(try served.stop() == 0)
        try qemuIO(["-f", "qcow2", "-c", "read -P 0x33 0 64k", "-c", "read -P 0 1M 1M", image])
        let check = try run("/usr/bin/qemu-img", ["check", image])
        #expect(check.status == 0, "\(check)")
    }

    @Test("SIGTERM with a client connected: its requests answered, then exit 0 and the image released")
    func sigtermWithClientConnected() throws {
        let image = try scratch.qcow2Image(size: "16M")
        let served = try ServedExport(scratch, [image], options: ["-f", "qcow2", "--persistent"])
        let client = try RawNBDClient(served.socket)
        try client.handshake()
        try client.go()
        try client.request(command: 1, cookie: 5, offset: 0, length: 64 << 10)
        try client.send([UInt8](repeating: 0x6b, count: 64 << 10))
        try client.request(command: 3, cookie: 6, offset: 0, length: 0)
        // Replies may come in either order: the two run at once.
        let replies = [try client.simpleReply(), try client.simpleReply()].sorted { $0.cookie < $1.cookie }
        #expect(replies == [.init(error: 0, cookie: 5), .init(error: 0, cookie: 6)])
        #expect(try served.stop() == 0)
        #expect(client.isClosedByServer())
        try qemuIO(["-f", "qcow2", "-c", "read -P 0x6b 0 64k", "-c", "write 1M 4k", image])
        #expect(try run("/usr/bin/qemu-img", ["check", image]).status == 0)
    }

    @Test("numbers out of range on the command line are usage errors", arguments: [
        (["--shared", "0"], "--shared must be from 1 to 1000"),
        (["--shared", "99999999999999999999"], "--shared"),
        (["--bind", ":70000"], "the port must be a number from 0 to 65535"),
        (["--bind", "127.0.0.1:ten"], "the port must be a number from 0 to 65535"),
        (["--bind", "[::1"], "no ']'"),
    ])
    func numbersOutOfRange(options: [String], words: String) throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        let refused = try run(blkPath, ["serve", "-f", "raw"] + options + [image], within: 30)
        #expect(refused.status == 64 && refused.stderr.contains(words), "\(refused)")
    }
}
