// image-tool FOLDER: the common jobs of a BlockLayer user — create a raw and a qcow2 image, write
// and read them, map them, see who holds one, and keep named device state in one — in FOLDER.
import BlockLayer
import BlockLocking
import DeviceState
import Glibc

let folder = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "."

do {
    for (name, size) in [("raw", Int64(1) << 20), ("qcow2", Int64(1) << 30)] {
        let path = "\(folder)/disk.\(name)"
        // The registry holds every format of the build; creating is an operation of the format.
        guard let format = BlockFormats.named(name) else { fail("this build has no \(name)") }
        try format.create(at: path, options: ImageCreateOptions(virtualSize: size))
        // Any format of the build, named or probed; read-write takes the locks a running QEMU takes.
        let image = try BlockImage.open(path, options: OpenOptions(format: name, writable: true))
        let message = Array("written by image-tool".utf8)
        try message.withUnsafeBytes { try image.write(at: 65536, from: $0) }
        try image.flush()
        var readBack = [UInt8](repeating: 0, count: message.count)
        try readBack.withUnsafeMutableBytes { try image.read(at: 65536, into: $0) }
        guard readBack == message else { fail("\(path) reads back what was not written") }
        print("\(path): \(image.format), \(try image.length()) bytes, read back intact")
        // Block status, as `qemu-img map` walks it: what each run is, without reading it.
        let first = try image.blockStatus(at: 0, byteCount: try image.length())
        print("  first \(first.byteCount) bytes: \(first.isData ? "data" : first.isZero ? "zeroes" : "unknown")")

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
