// libFuzzer target: an input is a qcow2 image. It is opened read-only and read — header,
// extensions, L1/L2 and refcount tables through `check`, data through reads (compressed
// clusters included) — then opened read-write and written, which walks allocation and the
// metadata write-back over whatever the tables say. Errors are the expected outcome; a crash,
// a hang or an allocation past libFuzzer's limit is a finding.
//
// The image lives in memory (MemoryDriver) and the qcow2 format opens straight over it, so an
// input costs the parsing and no system calls. The name it is opened under is in an empty folder
// of its own: a relative backing-file name in a hostile header finds nothing.
import BlockLayer
import BlockLocking
import FuzzSupport
import Glibc

let imagePath: String = {
    var template = Array("/tmp/blk-fuzz-qcow2-XXXXXX".utf8CString)
    let folder = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(folder != nil, "cannot make a folder in /tmp")
    return String(cString: folder!) + "/image"
}()
/// What BlockImage asks of its top node for a guest that reads, or reads and writes.
let guestRead = PermissionRequest(held: [.consistentRead], unshared: [])
let guestReadWrite = PermissionRequest(held: [.consistentRead, .write], unshared: [.write])

/// The image in `input` opened as qcow2 over memory, with what an image open asks of its nodes;
/// nil when the format refuses it.
func openImage(_ input: UnsafeRawBufferPointer, writable: Bool) -> (root: BlockNode, opener: MemoryDriver)? {
    let options = OpenOptions(format: "qcow2", writable: writable, locking: .off, metadataCacheBytes: 1 << 20, lease: .none)
    let file = MemoryDriver(input)
    let context = FormatOpenContext(path: imagePath, options: options, formats: BlockFormats.all)
    guard let root = try? Qcow2Format.open(file: BlockNode(driver: file), context: context),
          (try? root.setNeeds(writable ? guestReadWrite : guestRead, of: ObjectIdentifier(file))) != nil else { return nil }
    return (root, file)
}

/// What closing an image does: write back what the format holds, then give up its permissions.
func closeImage(_ image: (root: BlockNode, opener: MemoryDriver)) {
    try? image.root.driver.flush()
    try? image.root.setNeeds(.none, of: ObjectIdentifier(image.opener))
}

func readImage(_ input: UnsafeRawBufferPointer) {
    guard let image = openImage(input, writable: false) else { return }
    defer { closeImage(image) }
    let root = image.root
    _ = try? root.driver.check(repair: nil)
    guard let length = try? root.driver.length() else { return }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 4096)
    defer { buffer.deallocate() }
    // The first clusters and the last: where data and the end of the tables are.
    for offset in [Int64(0), 65536, 131072, max(0, length - 65536)] where offset < length {
        let count = Int(min(Int64(buffer.count), length - offset))
        _ = try? root.driver.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]))
        _ = try? root.driver.blockStatus(at: offset, byteCount: Int64(count))
    }
}

func writeImage(_ input: UnsafeRawBufferPointer) {
    guard let image = openImage(input, writable: true) else { return }
    defer { closeImage(image) }
    let root = image.root
    guard let length = try? root.driver.length(), length > 0 else { return }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
    defer { buffer.deallocate() }
    buffer.initializeMemory(as: UInt8.self, repeating: 0xa5)
    for offset in [Int64(0), length / 2 / 4096 * 4096] {
        let count = Int(min(4096, length - offset))
        _ = try? root.driver.write(at: offset, from: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
    }
    if let clusterSize = root.driver.clusterBytes, length >= Int64(clusterSize),
       let cluster = try? root.driver.compressCluster(at: 0, UnsafeRawBufferPointer(rebasing: buffer[0..<min(4096, clusterSize)])) {
        _ = try? root.driver.writeCompressed(cluster)
    }
}

runFuzzer { data, size in
    guard let data else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    readImage(input)
    writeImage(input)
    return 0
}
