// Deflate: qcow2's compressed clusters, raw deflate with a 4 KiB window (windowBits −12, as
// QEMU's qcow2_co_compress writes them), through the system zlib.
import BlockGraph
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

    /// Compresses one cluster as QEMU does (default level, memLevel 9, windowBits −12, so any
    /// qcow2 reader's 4 KiB window inflates it); nil when the result would not be smaller than
    /// `limit` bytes — such a cluster is stored uncompressed.
    static func deflate(_ input: UnsafeRawBufferPointer, limit: Int) throws(BlockError) -> [UInt8]? {
        var stream = z_stream()
        guard deflateInit2_(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY,
                            zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw BlockError(.ioError, "qcow2: zlib could not start deflating")
        }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: limit)
        let result = output.withUnsafeMutableBytes { out in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
            stream.avail_in = UInt32(input.count)
            stream.next_out = out.baseAddress?.assumingMemoryBound(to: UInt8.self)
            stream.avail_out = UInt32(out.count)
            return CZlib.deflate(&stream, Z_FINISH)
        }
        guard result == Z_STREAM_END else { return nil }
        output.removeLast(Int(stream.avail_out))
        return output
    }
}
