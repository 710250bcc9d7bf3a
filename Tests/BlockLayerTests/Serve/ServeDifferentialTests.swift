// `blk serve` beside qemu-nbd: a seeded random client (Tests/Fixtures/nbd_differential.py, libnbd
// in strict mode) sends the same writes, reads, zeroes (with and without NO_HOLE and FAST_ZERO),
// trims, flushes and block status queries to both, each serving its own copy of one image with
// the same --discard and --detect-zeroes, and compares every answer; then the two files must be
// the same to qemu-img compare. The script says what may legitimately differ and why.
import Foundation
import Testing

@Suite("blk serve beside qemu-nbd: the same answers to a seeded random client")
struct ServeDifferentialTests {
    /// Format, --discard, --detect-zeroes, seed.
    static let cases: [(String, String, String, Int)] = [
        ("raw", "ignore", "off", 1), ("raw", "unmap", "unmap", 2), ("raw", "ignore", "on", 3),
        ("qcow2", "ignore", "off", 4), ("qcow2", "unmap", "unmap", 5), ("qcow2", "ignore", "on", 6), ("qcow2", "unmap", "off", 7),
    ]

    @Test("every read, error and block status agrees, and the images end the same", arguments: cases)
    func sameAnswers(format: String, discard: String, detectZeroes: String, seed: Int) throws {
        let scratch = try Scratch()
        let image = format == "raw" ? try scratch.rawImage(bytes: 8 << 20) : try scratch.qcow2Image(size: "8M")
        let copy = scratch.directory + "/qemu-nbd." + format
        let copied = try run("/usr/bin/cp", ["--sparse=always", image, copy])
        #expect(copied.status == 0, "\(copied)")
        let served = try ServedExport(scratch, [image], options: ["-f", format, "--persistent", "--discard", discard,
                                                                  "--detect-zeroes", detectZeroes])
        let script = testsDirectory.appendingPathComponent("Fixtures/nbd_differential.py").path
        let client = try run("/usr/bin/python3", [script, copy, served.uri, format, discard, detectZeroes, String(seed), "300"])
        #expect(client.status == 0 && client.stdout == "ok\n", "seed \(seed): \(client)")
        #expect(try served.stop() == 0)
        let compared = try run("/usr/bin/qemu-img", ["compare", "-f", format, "-F", format, copy, image])
        #expect(compared.status == 0, "seed \(seed): \(compared)")
        if format == "qcow2" {
            let check = try run("/usr/bin/qemu-img", ["check", image])
            #expect(check.status == 0, "\(check)")
        }
    }
}
