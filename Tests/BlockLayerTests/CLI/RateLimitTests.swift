// `-r RATE` of blk commit and `--rate-limit RATE` of blk convert (qemu-img's `-r`): the copy takes at least the
// time its data needs at that rate — a lower bound, which a loaded machine only makes easier to
// meet — and its result is the same as without; a rate that is not a size is a usage error in
// qemu-img's words, before any image is opened.
import Foundation
import Testing

@Suite("rate limits of commit and convert")
struct RateLimitTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    static let qemuImg = "/usr/bin/qemu-img"

    /// A 16 MiB base and an overlay holding 6 MiB of data over it (two 4 MiB chunks of the copy).
    func overlay() throws -> (base: String, top: String) {
        let base = scratch.directory + "/base.qcow2", top = scratch.directory + "/top.qcow2"
        #expect(try run(Self.qemuImg, ["create", "-f", "qcow2", base, "16M"]).status == 0)
        #expect(try run(Self.qemuImg, ["create", "-f", "qcow2", "-b", base, "-F", "qcow2", top]).status == 0)
        let wrote = try run("/usr/bin/qemu-io", ["-f", "qcow2", "-c", "write -P 7 1M 4M", "-c", "write -P 8 9M 2M", top])
        #expect(wrote.status == 0, "\(wrote)")
        return (base, top)
    }

    func seconds(_ body: () throws -> Void) rethrows -> Double {
        let clock = ContinuousClock(), started = clock.now
        try body()
        let elapsed = clock.now - started
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    @Test("commit -r 2M copies 6 MiB in no less than 3 seconds, into the same base as without")
    func commit() throws {
        let (base, top) = try overlay()
        let expected = scratch.directory + "/expected.raw"
        #expect(try run(Self.qemuImg, ["convert", "-O", "raw", top, expected]).status == 0)
        let elapsed = try seconds {
            let committed = try blk("commit", "-r", "2M", top)
            #expect(committed.status == 0 && committed.stdout == "Image committed.\n", "\(committed)")
        }
        #expect(elapsed >= 2.9, "6 MiB at 2 MiB/s took \(elapsed) s")
        #expect(try run(Self.qemuImg, ["compare", "-f", "qcow2", "-F", "raw", base, expected]).status == 0)
        #expect(try run(Self.qemuImg, ["check", base]).status == 0)
    }

    @Test("convert --rate-limit 2M copies 6 MiB of data in no less than 3 seconds; 0 means no limit")
    func convert() throws {
        let (_, top) = try overlay()
        for rate in ["2M", "0"] {
            let output = scratch.directory + "/out-\(rate).qcow2"
            let elapsed = try seconds {
                let converted = try blk("convert", "--rate-limit", rate, "-O", "qcow2", top, output)
                #expect(converted.status == 0, "\(converted)")
            }
            if rate == "2M" { #expect(elapsed >= 2.9, "6 MiB at 2 MiB/s took \(elapsed) s") }
            #expect(try run(Self.qemuImg, ["compare", top, output]).status == 0)
        }
    }

    @Test("a rate that is not a size is refused in qemu-img's words, exit 64, the images untouched",
          arguments: ["abc", "1.5.5M", "99999999999999999999", "9Q"])
    func refused(rate: String) throws {
        let (base, top) = try overlay()
        let before = try Data(contentsOf: URL(fileURLWithPath: base))
        for arguments in [["commit", "-r", rate, top], ["convert", "--rate-limit", rate, "-O", "raw", top, scratch.directory + "/never.raw"]] {
            let refused = try run(blkPath, arguments)
            #expect(refused.status == 64 && refused.stderr.contains("Invalid rate limit specified. You may use k, M, G, T, P or E suffixes for"),
                    "\(arguments): \(refused)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: base)) == before)
        #expect(!FileManager.default.fileExists(atPath: scratch.directory + "/never.raw"))
    }
}
