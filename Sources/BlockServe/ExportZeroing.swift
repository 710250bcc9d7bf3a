// ExportZeroing: what an export does with NBD_CMD_TRIM and with writes of zeroes — qemu-nbd's
// --discard and --detect-zeroes, with its meanings and its defaults.

/// Whether trims and zeroes may deallocate (qemu-nbd `--discard`).
public enum DiscardMode: String, Sendable, CaseIterable {
    /// Trims succeed and change nothing, and zeroing never deallocates (qemu-nbd's default).
    case ignore
    /// Trims zero the range, deallocating it where the format can; write-zeroes without NO_HOLE
    /// may deallocate.
    case unmap
}

/// Whether a write whose payload is all zeroes is made a write-zeroes (qemu-nbd `--detect-zeroes`).
public enum DetectZeroesMode: String, Sendable, CaseIterable {
    /// Written as sent.
    case off
    /// Made a write-zeroes that keeps the range allocated.
    case on
    /// Made a write-zeroes that may deallocate, when the discard mode is `unmap`.
    case unmap
}
