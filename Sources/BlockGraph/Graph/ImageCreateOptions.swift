// ImageCreateOptions: what a new image is made of (QEMU's create options). A format takes the
// ones it has and refuses the ones it cannot honour.
import BlockLocking

/// QEMU's create options as one value a format takes whole: a format refuses the ones it
/// cannot honour rather than ignoring them.
public struct ImageCreateOptions: Sendable {
    /// The size the guest sees.
    public var virtualSize: Int64
    /// The allocation unit; nil for the format's default.
    public var clusterSize: Int?
    /// The image unallocated reads fall through to: relative to the new image's folder, or absolute.
    public var backingFile: String?
    /// The backing image's format, recorded so that opening it needs no probe.
    public var backingFormat: String?
    /// How much storage to reserve or write up front.
    public var preallocation: Preallocation
    /// The locks the creation takes, so an image in use is not truncated under its holder.
    public var locking: LockingMode
    /// Whether the creation holds a lease on shared storage while it writes.
    public var lease: LeasePolicy
    /// The format's own `-o` options (qcow2: extended_l2, data_file, data_file_raw), which it
    /// checks; nil when none were given.
    public var formatOptions: FormatOptions?

    /// Options with QEMU's defaults: no backing file, no preallocation, automatic locking.
    public init(virtualSize: Int64, clusterSize: Int? = nil, backingFile: String? = nil, backingFormat: String? = nil,
                preallocation: Preallocation = .off, locking: LockingMode = .auto, lease: LeasePolicy = .none) {
        self.virtualSize = virtualSize
        self.clusterSize = clusterSize
        self.backingFile = backingFile
        self.backingFormat = backingFormat
        self.preallocation = preallocation
        self.locking = locking
        self.lease = lease
    }
}
