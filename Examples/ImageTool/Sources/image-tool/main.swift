// image-tool FOLDER: the common jobs of a BlockLayer user — create a raw and a qcow2 image, write
// and read them, see who holds one, and keep named device state in one — on images in FOLDER.
import BlockLayer
import BlockLocking
import DeviceState
import Glibc
import Qcow2

let folder = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "."
// BlockImage.open tries these formats in turn when the options name none.
let formats: [any BlockFormat.Type] = [Qcow2Format.self, RawFormat.self]

do {
    try RawDriver.create(at: "\(folder)/disk.raw", byteCount: 1 << 20)
    try Qcow2Format.create(at: "\(folder)/disk.qcow2", virtualSize: 1 << 30)
    for path in ["\(folder)/disk.raw", "\(folder)/disk.qcow2"] {
        // Read-write: this open takes the same locks as a QEMU that runs the image.
        let image = try BlockImage.open(path, options: OpenOptions(writable: true), formats: formats)
        let message = Array("written by image-tool".utf8)
        try message.withUnsafeBytes { try image.write(at: 65536, from: $0) }
        try image.flush()
        var readBack = [UInt8](repeating: 0, count: message.count)
        try readBack.withUnsafeMutableBytes { try image.read(at: 65536, into: $0) }
        guard readBack == message else { fail("\(path) reads back what was not written") }
        print("\(path): \(image.format), \(try image.length()) bytes, read back intact")

        // Who holds the image, as `blk locks` asks: through a descriptor that holds no lock.
        let probe = try LockedImageFile(path: path, writable: false, mode: .off)
        let report = try LockReport.inspect(descriptor: probe.descriptor, path: path)
        for holder in report.holders { print("  " + holder.summary) }
        try image.close()
    }

    // Device state: named blobs committed atomically inside the qcow2 image's virtual disk.
    let statePath = "\(folder)/disk.qcow2"
    try StateStore.withWriter(statePath) { (store) throws(StateError) in
        try store.initialise(force: true) // the disk holds the message written above
        try store.put("permall", Array("a TPM's permanent state".utf8))
    }
    let reader = try StateStore.open(statePath, role: .reader)
    let listing = try reader.list()
    print("state generation \(listing.generation ?? 0): \(listing.blobs.map(\.name))")
    print("permall: \(String(decoding: try reader.get("permall"), as: UTF8.self))")
} catch {
    fail("\(error)")
}

func fail(_ message: String) -> Never {
    print("image-tool: \(message)")
    exit(1)
}
