// `blk serve --control`: the control socket's requests and answers (status with the traffic,
// errors for bad lines while the server goes on, quit; SIGINT beside it), its path guarded as
// the NBD socket's is, and clients beyond --shared waiting for their turn instead of being
// turned away.
import Foundation
import Glibc
import Testing

@Suite("blk serve: the control socket")
struct ServeControlTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    var controlPath: String { scratch.directory + "/control.sock" }

    @Test("status reports the export, the connection, the requests and the bytes")
    func statusReportsTraffic() throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        let served = try ServedExport(scratch, [image], options: ["-f", "raw", "--control", controlPath])
        let control = try ControlClient(controlPath)
        let client = try RawNBDClient(served.socket)
        try client.handshake()
        try client.go()
        try client.request(command: 1, cookie: 1, offset: 8192, length: 4096)
        try client.send([UInt8](repeating: 0x5a, count: 4096))
        #expect(try client.simpleReply() == .init(error: 0, cookie: 1))
        try client.request(command: 0, cookie: 2, offset: 8192, length: 4096)
        #expect(try client.simpleReply() == .init(error: 0, cookie: 2))
        #expect(try client.receive(4096) == [UInt8](repeating: 0x5a, count: 4096))
        try client.request(command: 0, cookie: 3, offset: 1 << 20, length: 4096) // past the end: no bytes count
        #expect(try client.simpleReply() == .init(error: 22, cookie: 3))

        let status = try control.returned("status")
        #expect(status["connections"] as? Int == 1)
        #expect(status["requests-in-flight"] as? Int == 0)
        #expect(status["requests-served"] as? Int == 3)
        #expect(status["bytes-read"] as? Int == 4096)
        #expect(status["bytes-written"] as? Int == 4096)
        #expect(status["bytes-sent-from-file"] as? Int == 0) // 4 KiB: copied (ExportReads.minimumSendfileBytes)
        let export = try control.firstExport()
        #expect(export["name"] as? String == "")
        #expect(export["image"] as? String == image)
        #expect(export["format"] as? String == "raw")
        #expect(export["size"] as? Int == 1 << 20)
        #expect(export["read-only"] as? Bool == false)
        #expect(export["active"] as? Bool == true)
        #expect(export["lease-lost"] == nil)
        client.hangUp()
        #expect(served.process.exitStatus(within: 30) == 0, "no --persistent: the last client's leaving stops it")
    }

    @Test("bad lines get error answers, and the server goes on")
    func badLinesGetErrors() throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        let served = try ServedExport(scratch, [image], options: ["-f", "raw", "--control", controlPath])
        let control = try ControlClient(controlPath)
        let bad: [(line: [UInt8], errorClass: String, words: String)] = [
            (Array(#"{"execute": "#.utf8), "GenericError", "not JSON"),
            ([0xff, 0xfe, 0x7b], "GenericError", "not JSON"),
            (Array("[1, 2]".utf8), "GenericError", #"{"execute": COMMAND}"#),
            (Array(#"{"execute": 5}"#.utf8), "GenericError", #"{"execute": COMMAND}"#),
            (Array(#"{"run": "status"}"#.utf8), "GenericError", #"{"execute": COMMAND}"#),
            (Array(#"{"execute": "frobnicate"}"#.utf8), "CommandNotFound", "frobnicate"),
            ([UInt8](repeating: UInt8(ascii: "x"), count: 5000), "GenericError", "longer than 4096 bytes"),
        ]
        for (line, errorClass, words) in bad {
            try control.send(line + [UInt8(ascii: "\n")])
            let error = try #require(try control.answer().controlError, "\(line.prefix(20))")
            #expect(error.errorClass == errorClass && error.desc.contains(words), "\(line.prefix(20)): \(error)")
        }
        // A line that never ends is dropped as it comes: one error, then the next line is served.
        for _ in 0..<64 { try control.send([UInt8](repeating: UInt8(ascii: "{"), count: 16 << 10)) }
        #expect(try control.answer().controlError?.desc.contains("longer than") == true)
        try control.send(Array("}\n".utf8))
        #expect(try control.returned("status")["connections"] as? Int == 0)
        // Another client meanwhile, and the NBD side untouched.
        #expect(try ControlClient(controlPath).returned("status")["exports"] != nil)
        try qemuIO(["-f", "raw", "-c", "write -P 0x11 0 4k", "-c", "read -P 0x11 0 4k", served.uri])
        #expect(served.process.exitStatus(within: 30) == 0)
    }

    @Test("quit, and SIGINT, stop the server as SIGTERM does: exit 0, both sockets removed", arguments: ["quit", "SIGINT"])
    func stops(by way: String) throws {
        let image = try scratch.qcow2Image(size: "16M")
        let served = try ServedExport(scratch, [image], options: ["-f", "qcow2", "--persistent", "--control", controlPath])
        var mode = stat()
        #expect(lstat(controlPath, &mode) == 0 && mode.st_mode & 0o777 == 0o600)
        try qemuIO(["-f", "raw", "-c", "write -P 0x77 0 64k", served.uri])
        let control = try ControlClient(controlPath)
        if way == "quit" {
            #expect(try control.returned("quit").isEmpty)
        } else {
            #expect(try control.returned("status")["connections"] as? Int == 0)
            kill(served.process.pid, SIGINT)
        }
        #expect(served.process.exitStatus(within: 30) == 0, "\(served.process.stderr)")
        #expect(control.isClosedByServer())
        #expect(access(controlPath, F_OK) != 0 && access(served.socket, F_OK) != 0)
        try qemuIO(["-f", "qcow2", "-c", "read -P 0x77 0 64k", image])
        #expect(try run("/usr/bin/qemu-img", ["check", image]).status == 0)
    }

    @Test("a file at the control path is refused with exit 75 and left alone")
    func controlPathGuarded() throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        try Data("precious".utf8).write(to: URL(fileURLWithPath: controlPath))
        let refused = try run(blkPath, ["serve", "-f", "raw", "--socket", scratch.directory + "/nbd.sock", "--control", controlPath, image])
        #expect(refused.status == 75 && refused.stderr.contains("already exists"), "\(refused)")
        #expect(try String(contentsOfFile: controlPath, encoding: .utf8) == "precious")
        #expect(access(scratch.directory + "/nbd.sock", F_OK) != 0)
        let usage = try run(blkPath, ["serve", "-f", "raw", "--socket", scratch.directory + "/nbd.sock", "--inactive", image])
        #expect(usage.status == 64 && usage.stderr.contains("--inactive needs --control"), "\(usage)")
    }

    @Test("a client beyond --shared waits, and is served once a connection ends")
    func clientBeyondSharedWaits() throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        let served = try ServedExport(scratch, [image], options: ["-f", "raw", "--shared", "1", "--persistent", "--control", controlPath])
        let control = try ControlClient(controlPath)
        let first = try RawNBDClient(served.socket)
        try first.handshake()
        try first.go()
        let second = try RawNBDClient(served.socket)
        #expect(try control.returned("status")["connections"] as? Int == 1)
        var byte: UInt8 = 0
        #expect(recv(second.descriptor, &byte, 1, Int32(MSG_DONTWAIT)) == -1 && errno == EAGAIN, "no greeting while the first is served")
        try first.request(command: 2, cookie: 1, offset: 0, length: 0) // NBD_CMD_DISC
        #expect(first.isClosedByServer())
        try second.handshake()
        try second.go()
        try second.request(command: 0, cookie: 2, offset: 0, length: 512)
        #expect(try second.simpleReply() == .init(error: 0, cookie: 2))
        #expect(try second.receive(512) != nil)
        #expect(try served.stop() == 0)
    }
}
