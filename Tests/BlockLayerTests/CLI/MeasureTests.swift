// `blk measure` beside qemu-img 7.2 measure: the same figures, text and JSON byte for byte, for
// sizes alone and for copies of raw and qcow2 images made by QEMU's tools, over target cluster
// sizes, refcount widths and the other options qcow2 measures by; and what blk itself writes
// staying within the figures. Hostile numbers are refused with exit 64, hostile images with 65.
import Foundation
import Glibc
import Testing

@Suite("blk measure beside qemu-img measure")
struct MeasureInteropTests {
    /// The qcow2 target options of the matrix: cluster sizes, refcount widths, the old version,
    /// extended L2 entries and every preallocation.
    static let qcow2Options: [[String]] = [
        [], ["-o", "cluster_size=512"], ["-o", "cluster_size=2M"], ["-o", "cluster_size=4k,refcount_bits=1"],
        ["-o", "refcount_bits=64"], ["-o", "cluster_size=512,refcount_bits=8"], ["-o", "compat=0.10"],
        ["-o", "extended_l2=on"], ["-o", "extended_l2=on,cluster_size=2M"], ["-o", "preallocation=metadata"],
        ["-o", "preallocation=falloc", "-o", "cluster_size=128k"], ["-o", "preallocation=full,refcount_bits=2"],
    ]

    /// Both output forms of `arguments` for every target of the matrix, through both programs:
    /// the same output, or where qemu-img refuses, a usage error (64) with its message.
    func expectSameFigures(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let targets = Self.qcow2Options.map { ["-O", "qcow2"] + $0 } + [["-O", "raw"], []]
        for target in targets {
            for output in [[], ["--output=json"]] {
                let command = ["measure"] + target + output + arguments
                let theirs = try run("/usr/bin/qemu-img", command)
                guard theirs.status == 0 else {
                    let ours = try run(blkPath, command)
                    #expect(ours.status == 64 && "qemu-img: " + ours.stderr.dropFirst(5) == theirs.stderr,
                            "\(command)\n--- blk:\n\(ours)\n--- qemu-img:\n\(theirs)", sourceLocation: sourceLocation)
                    continue
                }
                let difference = try differenceFromQEMU(command)
                #expect(difference == nil, "\(difference ?? "")", sourceLocation: sourceLocation)
            }
        }
    }

    @Test("--size alone: zero, unaligned, large and 1 TiB sizes")
    func sizesAlone() throws {
        for size in ["0", "1", "1000", "65535", "10M", "10485761", "1G", "100G", "1T"] {
            try expectSameFigures(["--size", size])
        }
    }

    @Test("a raw input: empty, partly allocated (unaligned runs) and fully allocated")
    func rawInputs() throws {
        let images = try InteropImages()
        let empty = try images.scratch.rawImage("empty.raw", bytes: 10 << 20)
        let partly = try images.sparseRaw()
        try qemuIO(["-f", "raw", "-c", "write -P 0x13 8000000 70000", partly])
        let full = try images.scratch.rawImage("full.raw", bytes: 3 << 20 + 1000)
        try qemuIO(["-f", "raw", "-c", "write -P 0x14 0 \(3 << 20 + 1000)", full])
        for image in [empty, partly, full] {
            try expectSameFigures(["-f", "raw", image])
        }
    }

    @Test("a qcow2 input: every cluster kind, compressed, a backing chain, snapshots, small and large clusters")
    func qcow2Inputs() throws {
        let images = try InteropImages()
        let kinds = try images.everyClusterKind()
        let small = images.path("small.qcow2"), large = images.path("large.qcow2")
        try qemuImg(["convert", "-O", "qcow2", "-o", "cluster_size=512", kinds, small])
        try qemuImg(["convert", "-O", "qcow2", "-o", "cluster_size=2M", kinds, large])
        for image in [kinds, try images.compressed(from: kinds), try images.chain(), try images.withSnapshots(), small, large] {
            try expectSameFigures([image])
        }
        // With a new backing file, every cluster counts.
        #expect(try differenceFromQEMU(["measure", "-O", "qcow2", "-o", "backing_file=base.qcow2", kinds]) == nil)
    }

    @Test("bitmaps: a v3 input's persistent bitmaps are counted for a v3 target, not for v2 or raw")
    func bitmaps() throws {
        let images = try InteropImages()
        let image = try images.everyClusterKind()
        try qemuImg(["bitmap", "--add", image, "first"])
        try qemuImg(["bitmap", "--add", "-g", "512", image, "a-much-longer-bitmap-name-that-takes-more-directory-room"])
        try expectSameFigures([image])
        let version2 = images.path("v2.qcow2")
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "compat=0.10", version2, "3M"])
        try expectSameFigures([version2])
    }

    @Test("-U measures an image a writer holds")
    func forceShare() throws {
        let images = try InteropImages()
        let image = try images.everyClusterKind()
        let writer = try qemuHolder(OpenKind.qcow2Kinds[0], image)
        defer { _ = try? writer.finish() }
        #expect(try differenceFromQEMU(["measure", "-U", "-O", "qcow2", image]) == nil)
    }
}

