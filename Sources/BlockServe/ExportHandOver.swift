// ExportHandOver: an export's part in a migration hand-over (QEMU's inactivate / activate,
// BlockImage.swift). The source inactivates: writes under way finish, the image is flushed and
// its permission locks and lease given up, and from then on writes get EPERM, as QEMU's NBD
// server answers on an inactive node. The destination, opened inactive, activates: it takes the
// locks and lease. A qcow2 destination caches metadata read before the source's last writes, so
// BlockImage refuses (`stale`) to activate that open; the export then opens the file again,
// inactive, activates the fresh open and serves it from the next request on — QEMU's
// invalidate-cache, done by reopening. Requests already under way finish on the old open, which
// is inactive: a write among them gets EPERM, as it would have a moment earlier.
import BlockLayer

extension NBDExport {
    /// Whether the export's image holds its permission locks (and may be written).
    public var isActive: Bool { image.isActive }

    /// Gives the image up for another process: flush, then drop its locks and lease.
    public func inactivate() throws(BlockError) {
        try image.inactivate()
    }

    /// Takes the image over, reopening it if it changed while inactive. Throws QEMU's words
    /// while another process still holds it; the export then stays inactive.
    public func activate() throws(BlockError) {
        let held = image
        do throws(BlockError) {
            try held.activate()
        } catch let error where error.code == .stale {
            var options = held.options
            options.inactive = true
            let fresh = try BlockImage.open(held.path, options: options)
            try fresh.activate()
            current.withLock { $0 = fresh }
        }
    }
}
