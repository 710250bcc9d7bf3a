// Deflate: qcow2's compressed clusters, raw deflate with a 4 KiB window (windowBits −12, as
// QEMU's qcow2_co_compress writes them), inflated through the system zlib.
import BlockLayer
import CZlib

enum Deflate {
    /// Inflates `compressed` into exactly `output.count` bytes. Bytes after the end of the stream
    /// are ignored: a compressed cluster's last sector is padded.
    static func inflate(_ compressed: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws(BlockError) {
        var stream = z_stream()
        guard inflateInit2_(&stream, -12, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw BlockError(.ioError, "qcow2: zlib could not start inflating")
        }
        defer { inflateEnd(&stream) }
        stream.next_in = UnsafeMutablePointer(mutating: compressed.baseAddress?.assumingMemoryBound(to: UInt8.self))
        stream.avail_in = UInt32(compressed.count)
        stream.next_out = output.baseAddress?.assumingMemoryBound(to: UInt8.self)
        stream.avail_out = UInt32(output.count)
        let result = CZlib.inflate(&stream, Z_FINISH)
        guard (result == Z_STREAM_END || result == Z_BUF_ERROR) && stream.avail_out == 0 else {
            throw BlockError(.corrupt, "qcow2: a compressed cluster does not inflate to a whole cluster (zlib \(result))")
        }
    }
}
