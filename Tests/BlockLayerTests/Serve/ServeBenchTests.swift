// `blk bench serve`: blk serve beside qemu-nbd under nbdcopy and qemu-img bench. Run here with
// tiny images and two rounds to show every row is measured on both sides and printed with its
// ratio; what the figures must reach is the benchmark's to report on a quiet machine, not a
// test's to assert on a noisy one.
import Foundation
import Testing

@Suite("blk bench serve")
struct ServeBenchTests {
    static let rows = [
        "nbdcopy export → null, raw, 4 MiB", "nbdcopy export → null, qcow2 allocated, 4 MiB",
        "nbdcopy file → export, raw fresh, 4 MiB", "nbdcopy file → export, qcow2 fresh, 4 MiB",
        "qemu-img bench 300 reads of 4 KiB, step 1236 KiB, depth 16, raw",
        "qemu-img bench 300 reads of 4 KiB, step 1236 KiB, depth 16, qcow2 allocated",
        "qemu-img bench 64 writes of 64 KiB, depth 16, qcow2 fresh",
        "nbdcopy export → null, raw, 16 MiB (peak memory at 4× the size)",
    ]

    @Test("every row runs against both servers and is printed with both figures and the ratio; the files are removed")
    func rows() throws {
        let scratch = try Scratch()
        let bench = try run(blkPath, ["bench", "serve", "--size", "4M", "--reads", "300", "--rounds", "2", "--dir", scratch.directory],
                            within: 300)
        #expect(bench.status == 0, "\(bench)")
        let blocks = bench.stdout.components(separatedBy: "blk bench serve: ").dropFirst(2)
        #expect(blocks.map { $0.components(separatedBy: "\n")[0] } == Self.rows, "\(bench.stdout)")
        for block in blocks {
            let lines = block.components(separatedBy: "\n")
            #expect(lines.contains { $0.hasPrefix("  client     nbdcopy --connections 4 ") || $0.hasPrefix("  client     qemu-img bench ") }, "\(block)")
            #expect(lines.contains { $0.hasPrefix("  blk serve ") && $0.contains(" MB/s ") && $0.contains("peak RSS") }, "\(block)")
            #expect(lines.contains { $0.hasPrefix("  qemu-nbd  ") && $0.contains(" MB/s ") && $0.contains("peak RSS") }, "\(block)")
            #expect(lines.contains { $0.hasPrefix("  ratio      ") && $0.contains("× (target ") }, "\(block)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.directory).isEmpty, "the benchmark removes its images and socket")
    }

    @Test("--json gives every row with both servers' seconds and peak memory, and the ratio")
    func json() throws {
        let scratch = try Scratch()
        let bench = try run(blkPath, ["bench", "serve", "--json", "--size", "4M", "--reads", "300", "--rounds", "1", "--dir", scratch.directory],
                            within: 300)
        #expect(bench.status == 0, "\(bench)")
        let results = try #require(try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [[String: Any]])
        #expect(results.map { $0["scenario"] as? String } == Self.rows)
        for result in results {
            for key in ["blk-seconds", "qemu-nbd-seconds", "ratio"] {
                #expect((result[key] as? Double ?? 0) > 0, "\(key): \(result)")
            }
            for key in ["blk-peak-bytes", "qemu-nbd-peak-bytes", "bytes"] {
                #expect((result[key] as? Int ?? 0) > 0, "\(key): \(result)")
            }
        }
    }

    @Test("--only runs the rows whose name contains the text, and none is refused")
    func only() throws {
        let scratch = try Scratch()
        let bench = try run(blkPath, ["bench", "serve", "--json", "--only", "READS OF 4 KiB", "--size", "4M", "--reads", "300",
                                      "--rounds", "1", "--dir", scratch.directory], within: 300)
        #expect(bench.status == 0, "\(bench)")
        let results = try #require(try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [[String: Any]])
        #expect(results.map { $0["scenario"] as? String } == Self.rows.filter { $0.contains("reads of 4 KiB") })
        let none = try run(blkPath, ["bench", "serve", "--only", "no such row", "--size", "4M", "--dir", scratch.directory])
        #expect(none.status != 0 && none.stderr.contains("no such row"), "\(none)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.directory).isEmpty)
    }

    @Test("an image size that is not a whole number of MiB is refused before anything runs", arguments: ["1536K", "0", "2T"])
    func size(value: String) throws {
        let scratch = try Scratch()
        let result = try run(blkPath, ["bench", "serve", "--size", value, "--dir", scratch.directory])
        #expect(result.status == 64 && result.stderr.contains("Error:") && result.stdout.isEmpty, "\(result)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.directory).isEmpty)
    }
}
