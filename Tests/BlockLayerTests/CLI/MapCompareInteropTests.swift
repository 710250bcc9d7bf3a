// `blk map` beside qemu-img 7.2 on a matrix of images made by QEMU's own
// tools: each command line runs through both programs, and stdout must be the same byte for
// byte, the exit status the same, and stderr the same but for the program's name.
import Foundation
import Glibc
import Testing

/// The images of the matrix, small so that the whole matrix runs in seconds.
final class InteropImages {
    let scratch: Scratch
    var directory: String { scratch.directory }

    init() throws {
        scratch = try Scratch()
    }

    func path(_ name: String) -> String { directory + "/" + name }

    /// A sparse raw file: holes, a 20 KiB extent at 12 KiB, 1 MiB at 5 MiB.
    func sparseRaw() throws -> String {
        let image = try scratch.rawImage("sparse.raw", bytes: 10 << 20)
        try qemuIO(["-f", "raw", "-c", "write -P 0x11 12k 20k", "-c", "write -P 0x12 5M 1M", image])
        return image
    }

    /// A qcow2 image with every kind of cluster: data (one alone, three whose host clusters
    /// follow each other, and one written in place of an earlier one), zero without a cluster,
    /// zero with a cluster kept (write -z over data), a zero cluster unmapped (write -z -u over
    /// data), compressed, a partly written cluster, and unallocated ones between.
    func everyClusterKind(_ name: String = "kinds.qcow2") throws -> String {
        let image = path(name)
        try qemuImg(["create", "-q", "-f", "qcow2", image, "4M"])
        try qemuIO(["-f", "qcow2",
                    "-c", "write -P 0x21 0 64k",
                    "-c", "write -z 128k 64k",
                    "-c", "write -P 0x22 256k 64k", "-c", "write -z 256k 64k",
                    "-c", "write -P 0x23 384k 64k", "-c", "write -z -u 384k 64k",
                    "-c", "write -c -P 0x24 512k 64k", "-c", "write -c -P 0x25 576k 64k",
                    "-c", "write -P 0x26 1M 192k",
                    "-c", "write -P 0x27 2M 4k",
                    "-c", "write -P 0x28 3M 64k", "-c", "write -P 0x29 3M 64k",
                    image])
        return image
    }

    /// `source` converted by qemu-img with every cluster compressed.
    func compressed(from source: String) throws -> String {
        let image = path("compressed.qcow2")
        try qemuImg(["convert", "-c", "-f", "qcow2", "-O", "qcow2", source, image])
        return image
    }

