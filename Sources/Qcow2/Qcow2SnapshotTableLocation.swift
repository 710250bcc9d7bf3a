// Qcow2SnapshotTableLocation: where the snapshot table is — the header's nb_snapshots and
// snapshots_offset, or what a snapshot operation of this open switched them to.

/// Where the snapshot table is and how many entries it has.
struct Qcow2SnapshotTableLocation: Sendable, Hashable {
    var count: UInt32
    var offset: UInt64
}

extension Qcow2Header {
    /// Where this header says the snapshot table is.
    var snapshotTable: Qcow2SnapshotTableLocation { Qcow2SnapshotTableLocation(count: snapshotCount, offset: snapshotsOffset) }
}
