// libFuzzer target: an input is the start of a raw disk holding a state store — superblock,
// directory slots, data. Before the store sees it, the superblock's and each slot's checksum are
// recomputed, so mutations reach the parsers behind them instead of stopping at a checksum
// mismatch. The store is read (list, every blob, verify), with the fuzzing key when it asks for
// one, then written (one put), which runs the extent allocator over whatever the directory says.
import Crypto
import DeviceState
import FuzzSupport

let scratch = ScratchImage()
nonisolated(unsafe) let key = try! StateCredential.key(SymmetricKey(data: [UInt8](repeating: 0x42, count: 32)))
nonisolated(unsafe) let options = StateStore.Options(format: "raw", locking: .off)
/// The disk is at least this long, as the seed stores were made on 1 MiB disks.
let diskBytes = 1 << 20


/// Reads everything; false when the store wants a key it was not given.
func readStore(credential: StateCredential?) -> Bool {
    do {
        let store = try StateStore.open(scratch.path, role: .reader, credential: credential, options: options)
        defer { try? store.close() }
        _ = try? store.list()
        _ = try? store.get(store.list().blobs.map(\.name))
        _ = try store.verify()
        return true
    } catch {
        return error.code != .keyRequired
    }
}

func fixChecksums(_ bytes: inout [UInt8]) {
    func uint32(at offset: Int) -> Int? {
        guard offset >= 0, offset + 4 <= bytes.count else { return nil }
        return bytes[offset..<offset + 4].reduce(0) { $0 << 8 | Int($1) }
    }
    func setChecksum(over range: Range<Int>) {
        guard range.lowerBound >= 0, range.upperBound + 4 <= bytes.count else { return }
        let crc = bytes[range].withUnsafeBytes { CRC32C.checksum($0) }
        for index in 0..<4 { bytes[range.upperBound + index] = UInt8(truncatingIfNeeded: crc >> (24 - 8 * index)) }
    }
    guard bytes.starts(with: Array("BLKSTATE".utf8)) else { return }
    if let headerLength = uint32(at: 12), headerLength >= 16 { setChecksum(over: 0..<headerLength) }
    guard let slotSize = uint32(at: 20), slotSize > 0, slotSize < diskBytes else { return }
    for slot in [4096, 4096 + slotSize] where bytes.count > slot + 24 && bytes[slot..<slot + 8].elementsEqual("BLKSTDIR".utf8) {
        if let used = uint32(at: slot + 16), used >= 8 { setChecksum(over: slot..<slot + used - 4) }
    }
}

runFuzzer { data, size in
    guard let data else { return 0 }
    var bytes = Array(UnsafeBufferPointer(start: data, count: size))
    fixChecksums(&bytes)
    bytes.withUnsafeBytes { scratch.replace(with: $0, minimumLength: diskBytes) }
    let credential = readStore(credential: nil) ? nil : key
    if credential != nil { _ = readStore(credential: key) }
    _ = try? StateStore.withWriter(scratch.path, credential: credential, options: options) { (store) throws(StateError) in
        try store.put("fuzz", [UInt8](repeating: 0x5a, count: 5000))
    }
    return 0
}
