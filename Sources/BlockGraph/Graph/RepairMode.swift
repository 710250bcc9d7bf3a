// RepairMode: what a check may repair (QEMU's BdrvCheckMode). Leaks only waste space, so
// repairing them is always safe; everything else changes what the metadata says is in use.
public enum RepairMode: Sendable {
    /// Lower refcounts that count clusters nothing uses.
    case leaks
    /// Leaks, and every error the format knows how to repair.
    case all
}