@Suite("blk measure: what blk writes stays within the figures")
struct MeasureExactnessTests {
    func figures(_ arguments: String...) throws -> (required: Int64, fullyAllocated: Int64) {
        let measured = try run(blkPath, ["measure", "--output=json"] + arguments)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(measured.stdout.utf8)) as? [String: Any], "\(measured)")
        return (try #require(object["required"] as? Int64), try #require(object["fully-allocated"] as? Int64))
    }

    func fileSizes(_ path: String) throws -> (size: Int64, allocated: Int64) {
        var status = stat()
        guard stat(path, &status) == 0 else { throw TestFailure("stat \(path)") }
        return (Int64(status.st_size), Int64(status.st_blocks) * 512)
    }

    @Test("blk convert -O qcow2 of each input fits in the required size, for every cluster size")
    func convertFits() throws {
        let images = try InteropImages()
        let full = try images.scratch.rawImage("full.raw", bytes: 5 << 20 + 512)
        try qemuIO(["-f", "raw", "-c", "write -P 0x14 0 \(5 << 20 + 512)", full])
        let inputs = [try images.sparseRaw(), full, try images.everyClusterKind(), try images.chain()]
        for (index, input) in inputs.enumerated() {
            for clusterSize in ["512", "64k", "2M"] {
                let copy = images.path("copy-\(index)-\(clusterSize).qcow2")
                let converted = try blk("convert", "-O", "qcow2", "--cluster-size", clusterSize, input, copy)
                #expect(converted.status == 0, "\(converted)")
                let measured = try figures("-O", "qcow2", "-o", "cluster_size=\(clusterSize)", input)
                let written = try fileSizes(copy)
                #expect(written.size <= measured.required && written.allocated <= measured.required,
                        "\(input) at \(clusterSize): \(written) against \(measured)")
            }
        }
    }

    @Test("blk create with preallocation makes a file of exactly the fully allocated size, as qemu-img create does",
          arguments: ["metadata", "falloc", "full"])
    func preallocatedIsExact(preallocation: String) throws {
        let scratch = try Scratch()
        for (size, clusterSize) in [("10M", "64k"), ("3000k", "512"), ("5M", "2M"), ("1", "64k")] {
            let image = scratch.directory + "/\(preallocation)-\(size)-\(clusterSize).qcow2"
            let created = try blk("create", "-f", "qcow2", "--cluster-size", clusterSize, "--preallocation", preallocation, image, size)
            #expect(created.status == 0, "\(created)")
            let measured = try figures("-O", "qcow2", "--size", size, "-o", "cluster_size=\(clusterSize),preallocation=\(preallocation)")
            #expect(try fileSizes(image).size == measured.fullyAllocated, "\(size) at \(clusterSize)")
        }
    }
}

