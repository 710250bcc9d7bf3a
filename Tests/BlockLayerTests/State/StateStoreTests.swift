// `blk state`: round trips in raw and qcow2 images, plain, with a key file and with a
// passphrase; the four key and corruption cases with their words and exit codes; bad input.
import Foundation
import Testing

@Suite("device-state store: round trips, keys, bad input")
struct StateStoreTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    func file(_ name: String, _ bytes: [UInt8]) throws -> String {
        let path = scratch.directory + "/" + name
        try scratch.write(path, Data(bytes))
        return path
    }

    func randomBytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255) } }

    func expect(_ finished: Finished, status: Int32, saying words: String? = nil,
                sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(finished.status == status, "\(finished)", sourceLocation: sourceLocation)
        if let words { #expect(finished.stderr.contains(words), "\(finished)", sourceLocation: sourceLocation) }
    }

    @Test("round trips", arguments: ["raw", "qcow2"], ["plain", "key", "hex key", "scrypt", "pbkdf2"])
    func roundTrip(format: String, protection: String) throws {
        let image = format == "raw" ? try scratch.rawImage(bytes: 4 << 20) : try scratch.qcow2Image(size: "4M")
        var key: [String] = []
        switch protection {
        case "key": key = ["--key-file", try file("key", randomBytes(32))]
        case "hex key": key = ["--key-file", try file("key.hex", Array((randomBytes(32).map { String(format: "%02x", $0) }.joined() + "\n").utf8))]
        case "scrypt": key = ["--passphrase-file", try file("pass", Array("correct horse battery staple\n".utf8))]
        case "pbkdf2": key = ["--passphrase-file", try file("pass", Array("correct horse battery staple\n".utf8)), "--kdf", "pbkdf2"]
        default: break
        }
        let blobs = [("permall", randomBytes(20_000)), ("volatile", randomBytes(4_000)), ("savestate", randomBytes(300_000)),
                     ("empty", [])]
        #expect(try run(blkPath, ["state", "list", image]).stdout == "no state yet\n")
        for (name, bytes) in blobs {
            expect(try run(blkPath, ["state", "put"] + key + [image, name, try file(name, bytes)]), status: 0)
        }
        // Replace one: the new version wins, the others are unchanged.
        let replaced = randomBytes(21_000)
        expect(try run(blkPath, ["state", "put"] + key + [image, "permall", try file("permall.2", replaced)]), status: 0)
        for (name, bytes) in blobs {
            let out = scratch.directory + "/out-" + name
            expect(try run(blkPath, ["state", "get"] + key + [image, name, out]), status: 0)
            #expect(FileManager.default.contents(atPath: out).map(Array.init) == (name == "permall" ? replaced : bytes), "\(name)")
        }
        let listed = try run(blkPath, ["state", "list", "--json", image])
        let json = try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [String: Any]
        #expect(json?["generation"] as? Int == 6, "init, four puts, one replacement")
        #expect((json?["blobs"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == ["empty", "permall", "savestate", "volatile"])
        #expect(json?["encryption"] as? String == (protection == "plain" ? "none" : protection.hasSuffix("key") ? "key" : "passphrase"))
        expect(try run(blkPath, ["state", "verify"] + key + [image]), status: 0)
        expect(try run(blkPath, ["state", "remove", image, "volatile"]), status: 0)
        expect(try run(blkPath, ["state", "get"] + key + [image, "volatile", "-"]), status: 66, saying: "no blob 'volatile'")
        if format == "qcow2" {
            #expect(try run("/usr/bin/qemu-img", ["check", image]).status == 0)
        }
    }

    @Test("missing key, key for plain state, wrong key, and damage are four different errors")
    func keyAndCorruptionCases() throws {
        let image = try scratch.qcow2Image(size: "4M")
        let plainImage = try scratch.rawImage(bytes: 1 << 20)
        let key = try file("key", randomBytes(32))
        let wrongKey = try file("wrong", randomBytes(32))
        let blob = try file("blob", randomBytes(50_000))
        expect(try blk("state", "put", "--key-file", key, image, "permall", blob), status: 0)
        expect(try blk("state", "put", plainImage, "permall", blob), status: 0)

        expect(try blk("state", "get", image, "permall", "-"), status: 77, saying: "state is encrypted; a key is required")
        expect(try blk("state", "verify", "--key-file", key, plainImage), status: 77, saying: "a key was given but the state is not encrypted")
        expect(try blk("state", "verify", "--key-file", wrongKey, image), status: 77, saying: "wrong key")
        let passphrase = try file("pass", Array("hunter2".utf8))
        expect(try blk("state", "verify", "--passphrase-file", passphrase, image), status: 77, saying: "encrypted with a key file")
        expect(try blk("state", "verify", "--key-file", try file("short", randomBytes(17)), image), status: 77,
               saying: "32 raw bytes or 64 hex digits")

        // One flipped byte of ciphertext, found through QEMU's map of where the cluster is: damage.
        let listed = try JSONSerialization.jsonObject(with: Data(try blk("state", "list", "--json", image).stdout.utf8)) as? [String: Any]
        let record = (listed?["blobs"] as? [[String: Any]])?.first
        let guestOffset = try #require(record?["offset"] as? Int)
        let hostOffset = try hostOffset(of: image, guestOffset: guestOffset + 1000)
        let before = try Data(contentsOf: URL(fileURLWithPath: image))
        try flipByte(in: image, at: hostOffset)
        let damaged = try blk("state", "verify", "--key-file", key, image)
        expect(damaged, status: 65, saying: "blob 'permall' fails its checksum")
        #expect(!damaged.stderr.contains("wrong key"))
        expect(try blk("state", "get", "--key-file", key, image, "permall", "-"), status: 65)
        // With the wrong key, the key problem is found first, before any blob is read.
        expect(try blk("state", "verify", "--key-file", wrongKey, image), status: 77, saying: "wrong key")
        try flipByte(in: image, at: hostOffset)
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == before, "reads and verifies wrote nothing")
        expect(try blk("state", "verify", "--key-file", key, image), status: 0)
    }

    /// Where a guest byte of a qcow2 image lies in its file, as qemu-img map says.
    func hostOffset(of image: String, guestOffset: Int) throws -> Int {
        let mapped = try run("/usr/bin/qemu-img", ["map", "--output=json", image])
        let extents = try JSONSerialization.jsonObject(with: Data(mapped.stdout.utf8)) as? [[String: Any]] ?? []
        for extent in extents {
            guard let start = extent["start"] as? Int, let length = extent["length"] as? Int, let offset = extent["offset"] as? Int,
                  (start..<start + length).contains(guestOffset) else { continue }
            return offset + guestOffset - start
        }
        throw TestFailure("guest offset \(guestOffset) is not mapped: \(mapped.stdout)")
    }

    func flipByte(in path: String, at offset: Int) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(offset))
        let byte = try handle.read(upToCount: 1)![0]
        try handle.seek(toOffset: UInt64(offset))
        try handle.write(contentsOf: [byte ^ 0x40])
    }

    @Test("rekey: encrypt, change key, change to a passphrase, decrypt — atomically, blobs unchanged")
    func rekey() throws {
        let image = try scratch.rawImage(bytes: 2 << 20)
        let bytes = randomBytes(70_000)
        let blob = try file("blob", bytes)
        let first = try file("k1", randomBytes(32)), second = try file("k2", randomBytes(32))
        let passphrase = try file("pass", Array("a long passphrase\n".utf8))
        expect(try blk("state", "put", image, "permall", blob), status: 0)
        expect(try blk("state", "rekey", "--new-key-file", first, image), status: 0)
        expect(try blk("state", "get", image, "permall", "-"), status: 77, saying: "a key is required")
        expect(try blk("state", "rekey", "--key-file", first, "--new-key-file", second, image), status: 0)
        expect(try blk("state", "verify", "--key-file", first, image), status: 77, saying: "wrong key")
        expect(try blk("state", "rekey", "--key-file", second, "--new-passphrase-file", passphrase, image), status: 0)
        expect(try blk("state", "rekey", "--passphrase-file", passphrase, "--decrypt", image), status: 0)
        let out = try blk("state", "get", image, "permall", scratch.directory + "/out")
        expect(out, status: 0)
        #expect(FileManager.default.contents(atPath: scratch.directory + "/out").map(Array.init) == bytes)
    }

    @Test("bad input: names, sizes, damaged slots, a newer format, a disk with other data")
    func badInput() throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        let blob = try file("blob", randomBytes(1000))
        expect(try blk("state", "put", image, "", blob), status: 64, saying: "must not be empty")
        expect(try blk("state", "put", image, String(repeating: "n", count: 256), blob), status: 64, saying: "at most 255 bytes")
        let invalid = try run("/bin/sh", ["-c", "\"$0\" state put \"$1\" \"$(printf 'bad\\377name')\" \"$2\"", blkPath, image, blob])
        expect(invalid, status: 64, saying: "valid UTF-8")
        expect(try blk("state", "put", image, "huge", try file("huge", randomBytes(2 << 20))), status: 74, saying: "needs")
        expect(try blk("state", "list", image), status: 0)

        // Damage the newer slot: the older serves (the state one commit back), with a warning.
        expect(try blk("state", "put", image, "permall", blob), status: 0)
        let second = randomBytes(1000)
        expect(try blk("state", "put", image, "permall", try file("blob2", second)), status: 0)
        let listed = try JSONSerialization.jsonObject(with: Data(try blk("state", "list", "--json", image).stdout.utf8)) as? [String: Any]
        let slots = listed?["slots"] as? [String]
        let newer = slots?.firstIndex(of: "generation 3") ?? 0
        let slotOffset = 4096 + newer * 65536
        try flipByte(in: image, at: slotOffset + 30)
        let fallback = try blk("state", "list", "--json", image)
        expect(fallback, status: 0, saying: "fails its checksum")
        #expect(fallback.stdout.contains("\"generation\" : 2"))
        #expect(fallback.stdout.contains("damaged"))
        expect(try blk("state", "verify", image), status: 0)
        // The next commit rewrites the damaged slot; both are whole again.
        expect(try blk("state", "put", image, "permall", blob), status: 0)
        #expect(!(try blk("state", "list", "--json", image).stdout.contains("damaged")))
        // Damage to the older slot: the newer one serves, as it would anyway, with a warning.
        let whole = try JSONSerialization.jsonObject(with: Data(try blk("state", "list", "--json", image).stdout.utf8)) as? [String: Any]
        let older = (whole?["slots"] as? [String])?.firstIndex(of: "generation 2") ?? 0
        try flipByte(in: image, at: 4096 + older * 65536 + 30)
        let newerServes = try blk("state", "list", "--json", image)
        expect(newerServes, status: 0, saying: "fails its checksum")
        #expect(newerServes.stdout.contains("\"generation\" : 3"), "\(newerServes)")
        expect(try blk("state", "put", image, "permall", blob), status: 0)

        // Both slots damaged: corrupt, nothing served.
        try flipByte(in: image, at: 4096 + 30)
        try flipByte(in: image, at: 4096 + 65536 + 30)
        expect(try blk("state", "verify", image), status: 65, saying: "no valid directory")
        expect(try blk("state", "init", "--force", image), status: 0)
        expect(try blk("state", "list", image), status: 0)

        // A superblock from format version 2: refused, not touched.
        try patch(image, at: 8, [0, 0, 0, 2])
        let before = try Data(contentsOf: URL(fileURLWithPath: image))
        expect(try blk("state", "list", image), status: 69, saying: "format version 2")
        expect(try blk("state", "put", image, "x", blob), status: 69, saying: "format version 2")
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == before)

        // A disk holding something else: refused unless --force.
        let disk = try scratch.rawImage("other.raw", bytes: 1 << 20)
        try patch(disk, at: 512 * 1000, Array("a file system, say".utf8))
        expect(try blk("state", "put", disk, "x", blob), status: 65, saying: "not a device-state store")
        expect(try blk("state", "init", disk), status: 65, saying: "--force")
        expect(try blk("state", "init", "--force", disk), status: 0)
        expect(try blk("state", "put", disk, "x", blob), status: 0)

        // A disk too small for a store.
        let tiny = try scratch.rawImage("tiny.raw", bytes: 8192)
        expect(try blk("state", "put", tiny, "x", blob), status: 64, saying: "needs at least")
    }

    func patch(_ path: String, at offset: Int, _ bytes: [UInt8]) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(offset))
        try handle.write(contentsOf: bytes)
    }

    @Test("CRC32C: the check value of \"123456789\", and long blobs (the three-stream path) against a bitwise reference")
    func checksums() throws {
        let image = try scratch.rawImage(bytes: 2 << 20)
        func storedChecksum(_ bytes: [UInt8]) throws -> String? {
            let put = try blk("state", "put", "--json", image, "blob", try file("blob", bytes))
            let json = try JSONSerialization.jsonObject(with: Data(put.stdout.utf8)) as? [[String: Any]]
            return json?.first?["crc32c"] as? String
        }
        #expect(try storedChecksum(Array("123456789".utf8)) == "e3069283", "RFC 3720's check value")
        for count in [1, 7, 4096 * 3 - 1, 4096 * 3, 4096 * 3 + 5, 100_003] {
            let bytes = randomBytes(count)
            var crc: UInt32 = 0xffff_ffff
            for byte in bytes {
                crc ^= UInt32(byte)
                for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
            }
            #expect(try storedChecksum(bytes) == String(format: "%08x", ~crc), "\(count) bytes")
        }
    }

    @Test("blk bench state runs and reports each commit beside its baseline")
    func bench() throws {
        let ran = try run(blkPath, ["bench", "state", "--rounds", "3", "--json", "--dir", scratch.directory], within: 120)
        #expect(ran.status == 0, "\(ran)")
        let json = try JSONSerialization.jsonObject(with: Data(ran.stdout.utf8)) as? [String: Any]
        #expect((json?["baseline-microseconds"] as? Double ?? 0) > 0)
        #expect((json?["commit-microseconds"] as? [String: Double])?.count == 6)
        #expect((json?["crc-gigabytes-per-second"] as? Double ?? 0) > 0)
    }
}
