// WriteJournalDriver: a node between a format node and its file that passes every request on
// and appends each completed write (bytes and offset) and each completed flush to a journal file.
// From the image as it was before and the journal, a test rebuilds the states a power cut could
// leave: everything up to some flush, plus any subset of the writes after it (SQLite's crash
// VFS and CrashMonkey do the same; StateCrashTests enumerates prefixes and single omissions).
//
// Journal records: kind (1 byte: "W" write, "F" flush), offset (8, big-endian), length (8,
// big-endian), then for a write its bytes.
import BlockLocking
import Glibc
import Posix
import Synchronization
import SystemPackage

/// A node that records every completed write and flush under a format node, so crash tests can
/// rebuild each state a power cut could leave: tests only.
public final class WriteJournalDriver: BlockDriver {
    /// A name of its own: QEMU has no such driver.
    public let formatName = "journal"
    /// The node the requests go to.
    public let file: BlockNode
    private let journal: Mutex<Int32>

    /// A node over `file` appending to the journal at `journalPath` (created if absent).
    public init(file: BlockNode, journalPath: String) throws(BlockError) {
        self.file = file
        let descriptor = open(journalPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw BlockError(.notFound, "Could not open the write journal '\(journalPath)': \(String(cString: strerror(errno)))")
        }
        journal = Mutex(descriptor)
    }

    deinit { journal.withLock { _ = close($0) } }

    private func record(_ kind: UInt8, at byteOffset: Int64, _ bytes: UnsafeRawBufferPointer?) throws(BlockError) {
        var header = [kind]
        for value in [UInt64(byteOffset), UInt64(bytes?.count ?? 0)] {
            for shift in stride(from: 56, through: 0, by: -8) { header.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
        }
        let appended = journal.withLock { descriptor in
            let journalFile = FileDescriptor(rawValue: descriptor)
            return header.withUnsafeBytes { journalFile.writeFully($0) }.flatMap { bytes.map { journalFile.writeFully($0) } ?? .success(()) }
        }
        if case .failure(let short) = appended {
            throw BlockError(.ioError, "Could not append to the write journal: \(short.error?.errno ?? .current)")
        }
    }

    /// The file's length: the journal changes no sizes.
    public func length() throws(BlockError) -> Int64 { try file.driver.length() }
    /// The file's length as the storage has it now.
    public func refreshedLength() throws(BlockError) -> Int64 { try file.driver.refreshedLength() }

    /// Passed through: reads change no crash state.
    public func read(at byteOffset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockError) {
        try file.driver.read(at: byteOffset, into: buffer)
    }

    /// Journalled once the file has it: a write that failed is no state a crash could leave.
    public func write(at byteOffset: Int64, from buffer: UnsafeRawBufferPointer) throws(BlockError) {
        try file.driver.write(at: byteOffset, from: buffer)
        try record(UInt8(ascii: "W"), at: byteOffset, buffer)
    }

    /// Journalled as a write of zeroes, so a rebuilt state does not depend on how they were made.
    public func writeZeroes(at byteOffset: Int64, byteCount: Int64, mayUnmap: Bool) throws(BlockError) {
        try file.driver.writeZeroes(at: byteOffset, byteCount: byteCount, mayUnmap: mayUnmap)
        let zeroes = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(byteCount), alignment: 16)
        defer { zeroes.deallocate() }
        zeroes.initializeMemory(as: UInt8.self, repeating: 0)
        try record(UInt8(ascii: "W"), at: byteOffset, UnsafeRawBufferPointer(zeroes))
    }

    /// Journalled once done: the mark every rebuilt state keeps all writes before.
    public func flush() throws(BlockError) {
        try file.driver.flush()
        try record(UInt8(ascii: "F"), at: 0, nil)
    }

    /// Passed through, not journalled: the crash tests make no truncations.
    public func truncate(to byteCount: Int64) throws(BlockError) { try file.driver.truncate(to: byteCount) }

    /// The file's answer: the journal changes no allocation.
    public func blockStatus(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> BlockStatus {
        try file.driver.blockStatus(at: byteOffset, byteCount: byteCount)
    }

    /// The file's figure.
    public func allocatedBytes() throws(BlockError) -> Int64? { try file.driver.allocatedBytes() }

    /// Passed to the file, so faults and other nodes below see the step.
    public func eventBegan(_ event: BlockEvent) { file.driver.eventBegan(event) }
    /// Passed to the file, as its beginning was.
    public func eventEnded(_ event: BlockEvent) { file.driver.eventEnded(event) }
}
