// qcow2 images with an external data file (data_file, data_file_raw) beside the real qemu-img and
// qemu-io 7.2: made by either tool, written by either, read by the other byte for byte, checked
// clean by qemu-img, mapped alike, locked alike; hostile ones refused with the image unchanged;
// a failing data file never leaves an L2 entry pointing at data that is not there.
import BlockLocking
import Foundation
import Testing

@Suite("qcow2 external data files beside QEMU")
struct Qcow2DataFileTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    func path(_ name: String) -> String { scratch.directory + "/" + name }

    func contents(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

    /// The guest's bytes as `program` reads them (qemu-img convert or blk convert to raw).
    func guest(_ image: String, by program: String) throws -> Data {
        let copy = path("guest-\(program.split(separator: "/").last!).raw")
        try? FileManager.default.removeItem(atPath: copy)
        let converted = try run(program, ["convert", "-O", "raw", image, copy])
        guard converted.status == 0 else { throw TestFailure("\(program) convert: \(converted)") }
        return try contents(copy)
    }

    /// A data-file image made by qemu-img, 4 MiB, with the data file at an absolute path as long
    /// as the image's.
    func qemuImage(raw: Bool) throws -> (image: String, data: String) {
        let image = path("disk.qcow2"), data = path("disk.extra")
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "data_file=\(data)" + (raw ? ",data_file_raw=on" : ""), image, "4M"])
        return (image, data)
    }

    /// `bytes` at `offset` of `data`, as a pattern write leaves them.
    func fill(_ data: inout Data, _ offset: Int, _ count: Int, _ byte: UInt8) {
        data.replaceSubrange(offset..<offset + count, with: Data(repeating: byte, count: count))
    }

    func autoclearBits(_ image: String) throws -> UInt8 { try contents(image)[95] }

    @Test("images QEMU made are read by blk, written by blk, then read by QEMU byte for byte", arguments: [false, true])
    func roundTrip(raw: Bool) throws {
        let (image, data) = try qemuImage(raw: raw)
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x11 0 100k", "-c", "write -P 0x22 1M 64k", "-c", "write -z 1088k 64k",
                    "-c", "write -P 0x33 3M 1k", image])
        var expected = Data(count: 4 << 20)
        fill(&expected, 0, 100 << 10, 0x11)
        fill(&expected, 1 << 20, 64 << 10, 0x22)
        fill(&expected, 3 << 20, 1 << 10, 0x33)
        #expect(try guest(image, by: blkPath) == expected)

        let written = try blk("io", "-c", "write -P 0x44 32k 96k", "-c", "write -P 0x55 2M 4k", "-c", "write -z 1M 64k",
                              "-c", "write -P 0x66 4032k 64k", image)
        #expect(written.status == 0, "\(written)")
        fill(&expected, 32 << 10, 96 << 10, 0x44)
        fill(&expected, 2 << 20, 4 << 10, 0x55)
        fill(&expected, 1 << 20, 64 << 10, 0)
        fill(&expected, 4032 << 10, 64 << 10, 0x66)
        #expect(try guest(image, by: "/usr/bin/qemu-img") == expected)
        let check = try run("/usr/bin/qemu-img", ["check", image])
        #expect(check.status == 0 && check.stdout.contains("No errors were found on the image."), "\(check)")
        let blkCheck = try blk("check", image)
        #expect(blkCheck.status == 0, "\(blkCheck)")
        // Raw external data: the data file alone is the disk, and blk kept the bit that says so.
        #expect(try autoclearBits(image) == (raw ? 2 : 0))
        if raw { #expect(try contents(data) == expected) }
    }

    @Test("blk create -o data_file makes what qemu-img makes: same line, same info, clean, written by QEMU", arguments: [false, true])
    func create(raw: Bool) throws {
        let options = "data_file=\(path("blk.data"))" + (raw ? ",data_file_raw=on" : "")
        let made = try blk("create", "-f", "qcow2", "-o", options, path("blk.qcow2"), "4M")
        let qemuMade = try run("/usr/bin/qemu-img", ["create", "-f", "qcow2", "-o", options.replacingOccurrences(of: "blk.data", with: "q.data"),
                                                     path("q.qcow2"), "4M"])
        #expect(made.status == 0, "\(made)")
        #expect(made.stdout.replacingOccurrences(of: "blk.", with: "q.") == qemuMade.stdout)
        let image = path("blk.qcow2")
        #expect(try contents(path("blk.data")).count == 4 << 20)
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x77 64k 200k", image])
        var expected = Data(count: 4 << 20)
        fill(&expected, 64 << 10, 200 << 10, 0x77)
        #expect(try guest(image, by: blkPath) == expected)
        let check = try run("/usr/bin/qemu-img", ["check", image])
        #expect(check.status == 0, "\(check)")
        if raw { #expect(try contents(path("blk.data")) == expected) }

        let blkInfo = try blk("info", "--json", image), qemuInfo = try run("/usr/bin/qemu-img", ["info", "--output=json", image])
        let blkObject = try JSONSerialization.jsonObject(with: Data(blkInfo.stdout.utf8)) as? [String: Any]
        let qemuObject = try JSONSerialization.jsonObject(with: Data(qemuInfo.stdout.utf8)) as? [String: Any]
        let blkData = ((blkObject?["format-specific"] as? [String: Any])?["data"] as? NSDictionary)
        let qemuData = ((qemuObject?["format-specific"] as? [String: Any])?["data"] as? NSDictionary)
        #expect(blkData != nil && blkData == qemuData, "\(blkInfo.stdout) against \(qemuInfo.stdout)")
        let text = try blk("info", image).stdout
        #expect(text.contains("    data file: \(path("blk.data"))\n    data file raw: \(raw)\n"), "\(text)")
    }

    @Test("blk create refuses what qemu-img refuses, with exit 64", arguments: [
        ("data_file_raw=on", "data-file-raw requires data-file"),
        ("data_file=x.data,data_file_raw=on,backing_file=base.qcow2", "Backing file and data-file-raw cannot be used at the same time"),
    ])
    func createRefusals(options: String, message: String) throws {
        var arguments = ["create", "-f", "qcow2"]
        if options.contains("backing_file") {
            try qemuImg(["create", "-q", "-f", "qcow2", path("base.qcow2"), "4M"])
            arguments += ["-b", path("base.qcow2"), "-F", "qcow2", "-o", "data_file=\(path("x.data")),data_file_raw=on"]
        } else {
            arguments += ["-o", options]
        }
        let refused = try run(blkPath, arguments + [path("refused.qcow2"), "4M"])
        #expect(refused.status == 64 && refused.stderr.contains(message), "\(refused)")
        #expect(!FileManager.default.fileExists(atPath: path("refused.qcow2")))
    }

    @Test("a relative data file name is resolved as QEMU 7.2 resolves it: from the working directory")
    func relativeName() throws {
        try FileManager.default.createDirectory(atPath: path("sub"), withIntermediateDirectories: true)
        func inScratch(_ program: String, _ arguments: [String]) throws -> Finished {
            try run("/bin/sh", ["-c", "cd \"$0\" && exec \"$@\"", scratch.directory, program] + arguments)
        }
        let made = try inScratch(blkPath, ["create", "-f", "qcow2", "-o", "data_file=rel.data", "sub/rel.qcow2", "1M"])
        #expect(made.status == 0, "\(made)")
        #expect(FileManager.default.fileExists(atPath: path("rel.data")) && !FileManager.default.fileExists(atPath: path("sub/rel.data")))
        #expect(try inScratch("/usr/bin/qemu-io", ["-f", "qcow2", "-c", "write -P 9 0 4k", "sub/rel.qcow2"]).status == 0)
        let read = try inScratch(blkPath, ["io", "-r", "-c", "read -P 9 0 4k", "sub/rel.qcow2"])
        #expect(read.status == 0, "\(read)")
        // From elsewhere, both tools look for the name in that folder and find nothing.
        let elsewhere = try run("/bin/sh", ["-c", "cd \"$0\" && exec \"$@\"", path("sub"), blkPath, "info", "rel.qcow2"])
        #expect(elsewhere.status == 66 && elsewhere.stderr.contains("Could not open 'rel.data'"), "\(elsewhere)")
    }

    @Test("blk map names the data file with its offsets, as qemu-img map does", arguments: [false, true])
    func map(raw: Bool) throws {
        let (image, _) = try qemuImage(raw: raw)
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 64k", "-c", "write -P 2 1M 128k", "-c", "write -z 2M 64k", image])
        for output in ["json", "human"] {
            let mine = try blk("map", "--output=\(output)", image)
            let theirs = try run("/usr/bin/qemu-img", ["map", "--output=\(output)", image])
            #expect(mine.status == 0 && mine.stdout == theirs.stdout, "\(mine.stdout) against \(theirs.stdout)")
        }
    }

    @Test("qemu-io holding the data file keeps blk from writing the image, and blk locks names it")
    func locking() throws {
        let (image, data) = try qemuImage(raw: false)
        let holder = try qemuHolder(OpenKind.rawKinds[0], data)
        defer { _ = try? holder.finish() }
        let refused = try blk("io", "-c", "write -P 1 0 4k", image)
        #expect(refused.status == 75 && refused.stderr.contains("Failed to get"), "\(refused)")
        // A reader shares the data file's writers, as QEMU's readers do (the metadata's file it
        // does not).
        let reader = try blk("io", "-r", "-c", "read 0 4k", image)
        let qemuReader = try run("/usr/bin/qemu-img", ["info", image])
        #expect(reader.status == 0 && qemuReader.status == 0, "\(reader) \(qemuReader)")

        // And the other way round: blk holding the image keeps qemu-io off the data file.
        _ = try holder.finish()
        let blkHolder = try LineProcess(blkPath, ["io", "-c", "write -P 1 0 4k", "-c", "sleep 60000", image])
        defer { blkHolder.kill9() }
        try waitUntilLocked(data, .qcow2ReadWrite, by: blkHolder)
        let qemu = try run("/usr/bin/qemu-io", ["-f", "raw", "-c", "write 0 512", data])
        #expect(qemu.status != 0 && qemu.stderr.contains("Failed to get"), "\(qemu)")
        let locks = try blk("locks", data)
        #expect(locks.stdout.contains("pid \(blkHolder.pid) (blk)"), "\(locks)")
    }

    /// A fresh qemu-img data-file image (64 KiB clusters, header length 112: the data file name
    /// extension at byte 112, its name at 120) with one cluster written, patched by `damage`.
    func damaged(_ damage: (inout Data, String) throws -> Void) throws -> (image: String, before: Data, dataBefore: Data) {
        let (image, data) = try qemuImage(raw: false)
        try qemuIO(["-f", "qcow2", "-c", "write -P 5 0 64k", image])
        var bytes = try contents(image)
        try damage(&bytes, data)
        try scratch.write(image, bytes)
        return (image, bytes, try contents(data))
    }

    /// The L2 table's offset: the first L1 entry's.
    func l2Offset(_ bytes: Data) -> Int {
        let l1 = bytes[40..<48].reduce(0) { $0 << 8 | Int($1) }
        return bytes[l1..<l1 + 8].reduce(0) { $0 << 8 | Int($1) } & 0x00ff_ffff_ffff_fe00
    }

    static let hostile: [(name: String, status: Int32, message: String)] = [
        ("NUL in the name", 65, "the name contains a NUL byte"),
        ("empty name", 65, "the name is empty"),
        ("bit without the extension", 69, "'data-file' is required for this image"),
        ("raw bit without the data file bit", 65, "data-file-raw requires a data file"),
        ("compressed cluster", 65, "Compressed cluster entry found in image with external data file"),
        ("data offset not the guest offset", 65, "differs from its guest offset"),
        ("names the image itself", 65, "it is the image file itself"),
        ("names a missing file", 66, "No such file or directory"),
    ]

    @Test("hostile data-file images are refused with their exit code, the image and data file unchanged",
          arguments: Qcow2DataFileTests.hostile.map { $0.name })
    func hostileImage(name: String) throws {
        let expected = Self.hostile.first { $0.name == name }!
        let (image, before, dataBefore) = try damaged { bytes, data in
            let nameStart = 120, nameLength = data.utf8.count
            switch name {
            case "NUL in the name": bytes[nameStart + 3] = 0
            case "empty name": bytes.replaceSubrange(116..<120, with: [0, 0, 0, 0])
            case "bit without the extension": bytes.replaceSubrange(112..<116, with: [0x12, 0x34, 0x56, 0x78])
            case "raw bit without the data file bit":
                bytes[79] = 0
                bytes[95] = 2
            case "compressed cluster": bytes[self.l2Offset(bytes)] |= 0x40
            case "data offset not the guest offset": bytes[self.l2Offset(bytes) + 5] = 0x01
            case "names the image itself", "names a missing file":
                let target = Array((name == "names the image itself" ? self.path("disk.qcow2") : self.path("gone.extra")).utf8)
                #expect(target.count == nameLength)
                bytes.replaceSubrange(nameStart..<nameStart + nameLength, with: target)
            default: Issue.record("no damage for \(name)")
            }
        }
        // Header damage is refused at open, before anything could be written. A damaged L2 entry
        // is found by the request that meets it: `blk io` then fails the command (1, as qemu-io),
        // and a writable open would mark the image corrupt, as QEMU's does, so only reads are run.
        let atOpen = !["compressed cluster", "data offset not the guest offset"].contains(name)
        var commands = [(["convert", "-O", "raw", image, path("out.raw")], expected.status),
                        (["io", "-r", "-c", "read 0 64k", image], atOpen ? expected.status : 1)]
        if atOpen { commands.append((["io", "-c", "write -P 1 0 4k", image], expected.status)) }
        for (arguments, status) in commands {
            let refused = try run(blkPath, arguments)
            #expect(refused.status == status && refused.stderr.contains(expected.message), "\(arguments): \(refused)")
        }
        #expect(try contents(image) == before)
        #expect(try contents(path("disk.extra")) == dataBefore)
    }

    @Test("a failed write or flush of the data file leaves no L2 entry pointing at it", arguments: ["write:1", "flush:1:always"])
    func dataFileFault(rule: String) throws {
        let (image, _) = try qemuImage(raw: false)
        try qemuIO(["-f", "qcow2", "-c", "write -P 3 0 64k", image])
        let failed = try blk("io", "--inject-data-file-fault", rule, "-c", "write -P 4 1M 128k", "-c", "flush", image)
        // blk io fails the command, as qemu-io does (1), with the error of the data file.
        #expect(failed.status == 1 && failed.stderr.contains("Input/output error"), "\(failed)")
        let check = try run("/usr/bin/qemu-img", ["check", image])
        #expect(check.status == 0, "\(check)")
        // No entry for the failed clusters reached the image: they still read as unallocated.
        let map = try run("/usr/bin/qemu-img", ["map", "--output=json", image])
        #expect(map.stdout.contains("{ \"start\": 65536, \"length\": 4128768, \"depth\": 0, \"present\": false, \"zero\": true, \"data\": false}"), "\(map.stdout)")
    }

    /// The image file's crash states of blk's writes into a data-file image. The harness follows
    /// one file: the data file is taken as the writes left it, which is what the order promises
    /// any state whose L2 entries reached the disk (the data file is flushed before them).
    @Test("every crash state of the image file checks clean or with leaks, each cluster as before or after")
    func crashStates() throws {
        let (image, _) = try qemuImage(raw: false)
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 192k", image])
        let before = try guest(image, by: "/usr/bin/qemu-img")
        let base = try contents(image)
        let journal = path("journal")
        try scratch.write(journal, Data())
        let wrote = try blk("io", "-f", "qcow2", "--record-writes", journal, "-c", "write -P 2 128k 256k", "-c", "write -P 3 1M 10k",
                            "-c", "flush", "-c", "write -z 0 64k", "-c", "write -P 4 3M 64k", image)
        #expect(wrote.status == 0, "\(wrote)")
        let after = try guest(image, by: "/usr/bin/qemu-img")
        let states = CrashStates(base: base, journal: try contents(journal))
        let checked = states.sample(Soak.enabled ? states.count : 30)
        let probe = path("crashed.qcow2")
        for (position, state) in checked.enumerated() {
            try states.image(state).write(to: URL(fileURLWithPath: probe))
            let blkCheck = try blk("check", "-f", "qcow2", probe)
            #expect(blkCheck.status == 0 || blkCheck.status == 3, "\(state.label): \(blkCheck)")
            if position.isMultiple(of: 10) {
                let qemuCheck = try run("/usr/bin/qemu-img", ["check", "-f", "qcow2", probe])
                #expect(qemuCheck.status == 0 || qemuCheck.status == 3, "\(state.label): \(qemuCheck)")
            }
            let crashed = try guest(probe, by: blkPath)
            for cluster in stride(from: 0, to: crashed.count, by: 65536) {
                let range = cluster..<cluster + 65536
                #expect(crashed[range] == before[range] || crashed[range] == after[range], "\(state.label): cluster at \(cluster)")
            }
        }
        print("qcow2 data file: \(states.count) crash states of the image file, \(checked.count) checked")
    }

    @Test("blk check counts no refcounts for data clusters, and qemu-img check agrees")
    func check() throws {
        let (image, _) = try qemuImage(raw: false)
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 1M", image])
        let mine = try blk("check", "--json", image)
        let theirs = try run("/usr/bin/qemu-img", ["check", "--output=json", image])
        #expect(mine.status == 0 && theirs.status == 0, "\(mine) \(theirs)")
        let blkObject = try JSONSerialization.jsonObject(with: Data(mine.stdout.utf8)) as? [String: Any]
        let qemuObject = try JSONSerialization.jsonObject(with: Data(theirs.stdout.utf8)) as? [String: Any]
        for key in ["check-errors", "allocated-clusters", "total-clusters", "image-end-offset"] {
            #expect(blkObject?[key] as? Int == qemuObject?[key] as? Int, "\(key): \(mine.stdout) against \(theirs.stdout)")
        }
    }
}
