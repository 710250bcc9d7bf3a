// Numbers on the command line and in `blk io` scripts: each is bounded and checked before use,
// so a huge or malformed one is a usage error (64) that says what is taken — never a trap
// (`--timeout 1e10`, `sleep 9223372036854775807`), nor memory filled before a range check
// (`write 0 2G` on a 1 MiB image filled 2 GB).
import Foundation
import Glibc
import Testing

@Suite("numbers on the command line")
struct NumberOptionTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    func expectUsage(_ arguments: [String], saying words: String, image: String? = nil) throws {
        let before = try image.map { try Data(contentsOf: URL(fileURLWithPath: $0)) }
        let result = try runMeasuringMemory(blkPath, arguments, within: 30)
        #expect(result.status == 64 && result.stderr.contains(words), "\(arguments): \(result)")
        #expect(result.peakResidentKiB < 256 << 10, "\(arguments): peak RSS \(result.peakResidentKiB) KiB")
        if let image, let before {
            #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == before, "\(arguments) wrote to the image")
        }
    }

    @Test("a timeout out of range is refused on every command that takes one",
          arguments: ["1e10", "1e300", "inf", "nan", "-1", "1000000.5", "ten"])
    func timeouts(value: String) throws {
        let image = try scratch.rawImage()
        let taken = "seconds from 0 to 1000000"
        for command in [["state", "list"], ["state", "verify"], ["state", "put"], ["state", "get"], ["state", "remove"],
                        ["state", "init"], ["state", "rekey", "--decrypt"], ["state", "import", "--swtpm", scratch.directory],
                        ["state", "export", "--swtpm", scratch.directory]] {
            let names = command[1] == "put" || command[1] == "get" || command[1] == "remove" ? [image, "permall"] : [image]
            try expectUsage(command + ["--timeout=" + value] + names, saying: taken, image: image)
        }
        try expectUsage(["io", "--timeout=" + value, "-c", "flush", image], saying: taken, image: image)
        try expectUsage(["hold", "--timeout=" + value, image, "--", "true"], saying: taken)
    }

    @Test("timeouts in range still work, decimals included")
    func timeoutsInRange() throws {
        let image = try scratch.rawImage()
        #expect(try blk("state", "list", "--timeout", "1000000", "-f", "raw", image).status == 0)
        #expect(try blk("io", "--timeout", "0.25", "-f", "raw", "-c", "lock exclusive", "-c", "unlock", image).status == 0)
        #expect(try blk("hold", "--timeout", "2.5", image, "--", "true").status == 0)
    }

    @Test("io scripts: sleeps and lengths out of range are refused before the image is opened", arguments: [
        (command: "sleep 9223372036854775807", words: "usage: sleep MILLISECONDS"),
        (command: "sleep 1000000001", words: "usage: sleep MILLISECONDS"),
        (command: "sleep -1", words: "sleep: unknown option -1"),
        (command: "read 0 3G", words: "read: length cannot exceed 2147483648, given 3G"),
        (command: "write -P 1 0 1E", words: "write: length cannot exceed 2147483648, given 1E"),
        (command: "write 0 99999999999999999999", words: "usage: write"),
        (command: "write 8E 1", words: "usage: write"),
    ])
    func scriptNumbers(command: String, words: String) throws {
        let image = try scratch.rawImage()
        try expectUsage(["io", "-f", "raw", "-c", command, image], saying: words, image: image)
    }

    @Test("io ranges are checked against the image before any buffer is made", arguments: [
        "write 0 2G", "read 0 2G", "write -c 0 2G", "write -z 0 4E", "read 9223372036854775807 1", "write 1M 1", "read 1048575 2",
        "write -P 1 4611686018427387904 2G",
    ])
    func ranges(command: String) throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        let before = try Data(contentsOf: URL(fileURLWithPath: image))
        // As qemu-io: that command fails (status 1) and the next one still runs.
        let result = try runMeasuringMemory(blkPath, ["io", "-f", "raw", "-c", command, "-c", "read 0 512", image], within: 30)
        #expect(result.status == 1 && result.stderr.contains("reach past the end of the image (1048576 bytes)")
                && result.stdout.contains("read 512/512 bytes at offset 0"), "\(command): \(result)")
        #expect(result.peakResidentKiB < 256 << 10, "\(command): peak RSS \(result.peakResidentKiB) KiB")
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == before, "\(command) wrote to the image")
    }

    @Test("benchmark counts and sizes out of range are refused before anything runs", arguments: [
        ["bench", "io", "-c", "9223372036854775807"], ["bench", "io", "-c", "0"], ["bench", "io", "-d", "100000"],
        ["bench", "io", "-s", "3G"], ["bench", "io", "--rounds", "9223372036854775807"],
        ["bench", "convert", "--rounds", "9223372036854775807"], ["bench", "state", "--rounds", "-1"],
        ["bench", "lock", "--lease-rounds", "-1"], ["bench", "lock", "--iterations", "0"], ["bench", "cache", "--size", "0"],
    ])
    func benchmarkNumbers(arguments: [String]) throws {
        let result = try run(blkPath, arguments + ["--dir", scratch.directory], within: 30)
        #expect(result.status == 64 && result.stderr.contains("Error:"), "\(arguments): \(result)")
    }
}
