// A served image under a sanlock lease that is taken away (`blk lease fence PID`, sanlock's kill
// path): every write after the fence gets EIO, reads go on, the export logs the loss once at
// error level, and the control socket's status shows it.
import Foundation
import Glibc
import Testing

@Suite("blk serve: a fenced lease", .serialized, .enabled(if: SanlockHosts.available, "needs sanlock"))
struct ServeLeaseTests {
    @Test("after the fence writes get EIO, the log says so once, and status shows the loss")
    func fencedLease() throws {
        let hosts = try SanlockHosts(count: 1)
        let image = try hosts.scratch.rawImage(bytes: 4 << 20)
        let controlPath = hosts.scratch.directory + "/control.sock"
        let served = try ServedExport(hosts.scratch, [image], options: ["-f", "raw", "--persistent", "--control", controlPath],
                                      environment: hosts.environment(host: 1))
        let control = try ControlClient(controlPath)
        try qemuIO(["-f", "raw", "-c", "write -P 0x3c 0 64k", served.uri])
        #expect(try control.firstExport()["lease-lost"] == nil)

        let fence = try hosts.blk(1, "lease", "fence", "\(served.process.pid)")
        #expect(fence.status == 0, "\(fence)")
        for attempt in 0..<2 {
            let refused = try run("/usr/bin/qemu-io", ["-f", "raw", "-c", "write -P 0x4d 64k 64k", served.uri])
            #expect((refused.stdout + refused.stderr).contains("Input/output error"), "write \(attempt) after the fence: \(refused)")
        }
        try qemuIO(["-f", "raw", "-c", "read -P 0x3c 0 64k", served.uri])
        let lost = try #require(try control.firstExport()["lease-lost"] as? String)
        #expect(lost.contains("revoked"), "\(lost)")

        kill(served.process.pid, SIGTERM)
        let status = served.process.exitStatus(within: 30)
        let stderr = served.process.stderr
        #expect(status == 74, "the last flush is fenced too: \(stderr)")
        let logged = stderr.components(separatedBy: "the image's lease is lost").count - 1
        #expect(logged == 1 && stderr.contains("error"), "\(stderr)")
        try qemuIO(["-f", "raw", "-c", "read -P 0x3c 0 64k", "-c", "read -P 0 64k 64k", image])
    }
}
