// `blk map` and `blk compare` beside qemu-img 7.2 on a matrix of images made by QEMU's own
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
        #expect(try differenceFromQEMU(["compare", "-U", image, image]) == nil)
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

@Suite("blk compare beside qemu-img compare")
struct CompareInteropTests {
    func expectSameVerdict(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        for quiet in [[], ["-q"]] {
            let difference = try differenceFromQEMU(["compare"] + quiet + arguments)
            #expect(difference == nil, "\(difference ?? "")", sourceLocation: sourceLocation)
        }
    }

    @Test("identical contents in different layouts: raw, qcow2, compressed, a chain and its flat copy, snapshots")
    func identical() throws {
        let images = try InteropImages()
        let kinds = try images.everyClusterKind()
        let raw = try images.converted(kinds, to: "raw", name: "kinds.raw")
        let compressed = try images.compressed(from: kinds)
        let top = try images.chain()
        let flat = try images.converted(top, to: "qcow2", name: "flat.qcow2")
        let snapshots = try images.withSnapshots()
        let snapshotsRaw = try images.converted(snapshots, to: "raw", name: "snapshots.raw")
        for pair in [[kinds, raw], [raw, kinds], [kinds, compressed], [compressed, raw], [top, flat], [flat, top], [snapshots, snapshotsRaw]] {
            try expectSameVerdict(pair)
            try expectSameVerdict(["-s"] + pair)
        }
        try expectSameVerdict(["-f", "qcow2", "-F", "raw", kinds, raw])
    }

    @Test("different contents: the first differing sector, in data, over zeroes and past a shorter backing image")
    func different() throws {
        let images = try InteropImages()
        let kinds = try images.everyClusterKind()
        let raw = try images.converted(kinds, to: "raw", name: "kinds.raw")
        let top = try images.chain()
        let flat = try images.converted(top, to: "qcow2", name: "flat.qcow2")
        let cases: [(String, String, [String])] = [
            (kinds, "in-data.qcow2", ["write -P 0x99 1030k 1k"]),
            (kinds, "over-unallocated.qcow2", ["write -P 0x99 1700k 512"]),
            (kinds, "over-zero.qcow2", ["write -P 0x99 130k 3k"]),
            (kinds, "in-compressed.qcow2", ["write -P 0x99 600k 1"]),
            (kinds, "zeroed.qcow2", ["write -z 0 64k"]),
            (flat, "past-backing.qcow2", ["write -P 0x99 2100k 4k"]),
        ]
        for (source, name, commands) in cases {
            let changed = try images.copy(source, name: name, format: "qcow2", commands)
            let original = source == kinds ? raw : top
            try expectSameVerdict([original, changed])
            try expectSameVerdict([changed, original])
            try expectSameVerdict(["-s", original, changed])
        }
    }

