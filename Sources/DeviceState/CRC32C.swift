// CRC32C: the checksum of every stored blob (CChecksum: SSE4.2 crc32 in three streams when the
// CPU has it, a byte table otherwise).
import CChecksum

/// The checksum every stored blob and directory slot carries: CRC32C because the SSE4.2 crc32
/// instruction makes it nearly free beside the flushes of a commit.
public enum CRC32C {
    /// The CRC32C of `bytes`, continuing from `previous` (0 to start).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing previous: UInt32 = 0) -> UInt32 {
        blk_crc32c(previous, bytes.baseAddress, bytes.count)
    }

    /// The same over an array: for small fields, where the copy costs nothing.
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }

    /// The byte-table loop alone: the baseline `blk bench state` measures beside the instruction.
    public static func tableChecksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        blk_crc32c_table(0, bytes.baseAddress, bytes.count)
    }

    /// Whether `checksum` uses the SSE4.2 crc32 instruction on this CPU.
    public static var usesHardware: Bool { blk_crc32c_hardware() != 0 }
}
