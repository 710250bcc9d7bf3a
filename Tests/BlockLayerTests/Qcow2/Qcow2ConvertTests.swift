// `blk convert` between raw and qcow2 in every direction, and with -c: QEMU reads blk's copies
// byte for byte (qemu-img compare) and finds them clean, compressed clusters included.
import Foundation
import Testing

@Suite("blk convert")
struct Qcow2ConvertTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    /// A 2 GiB raw image with patterns, a zeroed run inside data, and incompressible bytes.
    func sourceImage() throws -> String {
        let source = try scratch.rawImage("source.raw", bytes: 2 << 30)
        try qemuIO(["-f", "raw", "-c", "write -P 0x31 0 3M", "-c", "write -z 1M 64k", "-c", "write -P 0x32 1G 100k",
                    "-c", "write -P 0x33 2047M 1M", source])
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: source))
        try handle.seek(toOffset: 100 << 20)
        var generator = SystemRandomNumberGenerator()
        handle.write(Data((0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }))
        try handle.close()
        return source
    }

    func fileSize(_ path: String) throws -> Int { (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0 }

    func expectIdentical(_ first: String, _ second: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let compared = try run("/usr/bin/qemu-img", ["compare", first, second])
        #expect(compared.status == 0, "\(compared)", sourceLocation: sourceLocation)
    }

    @Test("raw → qcow2 → qcow2 (4 KiB clusters) → raw: every copy identical, every qcow2 clean")
    func roundTrip() throws {
        let source = try sourceImage()
        let qcow2 = scratch.directory + "/a.qcow2", small = scratch.directory + "/b.qcow2", raw = scratch.directory + "/c.raw"
        #expect(try blk("convert", "-O", "qcow2", source, qcow2).status == 0)
        #expect(try blk("convert", "-O", "qcow2", "--cluster-size", "4k", qcow2, small).status == 0)
        #expect(try blk("convert", small, raw).status == 0)
        for image in [qcow2, small] { #expect(try run("/usr/bin/qemu-img", ["check", image]).status == 0) }
        for image in [qcow2, small, raw] { try expectIdentical(source, image) }
        // Zeroes stay unallocated: 3 MiB + 100 KiB + 1 MiB + 1 MiB of data, not 2 GiB.
        #expect(try fileSize(qcow2) < 8 << 20)
    }

    @Test("-c compresses what shrinks and stores the rest as it is; QEMU reads it and blk can write over it")
    func compressed() throws {
        let source = try sourceImage()
        let image = scratch.directory + "/compressed.qcow2"
        let converted = try blk("convert", "-c", "-p", "-O", "qcow2", source, image)
        #expect(converted.status == 0, "\(converted)")
        #expect(converted.stderr.contains("100%"), "progress is shown with -p")
        try expectIdentical(source, image)
        let checked = try run("/usr/bin/qemu-img", ["check", "--output=json", image])
        #expect(checked.status == 0, "\(checked)")
        let figures = try JSONSerialization.jsonObject(with: Data(checked.stdout.utf8)) as? [String: Any]
        // 3 MiB less the zeroed 64 KiB, 100 KiB and 1 MiB of patterns compress (47 + 2 + 16
        // clusters); the 16 random clusters do not.
        #expect(figures?["compressed-clusters"] as? Int == 65, "\(checked.stdout)")
        #expect(figures?["allocated-clusters"] as? Int == 81, "\(checked.stdout)")
        #expect(try fileSize(image) < 2 << 20)
        #expect(try blk("check", "--json", image).stdout.contains("\"compressed-clusters\" : 65"))

        let overwritten = try blk("io", image, "-c", "write -P 0x34 1000 100", "-c", "write -P 0x35 1G 64k")
        #expect(overwritten.status == 0, "\(overwritten)")
        #expect(try run("/usr/bin/qemu-img", ["check", image]).status == 0)
        try qemuIO(["-f", "qcow2", "-r", "-c", "read -P 0x31 0 1000", "-c", "read -P 0x34 1000 100", "-c", "read -P 0x31 1100 1047476", "-c", "read -P 0 1M 64k",
                    "-c", "read -P 0x35 1G 64k", "-c", "read -P 0x32 1073807360 36k", image])
    }

    @Test("-t none (O_DIRECT) and -t unsafe (never flushed) make the same copy as the default")
    func cacheModes() throws {
        let source = try scratch.qcow2Image("modes.qcow2", size: "256M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x41 0 1M", "-c", "write -P 0x42 100M 3000", source])
        for mode in ["none", "unsafe", "writeback"] {
            let copy = scratch.directory + "/copy-\(mode).qcow2"
            let converted = try blk("convert", "-t", mode, "-O", "qcow2", source, copy)
            #expect(converted.status == 0, "\(converted)")
            try expectIdentical(source, copy)
            #expect(try run("/usr/bin/qemu-img", ["check", copy]).status == 0)
        }
    }

    @Test("-c into a raw image is refused before anything is created")
    func compressedRaw() throws {
        let source = try scratch.rawImage()
        let refused = try blk("convert", "-c", "-O", "raw", source, scratch.directory + "/out.raw")
        #expect(refused.status == 69 && refused.stderr == "blk: Compression not supported for this file format\n", "\(refused)")
        #expect(!FileManager.default.fileExists(atPath: scratch.directory + "/out.raw"))
    }
}
