// ImageCreateOptions: what a new image is made of (QEMU's create options). A format takes the
// ones it has and refuses the ones it cannot honour.
import BlockLocking

public struct ImageCreateOptions: Sendable {
    /// The size the guest sees.
    public var virtualSize: Int64
    /// The allocation unit; nil for the format's default.
    public var clusterSize: Int?
    /// The image unallocated reads fall through to: relative to the new image's folder, or absolute.
    public var backingFile: String?
    public var backingFormat: String?
    public var preallocation: Preallocation
    public var locking: LockingMode
    public var lease: LeasePolicy

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
