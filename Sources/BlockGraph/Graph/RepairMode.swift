// RepairMode: what a check may repair (QEMU's BdrvCheckMode). Leaks only waste space, so
// repairing them is always safe; everything else changes what the metadata says is in use.
/// How far `check(repair:)` may go: `qemu-img check -r leaks` or `-r all`.
public enum RepairMode: Sendable {
    /// Lower refcounts that count clusters nothing uses.
    case leaks
    /// Leaks, and every error the format knows how to repair.
    case all
}
