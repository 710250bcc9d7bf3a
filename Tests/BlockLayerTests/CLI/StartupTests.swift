// Issue 21: `blk --version`, and `blk bench startup`, which times blk's short verbs as whole
// processes beside qemu-img's and qemu-io's. What the figures must reach is the benchmark's to
// report on a quiet machine, not a test's to assert on a noisy one.
import Foundation
import Testing

@Suite("start-up: blk --version and blk bench startup")
struct StartupTests {
    @Test("--version prints blk's version and exits 0, as qemu-img --version does")
    func version() throws {
        let result = try blk("--version")
        #expect(result.status == 0 && result.stdout.hasPrefix("blk version ") && result.stderr.isEmpty, "\(result)")
    }

    @Test("bench startup times the four verbs beside QEMU's tools, in one run, and removes its image")
    func bench() throws {
        let scratch = try Scratch()
        let bench = try run(blkPath, ["bench", "startup", "--json", "--rounds", "2", "--dir", scratch.directory], within: 120)
        #expect(bench.status == 0, "\(bench)")
        let results = try #require(try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [[String: Any]])
        #expect(results.map { $0["scenario"] as? String } == ["--version", "info", "locks", "io -c flush"])
        for result in results {
            #expect((result["blk-seconds"] as? Double ?? 0) > 0 && (result["baseline-seconds"] as? Double ?? 0) > 0
                    && (result["times-baseline"] as? Double ?? 0) > 0, "\(result)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.directory).isEmpty, "the benchmark removes its image")
    }

    @Test("a number of rounds out of range is refused before anything runs", arguments: ["0", "1001", "9223372036854775808"])
    func rounds(value: String) throws {
        let scratch = try Scratch()
        let result = try run(blkPath, ["bench", "startup", "--rounds", value, "--dir", scratch.directory])
        #expect(result.status == 64 && result.stderr.contains("Error:") && result.stdout.isEmpty, "\(result)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.directory).isEmpty)
    }
}
