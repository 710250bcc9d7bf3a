// SnapshotInfo: one internal snapshot as a format's snapshot table lists it (QEMU's
// QEMUSnapshotInfo), in the units qemu-img prints.
public struct SnapshotInfo: Sendable, Hashable {
    public var id: String
    public var name: String
    /// Bytes of saved VM state.
    public var vmStateSize: UInt64
    public var dateSeconds: UInt32
    public var dateNanoseconds: UInt32
    /// The guest's clock when the snapshot was taken.
    public var vmClockNanoseconds: UInt64
    /// Instructions executed (record/replay), if recorded.
    public var icount: UInt64?

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
