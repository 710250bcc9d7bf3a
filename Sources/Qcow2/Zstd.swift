// Zstd: qcow2's zstd-compressed clusters (compression type 1, qcow2.rst "Compression type"),
// inflated through the system's libzstd, loaded at run time: the package builds on a machine
// without zstd headers, and only an image that uses zstd needs the library (Debian's libzstd1).
//
// A compressed cluster holds one zstd frame followed by padding up to its last sector, so the
// frame's own size is found first (ZSTD_findFrameCompressedSize) and only that is decompressed.
import BlockGraph
import Glibc

enum Zstd {
    private typealias FindFrameSize = @convention(c) (UnsafeRawPointer?, Int) -> Int
    private typealias Decompress = @convention(c) (UnsafeMutableRawPointer?, Int, UnsafeRawPointer?, Int) -> Int
    private typealias IsError = @convention(c) (Int) -> UInt32

    private struct Library: @unchecked Sendable { // C function pointers into a library never unloaded
        let findFrameSize: FindFrameSize
        let decompress: Decompress
        let isError: IsError
    }

    private static let library: Library? = {
        guard let handle = dlopen("libzstd.so.1", RTLD_NOW | RTLD_LOCAL),
              let find = dlsym(handle, "ZSTD_findFrameCompressedSize"),
              let decompress = dlsym(handle, "ZSTD_decompress"),
              let isError = dlsym(handle, "ZSTD_isError") else { return nil }
        return Library(findFrameSize: unsafeBitCast(find, to: FindFrameSize.self),
                       decompress: unsafeBitCast(decompress, to: Decompress.self),
                       isError: unsafeBitCast(isError, to: IsError.self))
    }()

    /// Decompresses the frame at the start of `compressed` into exactly `output.count` bytes.
    static func decompress(_ compressed: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws(BlockError) {
        guard let library else {
            throw BlockError(.unsupported, "qcow2: this image's clusters are zstd-compressed, which needs libzstd (install the Debian package libzstd1)")
        }
        let frameSize = library.findFrameSize(compressed.baseAddress, compressed.count)
        guard library.isError(frameSize) == 0 else {
            throw BlockError(.corrupt, "qcow2: a zstd-compressed cluster holds no whole zstd frame")
        }
        let produced = library.decompress(output.baseAddress, output.count, compressed.baseAddress, frameSize)
        guard library.isError(produced) == 0, produced == output.count else {
            throw BlockError(.corrupt, "qcow2: a zstd-compressed cluster does not decompress to a whole cluster")
        }
    }
}
