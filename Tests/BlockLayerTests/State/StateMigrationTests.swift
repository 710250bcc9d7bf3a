// QEMU's migration hand-over with the store: a long-running source (the library, image open
// read-write) keeps committing; the destination, opened inactive, verifies early under the
// shared lock — right key, intact data — while the source runs; activation fails with QEMU's
// words while the source holds the image, and succeeds once it has inactivated.
import Foundation
import Testing

@Suite("device-state store: migration hand-over")
struct StateMigrationTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("source commits, destination verifies early, then inactivate / activate", arguments: ["raw", "qcow2"])
    func handOver(format: String) throws {
        let image = format == "raw" ? try scratch.rawImage(bytes: 4 << 20) : try scratch.qcow2Image(size: "8M")
        let key = scratch.directory + "/key"
        let wrongKey = scratch.directory + "/wrong"
        try scratch.write(key, Data((0..<32).map { _ in UInt8.random(in: 0...255) }))
        try scratch.write(wrongKey, Data((0..<32).map { _ in UInt8.random(in: 0...255) }))

        let source = try LineProcess.stateFixture()
        #expect(try source.request("open \(image) writer \(key)") == "ok")
        #expect(try source.request("put volatile 3000 1").hasPrefix("ok"))
        source.send("loop permall 60000 400")

        // Early checks while the source commits: right key (the destination, and the CLI), wrong key.
        let destination = try LineProcess.stateFixture()
        let opened = try destination.request("open \(image) inactive \(key)")
        try #require(opened == "ok", "the destination's inactive open: \(opened)")
        var sourceDone = false
        var checksDuringCommits = 0
        while !sourceDone {
            #expect(try destination.request("verify").hasPrefix("ok "), "destination verify")
            let early = try run(blkPath, ["state", "verify", "--key-file", key, image])
            #expect(early.status == 0, "\(early)")
            while let line = try? source.nextLine(within: 0.001) { if line == "ok done" { sourceDone = true } }
            if !sourceDone { checksDuringCommits += 1 }
        }
        #expect(checksDuringCommits >= 2, "the checks ran while the source committed")
        let wrong = try run(blkPath, ["state", "verify", "--key-file", wrongKey, image])
        #expect(wrong.status == 77 && wrong.stderr.contains("wrong key"), "\(wrong)")

        // The source still holds the image: activation fails in QEMU's words, naming it.
        let refused = try destination.request("activate")
        #expect(refused.hasPrefix("err conflict Failed to get \"write\" lock"), "\(refused)")
        #expect(refused.contains("held by pid \(source.pid)"), "\(refused)")
        #expect(try destination.request("put permall 10 99").hasPrefix("err inactive"))

        #expect(try source.request("inactivate") == "ok")
        #expect(try source.request("put permall 10 7").hasPrefix("err inactive"), "an inactive source commits nothing")
        let activated = try destination.request("activate")
        #expect(activated == "ok", "\(activated)")
        #expect(try destination.request("get permall") == "ok 400", "the destination sees the source's last commit")
        #expect(try destination.request("put permall 60000 401").hasPrefix("ok"))
        #expect(try destination.request("get volatile") == "ok 1")
        // And back: the source cannot take the image while the destination holds it.
        #expect(try source.request("activate").hasPrefix("err conflict"))
        try destination.finish()
        try source.finish()
        let verified = try run(blkPath, ["state", "verify", "--key-file", key, image])
        #expect(verified.status == 0 && verified.stdout.contains("2 blobs"), "\(verified)")
        if format == "qcow2" { #expect(try run("/usr/bin/qemu-img", ["check", image]).status == 0) }
    }
}
