// SnapshotInfo: one internal snapshot as a format's snapshot table lists it (QEMU's
// QEMUSnapshotInfo), in the units qemu-img prints.
/// One row of `qemu-img snapshot -l`, whatever the format's table looks like.
public struct SnapshotInfo: Sendable, Hashable {
    /// The ID the format gave the snapshot, which names it when names repeat.
    public var id: String
    /// The name the user gave it.
    public var name: String
    /// Bytes of saved VM state.
    public var vmStateSize: UInt64
    /// When the snapshot was taken: seconds since the epoch.
    public var dateSeconds: UInt32
    /// The nanoseconds within `dateSeconds`.
    public var dateNanoseconds: UInt32
    /// The guest's clock when the snapshot was taken.
    public var vmClockNanoseconds: UInt64
    /// Instructions executed (record/replay), if recorded.
    public var icount: UInt64?

    /// A snapshot as a format reads it from its table.
    public init(id: String, name: String, vmStateSize: UInt64, dateSeconds: UInt32, dateNanoseconds: UInt32,
                vmClockNanoseconds: UInt64, icount: UInt64?) {
        self.id = id
        self.name = name
        self.vmStateSize = vmStateSize
        self.dateSeconds = dateSeconds
        self.dateNanoseconds = dateNanoseconds
        self.vmClockNanoseconds = vmClockNanoseconds
        self.icount = icount
    }
}
