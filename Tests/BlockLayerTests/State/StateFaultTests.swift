// Error paths of a commit, by fault injection (FaultInjectionDriver, `--inject-fault`): an EIO
// or ENOSPC at every write and every flush of a put surfaces as an error, never as success, and
// the store still opens with the blob's old or new version — never an error, never a mix.
import Foundation
import Testing

@Suite("device-state store: injected I/O errors")
struct StateFaultTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("every write and flush of a put failing in turn", arguments: ["raw", "qcow2"], [70_000, 3000])
    func failingSteps(format: String, size: Int) throws {
        let image = format == "raw" ? try scratch.rawImage(bytes: 2 << 20) : try scratch.qcow2Image(size: "2M")
        let blobPath = scratch.directory + "/blob"
        func version(_ seed: Int) -> [UInt8] { (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed) } }
        try scratch.write(blobPath, Data(version(0)))
        #expect(try blk("state", "put", "-f", format, image, "permall", blobPath).status == 0)
        var current = version(0)
        var seed = 1
        for operation in ["write", "flush"] {
            var failedSteps = 0
            for step in 1...16 {
                let next = version(seed)
                seed += 1
                try scratch.write(blobPath, Data(next))
                let fault = "\(operation):\(step)" + (step.isMultiple(of: 2) ? ":enospc" : "")
                let put = try blk("state", "put", "-f", format, "--inject-fault", fault, image, "permall", blobPath)
                let read = try run(blkPath, ["state", "get", "-f", format, image, "permall", scratch.directory + "/out"])
                #expect(read.status == 0, "\(fault): \(read)")
                let stored = FileManager.default.contents(atPath: scratch.directory + "/out").map(Array.init)
                #expect(stored == current || stored == next, "\(fault): the blob is neither version")
                #expect(try blk("state", "verify", "-f", format, image).status == 0, "\(fault)")
                if put.status == 0 {
                    // The fault lay past the put's last request of this kind: every step was covered.
                    #expect(stored == next, "\(fault): a put that succeeded did not commit")
                    current = next
                    break
                }
                #expect(put.status == 74, "\(fault): \(put)")
                #expect(put.stderr.contains(step.isMultiple(of: 2) ? "No space left on device" : "Input/output error"), "\(fault): \(put)")
                failedSteps += 1
                if stored == next { current = next }
            }
            #expect(failedSteps >= (size > 32 << 10 ? 2 : 1), "\(operation): only \(failedSteps) steps failed")
        }
        if format == "qcow2" {
            let checked = try run("/usr/bin/qemu-img", ["check", image])
            #expect(checked.status == 0 || checked.status == 3, "\(checked)")
        }
    }

    /// Each named step of each kind of commit failing: the command fails with the step's errno
    /// (74), and the store reads as before.
    @Test("every named step of init, put, remove and rekey failing", arguments: ["raw", "qcow2"])
    func failingNamedSteps(format: String) throws {
        let image = format == "raw" ? try scratch.rawImage(bytes: 2 << 20) : try scratch.qcow2Image(size: "2M")
        let small = scratch.directory + "/small", large = scratch.directory + "/large", key = scratch.directory + "/key"
        let otherLarge = scratch.directory + "/other-large"
        try scratch.write(small, Data("nvram".utf8))
        // Larger than an inline blob: written to an extent (blob_write) before the directory.
        try scratch.write(large, Data((0..<50_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }))
        try scratch.write(otherLarge, Data((0..<60_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }))
        try scratch.write(key, Data(String(repeating: "ab", count: 32).utf8))
        let commands: [(rule: String, arguments: [String])] = [
            ("write@store_init:1", ["init", image]),
            ("flush@store_init:2:enospc", ["init", image]),
        ]
        for (rule, arguments) in commands {
            let ran = try blk("state", arguments[0], "-f", format, "--inject-fault", rule, arguments[1])
            #expect(ran.status == 74, "\(rule): \(ran)")
        }
        #expect(try blk("state", "init", "--force", "-f", format, image).status == 0)
        #expect(try blk("state", "put", "-f", format, image, "permall", large).status == 0)
        // A failed flush after the directory write may still leave the new directory: the write
        // reached the page cache, and a later read sees it. That commit may show, the others not.
        let changes: [(rule: String, arguments: [String])] = [
            ("write@blob_write:1", ["put", image, "permall", otherLarge]),
            ("write@blob_write:1:enospc", ["put", image, "savestate", large]),
            ("flush@blob_write:1", ["put", image, "savestate", large]),
            ("write@directory_publish:1", ["put", image, "volatile", small]),
            ("write@directory_publish:1", ["remove", image, "permall"]),
            ("write@blob_write:1", ["rekey", "--new-key-file", key, image]),
            ("flush@directory_publish:1:enospc", ["put", image, "volatile", small]),
        ]
        var mayShow: Set<String> = []
        for (rule, arguments) in changes {
            let ran = try run(blkPath, ["state", arguments[0], "-f", format, "--inject-fault", rule] + arguments.dropFirst())
            #expect(ran.status == 74, "\(rule) \(arguments[0]): \(ran)")
            #expect(ran.stderr.contains(rule.hasSuffix("enospc") ? "No space left on device" : "Input/output error"), "\(rule): \(ran)")
            if rule.hasPrefix("flush@directory_publish") { mayShow.insert(arguments[2]) }
            let listed = try blk("state", "list", "--json", "-f", format, image)
            let names = Set(["permall", "volatile", "savestate"].filter { listed.stdout.contains("\"\($0)\"") })
            #expect(listed.status == 0 && names.subtracting(mayShow) == ["permall"], "\(rule) \(arguments[0]): \(listed)")
            let out = scratch.directory + "/out"
            #expect(try blk("state", "get", "-f", format, image, "permall", out).status == 0, "\(rule): still plain, still there")
            #expect(FileManager.default.contents(atPath: out) == FileManager.default.contents(atPath: large), "\(rule)")
        }
    }
}