    /// base (1 MiB) ← mid (2 MiB) ← top (4 MiB): each shorter than the image above it, and
    /// each holding some of the data; mid's zero cluster hides base's data below it.
    func chain() throws -> String {
        let base = path("base.qcow2"), mid = path("mid.qcow2"), top = path("top.qcow2")
        try qemuImg(["create", "-q", "-f", "qcow2", base, "1M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x31 0 64k", "-c", "write -P 0x32 512k 64k", "-c", "write -P 0x33 960k 64k", base])
        try qemuImg(["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", mid, "2M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x34 64k 64k", "-c", "write -z 512k 64k", "-c", "write -P 0x35 1536k 64k", mid])
        try qemuImg(["create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top, "4M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x36 128k 64k", "-c", "write -z 960k 64k", "-c", "write -P 0x37 3M 64k", top])
        return top
    }

    /// An image with two internal snapshots, written after each: the newer data lives in
    /// clusters copied on write, away from the guest order.
    func withSnapshots() throws -> String {
        let image = path("snapshots.qcow2")
        try qemuImg(["create", "-q", "-f", "qcow2", image, "2M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x41 0 256k", image])
        try qemuImg(["snapshot", "-c", "first", image])
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x42 64k 64k", "-c", "write -P 0x43 1M 64k", image])
        try qemuImg(["snapshot", "-c", "second", image])
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x44 128k 4k", image])
        return image
    }

    /// `source` as qemu-img converts it: all its guest bytes, in a new image of `format`.
    func converted(_ source: String, to format: String, name: String) throws -> String {
        let image = path(name)
        try qemuImg(["convert", "-O", format, source, image])
        return image
    }

    /// A copy of `source` with `commands` run on it by qemu-io.
    func copy(_ source: String, name: String, format: String, _ commands: [String] = []) throws -> String {
        let image = path(name)
        try FileManager.default.copyItem(atPath: source, toPath: image)
        if !commands.isEmpty { try qemuIO(["-f", format] + commands.flatMap { ["-c", $0] } + [image]) }
        return image
    }
}

/// Runs `arguments` through blk and qemu-img; what differs, or nil.
func differenceFromQEMU(_ arguments: [String]) throws -> String? {
    let ours = try run(blkPath, arguments)
    let theirs = try run("/usr/bin/qemu-img", arguments)
    let ourErrors = ours.stderr.replacingOccurrences(of: "blk: ", with: "qemu-img: ")
    guard ours.stdout == theirs.stdout, ours.status == theirs.status, ourErrors == theirs.stderr else {
        return "\(arguments.joined(separator: " "))\n--- blk:\n\(ours)\n--- qemu-img:\n\(theirs)"
    }
    return nil
}

@Suite("blk map beside qemu-img map")
struct MapInteropTests {
    static let ranges: [[String]] = [
        [], ["--start-offset", "100", "--max-length", "70000"], ["-s", "64k", "-l", "1M"], ["--start-offset", "1536"],
        ["--max-length", "0"], ["--start-offset", "64M"], ["-l", "1T"],
        ["-s", "9223372036854775807", "-l", "9223372036854775807"],
    ]

    func expectSameMaps(_ image: String, format: String, extra: [String] = []) throws {
        for range in Self.ranges {
            for output in [["--output=human"], ["--output=json"]] {
                let difference = try differenceFromQEMU(["map", "-f", format] + extra + output + range + [image])
                #expect(difference == nil, "\(difference ?? "")")
            }
        }
    }

    @Test("a sparse raw file: its holes and extents")
    func sparseRaw() throws {
        let images = try InteropImages()
        try expectSameMaps(try images.sparseRaw(), format: "raw")
    }

    @Test("qcow2 with every kind of cluster: data, zero, allocated zero, compressed, partial, unallocated")
    func everyClusterKind() throws {
        let images = try InteropImages()
        try expectSameMaps(try images.everyClusterKind(), format: "qcow2")
    }

    @Test("a compressed image: JSON runs without offsets, and human output's refusal")
    func compressedImage() throws {
        let images = try InteropImages()
        try expectSameMaps(try images.compressed(from: try images.everyClusterKind()), format: "qcow2")
    }

    @Test("a three-deep backing chain with shorter backing images: depth, present and file per run")
    func backingChain() throws {
        let images = try InteropImages()
        try expectSameMaps(try images.chain(), format: "qcow2")
    }

    @Test("an image with internal snapshots, and beside a writer with -U")
    func snapshots() throws {
        let images = try InteropImages()
        let image = try images.withSnapshots()
        try expectSameMaps(image, format: "qcow2")
        let writer = try qemuHolder(OpenKind.qcow2Kinds[0], image)
        defer { _ = try? writer.finish() }
        #expect(try differenceFromQEMU(["map", "-U", "--output=json", image]) == nil)
    }

    @Test("without -f the format is probed, and --json is --output=json")
    func probedAndJSONFlag() throws {
        let images = try InteropImages()
        let image = try images.everyClusterKind()
        #expect(try differenceFromQEMU(["map", image]) == nil)
        let theirs = try run("/usr/bin/qemu-img", ["map", "--output=json", image])
        let ours = try blk("map", "--json", image)
        #expect(ours.status == 0 && ours.stdout == theirs.stdout, "\(ours)")
    }
}