@Suite("blk measure: hostile numbers and images")
struct MeasureHostileTests {
    @Test("a size or option out of range, or not a number, is a usage error (64) with a message",
          arguments: [
            ["--size", "-1"], ["--size", "99999999999999999999"], ["--size", "abc"], ["--size", "16E"], ["--size", ""],
            ["--size", "9223372036854775807"], ["--size", "8E", "-O", "qcow2"], ["--size", "1T", "-O", "qcow2", "-o", "cluster_size=512"],
            ["--size", "1G", "-O", "qcow2", "-o", "cluster_size=99999999999999999999"], ["--size", "1G", "-O", "qcow2", "-o", "cluster_size=3000"],
            ["--size", "1G", "-O", "qcow2", "-o", "cluster_size=-512"], ["--size", "1G", "-O", "qcow2", "-o", "refcount_bits=3"],
            ["--size", "1G", "-O", "qcow2", "-o", "refcount_bits=-16"], ["--size", "1G", "-O", "qcow2", "-o", "refcount_bits=128"],
            ["--size", "1G", "-O", "qcow2", "-o", "refcount_bits=99999999999999999999999"],
            ["--size", "1G", "-O", "qcow2", "-o", "compat=0.10,refcount_bits=8"], ["--size", "1G", "-O", "qcow2", "-o", "compat=2"],
            ["--size", "1G", "-O", "qcow2", "-o", "extended_l2=maybe"], ["--size", "1G", "-O", "qcow2", "-o", "extended_l2=on,cluster_size=4k"],
            ["--size", "1G", "-O", "qcow2", "-o", "preallocation=lots"], ["--size", "1G", "-O", "qcow2", "-o", "nonsense=1"],
            ["--size", "1G", "-O", "raw", "-o", "cluster_size=64k"], ["--size", "1G", "-O", "qcow2", "-o", "=1"],
            [], ["--size", "1G", "/dev/null"],
          ])
    func usageErrors(arguments: [String]) throws {
        let ours = try run(blkPath, ["measure"] + arguments)
        #expect(ours.status == 64 && ours.stdout.isEmpty && !ours.stderr.isEmpty, "\(arguments): \(ours)")
        // qemu-img refuses every one of them too (or, past its 64-bit arithmetic, prints nonsense
        // that blk does not).
        if arguments != ["--size", "9223372036854775807"] {
            #expect(try run("/usr/bin/qemu-img", ["measure"] + arguments).status != 0, "\(arguments)")
        }
    }

    @Test("a format without a driver is refused (69)")
    func unknownFormat() throws {
        let ours = try blk("measure", "--size", "1G", "-O", "vmdk")
        #expect(ours.status == 69 && ours.stderr == "blk: Unknown file format 'vmdk'\n", "\(ours)")
    }

    @Test("every read of the input failing in turn, the L2 tables' included: exit 74 with the failure named, or the right figures")
    func failingReads() throws {
        let images = try InteropImages()
        let image = try images.chain()
        let expected = try run("/usr/bin/qemu-img", ["measure", "-O", "qcow2", image])
        var failures = 0
        for read in 1...40 {
            let ours = try run(blkPath, ["measure", "--inject-fault", "read:\(read)", "-O", "qcow2", image])
            if ours.status == 0 {
                #expect(ours.stdout == expected.stdout, "read \(read): \(ours)")
                break
            }
            failures += 1
            #expect(ours.status == 74 && ours.stderr.contains("Input/output error"), "read \(read): \(ours)")
        }
        // The top image's header, header cluster, L1 table and L2 table (faults are injected
        // into the image named, not its backing images): the last one read by the walk.
        #expect(failures >= 4)
    }

    @Test("a truncated qcow2 input and one whose L1 table points past the file end exit 65, without a crash")
    func hostileImages() throws {
        let images = try InteropImages()
        let truncated = try images.everyClusterKind("truncated.qcow2")
        guard Glibc.truncate(truncated, 70_000) == 0 else { throw TestFailure("truncate") }
        let pointing = try images.everyClusterKind("pointing.qcow2")
        // The first L1 entry: its L2 table far past the end of the file.
        let header = try Data(contentsOf: URL(fileURLWithPath: pointing)).prefix(48)
        let l1Offset = header[40..<48].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: pointing))
        try handle.seek(toOffset: l1Offset)
        try handle.write(contentsOf: Data([0x80, 0, 0, 0x10, 0, 0, 0, 0]))
        try handle.close()
        // The truncated image does not open; the other opens, and its allocation cannot be read
        // (a raw target does not ask for it: every guest byte is a byte of the file).
        for (image, target, status) in [(truncated, "qcow2", 65), (truncated, "raw", 65), (pointing, "qcow2", 65), (pointing, "raw", 0)] {
            let ours = try blk("measure", "-O", target, image)
            #expect(ours.status == status, "\(image) to \(target): \(ours)")
            #expect(status == 0 || ours.stderr.hasPrefix("blk: qcow2: "), "\(ours)")
        }
    }
}
