// libFuzzer target: an input is a qcow2 image. It is opened read-only and read — header,
// extensions, L1/L2 and refcount tables through `check`, data through reads (compressed
// clusters included) — then opened read-write and written, which walks allocation and the
// metadata write-back over whatever the tables say. Errors are the expected outcome; a crash,
// a hang or an allocation past libFuzzer's limit is a finding.
import BlockLayer
import BlockLocking
import FuzzSupport
import Qcow2

let scratch = ScratchImage()
nonisolated(unsafe) let formats: [any BlockFormat.Type] = [Qcow2Format.self]

func options(writable: Bool) -> OpenOptions {
    OpenOptions(format: "qcow2", writable: writable, locking: .off, metadataCacheBytes: 1 << 20)
}

func readImage() {
    guard let image = try? BlockImage.open(scratch.path, options: options(writable: false), formats: formats) else { return }
    defer { try? image.close() }
    if let qcow2 = image.root.driver as? Qcow2Driver { _ = try? qcow2.check() }
    guard let length = try? image.length() else { return }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 4096)
    defer { buffer.deallocate() }
    // The first clusters and the last: where data and the end of the tables are.
    for offset in [Int64(0), 65536, 131072, max(0, length - 65536)] where offset < length {
        let count = Int(min(Int64(buffer.count), length - offset))
        _ = try? image.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]))
        _ = try? image.readsAsZeroes(at: offset, byteCount: Int64(count))
    }
}

func writeImage() {
    guard let image = try? BlockImage.open(scratch.path, options: options(writable: true), formats: formats) else { return }
    defer { try? image.close() }
    guard let length = try? image.length(), length > 0 else { return }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
    defer { buffer.deallocate() }
    buffer.initializeMemory(as: UInt8.self, repeating: 0xa5)
    for offset in [Int64(0), length / 2 / 4096 * 4096] {
        let count = Int(min(4096, length - offset))
        _ = try? image.write(at: offset, from: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
    }
    if let qcow2 = image.root.driver as? Qcow2Driver, length >= Int64(qcow2.header.clusterSize) {
        _ = try? qcow2.writeCompressed(cluster: 0, from: UnsafeRawBufferPointer(rebasing: buffer[0..<min(4096, qcow2.header.clusterSize)]))
    }
    _ = try? image.flush()
}

runFuzzer { data, size in
    guard let data else { return 0 }
    scratch.replace(with: UnsafeRawBufferPointer(start: data, count: size))
    readImage()
    writeImage()
    return 0
}