    @Test("strict mode: allocation that differs where the contents do not")
    func strictAllocation() throws {
        let images = try InteropImages()
        let kinds = try images.everyClusterKind()
        let unallocatedZeroes = images.path("empty.qcow2")
        try qemuImg(["create", "-q", "-f", "qcow2", unallocatedZeroes, "4M"])
        let zeroCluster = try images.copy(unallocatedZeroes, name: "zero-cluster.qcow2", format: "qcow2", ["write -z 1M 64k"])
        // The same bytes, in two clusters that do not follow each other, or in one run.
        let split = images.path("split.qcow2"), whole = images.path("whole.qcow2")
        try qemuImg(["create", "-q", "-f", "qcow2", split, "128k"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 64k 64k", "-c", "write -P 1 0 64k", split])
        try qemuImg(["create", "-q", "-f", "qcow2", whole, "128k"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 128k", whole])
        for pair in [[unallocatedZeroes, zeroCluster], [zeroCluster, unallocatedZeroes], [split, whole], [kinds, try images.compressed(from: kinds)]] {
            try expectSameVerdict(pair)
            try expectSameVerdict(["-s"] + pair)
        }
    }

    @Test("images of different sizes: the tail must be zeroes; strict mode refuses at once")
    func sizeMismatch() throws {
        let images = try InteropImages()
        let small = images.path("small.qcow2"), emptyTail = images.path("empty-tail.qcow2")
        try qemuImg(["create", "-q", "-f", "qcow2", small, "1M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 5 0 64k", small])
        try qemuImg(["create", "-q", "-f", "qcow2", emptyTail, "3M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 5 0 64k", "-c", "write -z 2M 64k", emptyTail])
        let dataTail = try images.copy(emptyTail, name: "data-tail.qcow2", format: "qcow2", ["write -P 6 1600k 4k"])
        let differentHead = try images.copy(dataTail, name: "different-head.qcow2", format: "qcow2", ["write -P 7 0 512"])
        for pair in [[small, emptyTail], [emptyTail, small], [small, dataTail], [dataTail, small], [small, differentHead]] {
            try expectSameVerdict(pair)
            try expectSameVerdict(["-s"] + pair)
        }
    }

    @Test("an image that cannot be opened: exit 2")
    func unopenable() throws {
        let images = try InteropImages()
        let image = try images.sparseRaw()
        let missing = images.path("missing.qcow2")
        for pair in [[image, missing], [missing, image]] {
            let ours = try run(blkPath, ["compare"] + pair)
            let theirs = try run("/usr/bin/qemu-img", ["compare"] + pair)
            #expect(ours.status == 2 && theirs.status == 2 && ours.stdout.isEmpty, "\(ours)")
        }
    }

    @Test("unallocated runs are compared unread: two 1 TiB images, a few KiB of reads")
    func readsOnlyAllocated() throws {
        guard TracedCommand.available else { return }
        let images = try InteropImages()
        let first = images.path("first.qcow2"), second = images.path("second.qcow2")
        for image in [first, second] {
            try qemuImg(["create", "-q", "-f", "qcow2", image, "1T"])
            try qemuIO(["-f", "qcow2", "-c", "write -P 8 700G 64k", image])
        }
        let log = images.path("strace.log")
        let traced = try run(TracedCommand.stracePath, ["-f", "-qq", "-e", "trace=pread64,preadv,preadv2,read", "-o", log,
                                                        blkPath, "compare", first, second])
        #expect(traced.status == 0 && traced.stdout == "Images are identical.\n", "\(traced)")
        // Each line ends "= N", the bytes the call returned.
        let bytesRead = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
            .compactMap { line in line.split(separator: "=").last.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } }
            .reduce(0, +)
        #expect(bytesRead < 16 << 20, "read \(bytesRead) bytes of two 1 TiB images")
    }
}

@Suite("blk bench map and bench compare")
struct MapCompareBenchTests {
    @Test("numbers out of range are refused before anything runs", arguments: [
        ["bench", "map", "--writes", "0"], ["bench", "map", "--size", "4k"], ["bench", "map", "--rounds", "9223372036854775807"],
        ["bench", "compare", "--size", "4k"], ["bench", "compare", "--rounds", "0"],
        ["map", "--start-offset", "-1", "IMAGE"], ["map", "--max-length", "8E", "IMAGE"], ["map", "--output", "xml", "IMAGE"],
    ])
    func hostileNumbers(arguments: [String]) throws {
        let scratch = try Scratch()
        let image = try scratch.rawImage()
        let result = try run(blkPath, arguments.map { $0 == "IMAGE" ? image : $0 } + (arguments[0] == "bench" ? ["--dir", scratch.directory] : []))
        #expect(result.status == 64 && result.stderr.contains("Error:") && result.stdout.isEmpty, "\(arguments): \(result)")
    }

    func expectBothReported(_ arguments: [String], scenarios: Int, directory: String) throws {
        let bench = try run(blkPath, arguments + ["--json", "--rounds", "1", "--dir", directory], within: 120)
        #expect(bench.status == 0, "\(bench)")
        let results = try #require(try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [[String: Any]])
        #expect(results.count == scenarios)
        for result in results {
            #expect((result["blk-seconds"] as? Double ?? 0) > 0 && (result["qemu-img-seconds"] as? Double ?? 0) > 0, "\(result)")
            #expect((result["ratio"] as? Double ?? 0) > 0 && result["same-output"] as? Bool == true, "\(result)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty, "the benchmark removes its images")
    }

    @Test("bench map maps the same image with blk and qemu-img, both formats, and the maps agree")
    func map() throws {
        let scratch = try Scratch()
        try expectBothReported(["bench", "map", "--size", "4G", "--writes", "64"], scenarios: 2, directory: scratch.directory)
    }

    @Test("bench compare compares the same pairs with blk and qemu-img, and both find them identical")
    func compare() throws {
        let scratch = try Scratch()
        try expectBothReported(["bench", "compare", "--size", "16M"], scenarios: 3, directory: scratch.directory)
    }
}
