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

    /// Arguments blk parses itself, without ArgumentParser (`IMAGE` stands for the image's path).
    static let shortVerbs: [[String]] = [
        ["info", "IMAGE"], ["info", "--json", "IMAGE"], ["info", "-f", "qcow2", "-r", "-U", "IMAGE"],
        ["info", "IMAGE", "--format", "raw", "--read-only", "--force-share"], ["info", "-f", "vmdk", "IMAGE"],
        ["info", "IMAGE.missing"], ["locks", "IMAGE"], ["locks", "--json", "IMAGE"],
        ["io", "-c", "flush", "IMAGE"], ["io", "--json", "-r", "-c", "flush", "IMAGE"],
        ["io", "-c", "write -P 7 0 4k", "-c", "read -P 7 0 4k", "-c", "flush", "IMAGE"], ["io", "-c", "bogus", "IMAGE"],
        ["io", "-U", "-c", "flush", "IMAGE"],
    ]

    @Test("blk's own parse of the short verbs ends as ArgumentParser's does (`--` before the image: ArgumentParser's)",
          arguments: StartupTests.shortVerbs)
    func shortVerbsAsArgumentParser(arguments: [String]) throws {
        let scratch = try Scratch()
        var results: [Finished] = []
        for viaArgumentParser in [false, true] {
            let image = try scratch.qcow2Image(viaArgumentParser ? "parsed.qcow2" : "own.qcow2")
            var words = arguments.map { $0.replacingOccurrences(of: "IMAGE", with: image) }
            if viaArgumentParser, let index = words.firstIndex(where: { $0.hasPrefix(image) }) { words += ["--", words.remove(at: index)] }
            var result = try run(blkPath, words)
            // The same image name in both outputs; timings left out.
            for text in [\Finished.stdout, \Finished.stderr] {
                result[keyPath: text] = result[keyPath: text].replacingOccurrences(of: image, with: "IMAGE")
                    .split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.contains("ops/sec") }.joined(separator: "\n")
            }
            results.append(result)
        }
        #expect(results[0].status == results[1].status && results[0].stdout == results[1].stdout
                && results[0].stderr == results[1].stderr, "blk's parse: \(results[0])\nArgumentParser's: \(results[1])")
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
