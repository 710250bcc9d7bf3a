// FormatOpenContext+DataFile: the file a format keeps its guest data in apart from its metadata
// (qcow2's external data file), opened as QEMU opens it: a protocol node with no format of its
// own, writable as the image is, with the image's locking, cache mode and lease. The name comes
// from the image, so it is treated as a backing file's name is: a file already in the chain
// (the image itself, or an overlay above it) is refused rather than written through two nodes.
import BlockLocking

extension FormatOpenContext {
    /// The data file at `path` as a node for the `.data` role, with the faults asked for data
    /// files (their own, not the image file's: each counts its own requests).
    public func openDataFile(_ path: String) throws(BlockError) -> BlockNode {
        let driver = try FileDriver(path: path, writable: options.writable, locking: options.locking, cache: options.cache,
                                    lease: options.forceShare ? .none : options.lease)
        switch LockHolderScan.identity(of: driver.locks.descriptor, on: nil) {
        case .success(let identity) where chain.contains(identity):
            throw BlockError(.corrupt, "Could not open data file '\(path)': it is the image file itself or an image it backs")
        case .success:
            break
        case .failure(let failure):
            throw BlockError.systemCall(failure, "Could not stat '\(path)'")
        }
        let node = BlockNode(driver: driver)
        guard !options.dataFileFaults.isEmpty else { return node }
        return BlockNode(driver: FaultInjectionDriver(file: node, rules: options.dataFileFaults), children: [(.file, node)])
    }
}
