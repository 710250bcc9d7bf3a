// Hostile and damaged stores: every single-byte change in the superblock, both directory slots
// and the blobs of an encrypted store, and truncated images, end in a clear verdict — intact
// (the other slot serves), damaged (65) or a newer format (69) — never a crash, a hang, a key
// error for damage, or a write to the image.
import DeviceState
import Foundation
import Testing

@Suite("device-state store: hostile images")
struct StateHostileTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("single-byte changes anywhere in the store's structures and blobs")
    func flippedBytes() throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        let key = scratch.directory + "/key"
        try scratch.write(key, Data((0..<32).map { _ in UInt8.random(in: 0...255) }))
        for (name, size) in [("permall", 3000), ("volatile", 9000), ("savestate", 70_000), ("permall", 3100)] {
            let blob = scratch.directory + "/blob"
            try scratch.write(blob, Data((0..<size).map { _ in UInt8.random(in: 0...255) }))
            #expect(try blk("state", "put", "--key-file", key, image, name, blob).status == 0)
        }
        let original = try Data(contentsOf: URL(fileURLWithPath: image))
        // The superblock, the used part of both slots, and the first extent.
        let regions = [0..<64, 4096..<4096 + 512, 4096 + 65536..<4096 + 65536 + 512, 4096 + 2 * 65536..<4096 + 2 * 65536 + 8192]
        var generator = SystemRandomNumberGenerator()
        var verdicts: [Int32: Int] = [:]
        for round in 0..<60 {
            let region = regions[round % regions.count]
            let offset = Int.random(in: region, using: &generator)
            var damaged = original
            let mask = UInt8.random(in: 1...255, using: &generator)
            damaged[offset] ^= mask
            try damaged.write(to: URL(fileURLWithPath: image))
            let verified = try blk("state", "verify", "--key-file", key, image)
            let listed = try blk("state", "list", "--json", image)
            #expect([0, 65, 69].contains(verified.status), "byte \(offset) ^ \(mask): \(verified)")
            #expect([0, 65, 69].contains(listed.status), "byte \(offset) ^ \(mask): \(listed)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == damaged, "byte \(offset) ^ \(mask): a read wrote to the image")
            verdicts[verified.status, default: 0] += 1
        }
        #expect(verdicts[65, default: 0] > 0, "damage was found at least once: \(verdicts)")

        // Truncated images: the store claims more disk than there is.
        for length in [100, 4096, 4096 + 65536 + 100, 200_000] {
            try original.prefix(length).write(to: URL(fileURLWithPath: image))
            let verified = try blk("state", "verify", "--key-file", key, "-f", "raw", image)
            #expect([65, 0].contains(verified.status), "truncated to \(length): \(verified)")
            if length >= 4096 { #expect(verified.status == 65, "truncated to \(length): \(verified)") }
        }
    }

    /// The stretching cost is read from the image; a crafted one (checksum recomputed) must be
    /// refused as damage at once, not make the open compute for hours.
    @Test("a directory asking for absurd passphrase stretching is refused at once", arguments: [
        (protection: [UInt8]([2, 1, 0, 0]), first: UInt32(4_000_000_000), second: UInt32(0)),
        (protection: [UInt8]([2, 2, 0, 30]), first: UInt32(1024), second: UInt32(64)),
    ])
    func absurdStretching(protection: [UInt8], first: UInt32, second: UInt32) throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        let passphrase = scratch.directory + "/passphrase"
        try scratch.write(passphrase, Data("correct horse".utf8))
        #expect(try blk("state", "init", "--passphrase-file", passphrase, "--kdf", "pbkdf2", "-f", "raw", image).status == 0)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
        let slot = 4096
        func put(_ value: UInt32, at offset: Int) { for index in 0..<4 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (24 - 8 * index)) } }
        bytes.replaceSubrange(slot + 24..<slot + 28, with: protection)
        put(first, at: slot + 28)
        put(second, at: slot + 32)
        let used = bytes[slot + 16..<slot + 20].reduce(0) { $0 << 8 | Int($1) }
        put(CRC32C.checksum(Array(bytes[slot..<slot + used - 4])), at: slot + used - 4)
        try Data(bytes).write(to: URL(fileURLWithPath: image))
        let verified = try run(blkPath, ["state", "verify", "-f", "raw", "--passphrase-file", passphrase, image], within: 20)
        #expect(verified.status == 65 && verified.stderr.contains("beyond blk's bounds"), "\(verified)")
    }
}
