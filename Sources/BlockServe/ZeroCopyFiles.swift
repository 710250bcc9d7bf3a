// ZeroCopyFiles: the image files one connection sends read data from with sendfile (swift-nio's
// FileRegion). Each file gets a descriptor of the connection's own, duplicated on its first use:
// a NIOFileHandle is lent to one sendfile at a time, which a connection's event loop guarantees
// and a handle shared by connections on other loops would not. The descriptors are closed when
// the connection ends, after its last reply has been written or has failed.
//
// A duplicate shares the open file description, so it reads what the image's own descriptor
// reads, through the same page cache; a reopen (read-only ↔ read-write) that puts another
// description under the image's descriptor leaves this one reading the same file.
//
// Not for TLS connections: their bytes must pass through the TLS handler, which a FileRegion
// does not (swift-nio-ssl refuses them), so those connections copy, as before.
import BlockGraph
import NIOCore
import Synchronization

final class ZeroCopyFiles: Sendable {
    /// The files sent from so far and the connection's descriptor of each; the driver is kept so
    /// that its identity is not reused while the entry lives.
    private let handles = Mutex<[ObjectIdentifier: (file: FileDriver, handle: NIOFileHandle)]>([:])

    /// The region of `file` for the channel to send with sendfile.
    func region(of file: FileDriver, at offset: Int64, byteCount: Int64) throws(BlockError) -> FileRegion {
        let handle = try handles.withLock { (handles) throws(BlockError) -> NIOFileHandle in
            if let known = handles[ObjectIdentifier(file)] { return known.handle }
            let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: try file.duplicateDescriptor())
            handles[ObjectIdentifier(file)] = (file, handle)
            return handle
        }
        return FileRegion(fileHandle: handle, readerIndex: Int(offset), endIndex: Int(offset + byteCount))
    }

    /// Closes every descriptor: the connection has no write left that may use one.
    func close() {
        let all = handles.withLock { handles in
            defer { handles = [:] }
            return Array(handles.values)
        }
        for entry in all { try? entry.handle.close() }
    }
}
