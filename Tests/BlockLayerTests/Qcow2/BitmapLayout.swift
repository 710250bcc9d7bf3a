// BitmapLayout: a qcow2 image's persistent bitmaps read straight from its bytes, for tests that
// must not take blk's own reading on trust: the bitmaps extension, the directory, and which
// granules each bitmap marks. Only what qemu-img 7.2 writes (no extra data, no all-ones entries
// beyond what the reader maps).
import Foundation

struct BitmapLayout {
    struct Entry {
        var name: String
        var entryOffset: Int
        var tableOffset: Int
        var tableSize: Int
        var flags: UInt32
        var granularityBits: Int
    }

    /// Where the extension's 24 bytes start, and the directory.
    var extensionData: Int
    var directoryOffset: Int
    var entries: [Entry]
    var clusterSize: Int
    let bytes: Data

    init?(_ bytes: Data) {
        func be(_ at: Int, _ count: Int) -> Int { bytes[at..<at + count].reduce(0) { $0 << 8 | Int($1) } }
        self.bytes = bytes
        clusterSize = 1 << be(20, 4)
        guard be(88, 8) & 1 != 0 else { return nil }
        var offset = be(100, 4)
        var found: Int?
        while offset + 8 <= clusterSize, be(offset, 4) != 0 {
            if be(offset, 4) == 0x2385_2875 { found = offset + 8 }
            offset += 8 + (be(offset + 4, 4) + 7) / 8 * 8
        }
        guard let found else { return nil }
        extensionData = found
        directoryOffset = be(found + 16, 8)
        var entries: [Entry] = []
        var entry = directoryOffset
        for _ in 0..<be(found, 4) {
            let nameSize = be(entry + 18, 2)
            entries.append(Entry(name: String(decoding: bytes[entry + 24..<entry + 24 + nameSize], as: UTF8.self), entryOffset: entry,
                                 tableOffset: be(entry, 8), tableSize: be(entry + 8, 4), flags: UInt32(be(entry + 12, 4)),
                                 granularityBits: Int(bytes[entry + 17])))
            entry += (24 + be(entry + 20, 4) + nameSize + 7) / 8 * 8
        }
        self.entries = entries
    }

    /// The granules bitmap `name` marks, numbered from the start of the image.
    func granules(of name: String) -> Set<Int> {
        func be(_ at: Int, _ count: Int) -> Int { bytes[at..<at + count].reduce(0) { $0 << 8 | Int($1) } }
        guard let entry = entries.first(where: { $0.name == name }) else { return [] }
        var marked: Set<Int> = []
        for index in 0..<entry.tableSize {
            let raw = be(entry.tableOffset + index * 8, 8)
            let host = raw & 0x00ff_ffff_ffff_fe00
            let first = index * clusterSize * 8
            if host == 0 {
                if raw & 1 != 0 { marked.formUnion(first..<first + clusterSize * 8) }
                continue
            }
            guard host + clusterSize <= bytes.count else { continue }
            for byte in 0..<clusterSize where bytes[host + byte] != 0 {
                for bit in 0..<8 where bytes[host + byte] & (1 << bit) != 0 { marked.insert(first + byte * 8 + bit) }
            }
        }
        return marked
    }
}
