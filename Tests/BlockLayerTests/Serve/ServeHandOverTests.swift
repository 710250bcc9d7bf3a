// Migration hand-over between two `blk serve` processes on one image (issue 18): the second
// starts --inactive, holding no locks; the first is inactivated through its control socket, the
// second activated through its own. A client of the second then writes, a client of the first
// can no longer write, and what was written through the first reads back through the second —
// on qcow2, whose metadata the second read before the first's last writes.
import Foundation
import Glibc
import Testing

@Suite("blk serve: migration hand-over through the control sockets")
struct ServeHandOverTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("inactivate the first, activate the second: the second writes, the first cannot, and the first's data is there")
    func handOver() throws {
        let image = try scratch.qcow2Image(size: "16M")
        let sourceControl = scratch.directory + "/source.ctl"
        let destinationControl = scratch.directory + "/destination.ctl"
        let source = try ServedExport(scratch, [image], options: ["-f", "qcow2", "--persistent", "--shared", "4", "--control", sourceControl],
                                      socketName: "source.sock")
        let destination = try ServedExport(scratch, [image], options: ["-f", "qcow2", "--persistent", "--inactive", "--control", destinationControl],
                                           socketName: "destination.sock")
        let sourceCommands = try ControlClient(sourceControl)
        let destinationCommands = try ControlClient(destinationControl)
        #expect(try destinationCommands.firstExport()["active"] as? Bool == false)

        // The destination writes nothing while inactive: EPERM, as QEMU's server answers; reads work.
        let early = try run("/usr/bin/qemu-io", ["-f", "raw", "-c", "write -P 0x99 0 4k", destination.uri])
        #expect(early.stdout.contains("Operation not permitted") || early.stderr.contains("Operation not permitted"), "\(early)")
        try qemuIO(["-f", "raw", "-c", "read -P 0 0 4k", destination.uri])

        // The source's guest writes (new clusters, after the destination read the metadata).
        try qemuIO(["-f", "raw", "-c", "write -P 0xa1 0 64k", "-c", "write -P 0xa2 4M 64k", source.uri])
        let held = try RawNBDClient(source.socket)
        try held.handshake()
        try held.go()
        let beside = try run("/usr/bin/qemu-io", ["-r", "-f", "qcow2", "-c", "read 0 4k", image])
        #expect(beside.stderr.contains("Failed to get shared \"write\" lock"), "the source holds write: \(beside)")

        #expect(try sourceCommands.returned("inactivate").isEmpty)
        #expect(try sourceCommands.firstExport()["active"] as? Bool == false)
        // Neither holds the image now: another process may read it, and finds the source's data flushed.
        try qemuIO(["-r", "-f", "qcow2", "-c", "read -P 0xa1 0 64k", "-c", "read -P 0xa2 4M 64k", image])
        // The source's client can no longer write or flush.
        try held.request(command: 1, cookie: 1, offset: 1 << 20, length: 4096)
        try held.send([UInt8](repeating: 0xee, count: 4096))
        #expect(try held.simpleReply() == .init(error: 1, cookie: 1))
        try held.request(command: 3, cookie: 2, offset: 0, length: 0)
        #expect(try held.simpleReply() == .init(error: 1, cookie: 2))

        #expect(try destinationCommands.returned("activate").isEmpty)
        #expect(try destinationCommands.firstExport()["active"] as? Bool == true)
        try qemuIO(["-f", "raw", "-c", "read -P 0xa1 0 64k", "-c", "read -P 0xa2 4M 64k", "-c", "write -P 0xb3 1M 64k",
                    "-c", "read -P 0xb3 1M 64k", destination.uri])
        // The source cannot take it back while the destination holds it.
        let refused = try #require(try sourceCommands.execute("activate").controlError)
        #expect(refused.errorClass == "GenericError" && refused.desc.contains("lock"), "\(refused)")
        try held.request(command: 1, cookie: 3, offset: 2 << 20, length: 4096)
        try held.send([UInt8](repeating: 0xee, count: 4096))
        #expect(try held.simpleReply() == .init(error: 1, cookie: 3))

        #expect(try source.stop() == 0)
        #expect(try destination.stop() == 0)
        try qemuIO(["-f", "qcow2", "-c", "read -P 0xa1 0 64k", "-c", "read -P 0xb3 1M 64k", "-c", "read -P 0 2M 4k",
                    "-c", "read -P 0xa2 4M 64k", image])
        let check = try run("/usr/bin/qemu-img", ["check", image])
        #expect(check.status == 0, "\(check)")
    }
}
