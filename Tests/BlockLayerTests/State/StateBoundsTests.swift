// Sizes, offsets and generations read from a hostile store: a directory naming a 20 GiB blob in
// a 384 KiB qcow2 crashed `verify`, `get` and `export` (exit 134), a 3 GiB one made `verify`
// take 6.3 GB, and a generation of 2^64 − 1 trapped every commit (SIGILL). Each must end as
// damage (65) in bounded memory, with the image's bytes unchanged; blobs up to the documented
// maximum still stream through in chunks.
import DeviceState
import Foundation
import Glibc
import Testing

@Suite("device-state store: sizes and generations from a hostile image")
struct StateBoundsTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    /// Where slot B starts (the slot the first `put` after `init` writes), and the fields of its
    /// first entry when that blob is named "permall" (docs/state.md §Directory slots).
    static let slotA = 4096, slotB = 4096 + 65536
    static let generationField = 8
    static let storedLengthField = 100 + 2 + 7 + 1, plainLengthField = storedLengthField + 8, offsetField = storedLengthField + 28

    /// A 40 KiB blob (kept in an extent) named "permall" in a store on a sparse raw disk of
    /// `diskBytes`: slot A holds generation 1, slot B generation 2.
    func storeWithExtentBlob(diskBytes: Int) throws -> String {
        let image = try scratch.rawImage("crafted.raw", bytes: diskBytes)
        let blob = scratch.directory + "/permall"
        try scratch.write(blob, Data((0..<40_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }))
        let put = try blk("state", "put", "-f", "raw", image, "permall", blob)
        guard put.status == 0 else { throw TestFailure("put: \(put)") }
        return image
    }

    /// Writes `value` big-endian over slot B's field at `field`, clears slot A (so no older
    /// generation serves instead), and recomputes slot B's checksum, as a hostile writer would.
    func craft(_ image: String, field: Int, value: UInt64) throws {
        let file = try FileHandle(forUpdating: URL(fileURLWithPath: image))
        defer { try? file.close() }
        try file.seek(toOffset: UInt64(Self.slotA))
        try file.write(contentsOf: Data(count: 65536))
        try file.seek(toOffset: UInt64(Self.slotB))
        var slot = [UInt8](try file.read(upToCount: 4096) ?? Data())
        for index in 0..<8 { slot[field + index] = UInt8(truncatingIfNeeded: value >> (56 - 8 * index)) }
        let used = slot[16..<20].reduce(0) { $0 << 8 | Int($1) }
        let checksum = CRC32C.checksum(Array(slot[0..<used - 4]))
        for index in 0..<4 { slot[used - 4 + index] = UInt8(truncatingIfNeeded: checksum >> (24 - 8 * index)) }
        try file.seek(toOffset: UInt64(Self.slotB))
        try file.write(contentsOf: Data(slot))
    }

    func qcow2(from raw: String) throws -> String {
        let image = scratch.directory + "/crafted.qcow2"
        let converted = try run("/usr/bin/qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, image])
        guard converted.status == 0 else { throw TestFailure("qemu-img convert: \(converted)") }
        return image
    }

    /// Runs a reading command on a crafted image: refused as damage, no trap, no write, and
    /// well under 256 MiB of memory (blk itself takes about 20).
    func expectRefused(_ arguments: [String], image: String, saying words: String) throws {
        let before = try Data(contentsOf: URL(fileURLWithPath: image))
        let result = try runMeasuringMemory(blkPath, arguments, within: 60)
        #expect(result.status == 65 && result.stderr.contains(words), "\(arguments): \(result)")
        #expect(result.peakResidentKiB < 256 << 10, "\(arguments): peak RSS \(result.peakResidentKiB) KiB")
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == before, "\(arguments) wrote to the image")
    }

    @Test("a blob claiming more than the maximum, in a small qcow2 image, is damage before anything is allocated",
          arguments: [UInt64(20) << 30, UInt64(3) << 30, UInt64(16 << 20) + 1])
    func oversizedBlob(claimed: UInt64) throws {
        let raw = try storeWithExtentBlob(diskBytes: 32 << 30)
        try craft(raw, field: Self.storedLengthField, value: claimed)
        try craft(raw, field: Self.plainLengthField, value: claimed)
        let image = try qcow2(from: raw)
        let export = scratch.directory + "/swtpm"
        for command in [["verify", image], ["list", image], ["get", image, "permall", scratch.directory + "/out"],
                        ["export", "--swtpm", export, image]] {
            try expectRefused(["state", command[0], "-f", "qcow2"] + command.dropFirst(), image: image, saying: "claims \(claimed) bytes")
        }
        #expect(!FileManager.default.fileExists(atPath: export + "/tpm2-00.permall"))
    }

    @Test("an extent offset or length that wraps past 2^64 is damage, not a trap", arguments: [
        (field: offsetField, value: UInt64.max & ~4095),
        (field: offsetField, value: UInt64(1) << 63),
    ])
    func wrappingExtent(field: Int, value: UInt64) throws {
        let image = try storeWithExtentBlob(diskBytes: 1 << 20)
        try craft(image, field: field, value: value)
        try expectRefused(["state", "verify", "-f", "raw", image], image: image, saying: "impossible extent")
        try expectRefused(["state", "list", "-f", "raw", image], image: image, saying: "impossible extent")
    }

    @Test("every commit on a directory at generation 2^64 − 1 is refused as damage, not a trap")
    func lastGeneration() throws {
        let image = try storeWithExtentBlob(diskBytes: 1 << 20)
        try craft(image, field: Self.generationField, value: .max)
        let blob = scratch.directory + "/small"
        try scratch.write(blob, Data("nvram".utf8))
        let key = scratch.directory + "/key"
        try scratch.write(key, Data(repeating: 0x42, count: 32))
        // A swtpm folder with one plain state file: header (version 2, minimum 1, 10 bytes, no
        // flags, total length), then one data record.
        let swtpm = scratch.directory + "/swtpm"
        try FileManager.default.createDirectory(atPath: swtpm, withIntermediateDirectories: true)
        let state = [UInt8](repeating: 0x11, count: 100)
        func bigEndian(_ value: Int, _ count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: value >> (8 * (count - 1 - $0))) } }
        try scratch.write(swtpm + "/tpm2-00.permall", Data([2, 1, 0, 10, 0, 0] + bigEndian(16 + state.count, 4) + [0, 1] + bigEndian(state.count, 4) + state))
        for command in [["put", "-f", "raw", image, "other", blob], ["put", "-f", "raw", image, "permall", blob],
                        ["remove", "-f", "raw", image, "permall"], ["rekey", "-f", "raw", "--new-key-file", key, image],
                        ["import", "-f", "raw", "--swtpm", swtpm, image]] {
            try expectRefused(["state"] + command, image: image, saying: "the last there is")
        }
        // Reads still work: the store is readable, only its next generation does not exist.
        #expect(try blk("state", "verify", "-f", "raw", image).status == 0)
    }

    @Test("a blob of the maximum size streams through verify in chunks; one byte more is refused on put",
          arguments: [false, true])
    func maximumBlob(encrypted: Bool) throws {
        let image = try scratch.rawImage("max.raw", bytes: 40 << 20)
        let key = scratch.directory + "/key"
        try scratch.write(key, Data(repeating: 0x42, count: 32))
        let keyArguments = encrypted ? ["--key-file", key] : []
        let random = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/dev/urandom"))
        let bytes = try random.read(upToCount: StateDirectory.maximumBlobBytes) ?? Data()
        try random.close()
        let blob = scratch.directory + "/blob"
        try scratch.write(blob, bytes)
        #expect(try run(blkPath, ["state", "put", "-f", "raw"] + keyArguments + [image, "permall", blob]).status == 0)
        let out = scratch.directory + "/out"
        #expect(try run(blkPath, ["state", "get", "-f", "raw"] + keyArguments + [image, "permall", out]).status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == bytes, "a blob read in chunks and segments comes back whole")

        // verify holds a chunk, not the blob: it stays within a few MiB of `list`, which reads
        // no blob at all (reading the whole blob took twice its size more).
        let listed = try runMeasuringMemory(blkPath, ["state", "list", "-f", "raw", image])
        let verified = try runMeasuringMemory(blkPath, ["state", "verify", "-f", "raw"] + keyArguments + [image])
        #expect(verified.status == 0, "\(verified)")
        #expect(verified.peakResidentKiB < listed.peakResidentKiB + (8 << 10),
                "verify of a 16 MiB blob: \(verified.peakResidentKiB) KiB, list: \(listed.peakResidentKiB) KiB")

        // Damage in the last chunk is still found.
        let file = try FileHandle(forUpdating: URL(fileURLWithPath: image))
        let last = UInt64(4096 + 2 * 65536 + StateDirectory.maximumBlobBytes - 10)
        try file.seek(toOffset: last)
        let byte = try file.read(upToCount: 1)![0]
        try file.seek(toOffset: last)
        try file.write(contentsOf: Data([byte ^ 0xff]))
        try file.close()
        try expectRefused(["state", "verify", "-f", "raw"] + keyArguments + [image], image: image, saying: "fails its checksum")

        // One byte over the maximum, and a 20 GiB sparse file, are refused (64) without reading
        // them whole.
        try scratch.write(blob, bytes + Data([0]))
        let over = try run(blkPath, ["state", "put", "-f", "raw"] + keyArguments + [image, "other", blob])
        #expect(over.status == 64 && over.stderr.contains("the most a blob holds"), "\(over)")
        let huge = try scratch.rawImage("huge-input", bytes: 20 << 30)
        let hugePut = try runMeasuringMemory(blkPath, ["state", "put", "-f", "raw"] + keyArguments + [image, "other", huge], within: 60)
        #expect(hugePut.status == 64 && hugePut.peakResidentKiB < 256 << 10, "\(hugePut), peak \(hugePut.peakResidentKiB) KiB")
    }
}
