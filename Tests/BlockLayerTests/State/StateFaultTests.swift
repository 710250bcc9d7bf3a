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
}
