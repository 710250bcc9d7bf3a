// FaultInjectionDriver: QEMU's blkdebug in miniature — a node between a format node and its
// file that makes chosen requests fail with a chosen errno, so tests can prove that every failed
// step of an operation surfaces as an error and leaves the image openable. Rules count requests
// of one kind (reads, writes, flushes) through this node: "the 3rd write fails with ENOSPC",
// once or from then on.
import BlockLocking
import Synchronization
import SystemPackage

public struct FaultRule: Sendable, Hashable, CustomStringConvertible {
    public enum Operation: String, Sendable, Hashable, CaseIterable {
        case read, write, flush
    }

    public var operation: Operation
    /// Which request of that kind fails, counting from 1.
    public var occurrence: Int
    public var errno: Errno
    /// Every request from the `occurrence`th on fails, not just that one.
    public var always: Bool

    public init(_ operation: Operation, occurrence: Int, errno: Errno = .ioError, always: Bool = false) {
        self.operation = operation
        self.occurrence = occurrence
        self.errno = errno
        self.always = always
    }

    /// `OP:N[:eio|enospc][:always]`, as `--inject-fault` takes it.
    public init?(parsing text: String) {
        let parts = text.lowercased().split(separator: ":").map(String.init)
        guard parts.count >= 2, let operation = Operation(rawValue: parts[0]), let occurrence = Int(parts[1]), occurrence >= 1 else {
            return nil
        }
        var errno = Errno.ioError
        var always = false
        for part in parts.dropFirst(2) {
            switch part {
            case "eio": errno = .ioError
            case "enospc": errno = .noSpace
            case "always": always = true
            default: return nil
            }
        }
        self.init(operation, occurrence: occurrence, errno: errno, always: always)
    }

    public var description: String {
        "\(operation.rawValue):\(occurrence):\(errno == .noSpace ? "enospc" : "eio")\(always ? ":always" : "")"
    }
}

public final class FaultInjectionDriver: BlockDriver {
    public let formatName = "blkdebug"
    public let file: BlockNode
    public let rules: [FaultRule]
    private let counts = Mutex<[FaultRule.Operation: Int]>([:])

    public init(file: BlockNode, rules: [FaultRule]) {
        self.file = file
        self.rules = rules
    }

    /// Counts the request and throws the failure a rule asks for.
    private func check(_ operation: FaultRule.Operation, _ what: @autoclosure () -> String) throws(BlockError) {
        let number = counts.withLock { counts in
            counts[operation, default: 0] += 1
            return counts[operation]!
        }
        for rule in rules where rule.operation == operation {
            if number == rule.occurrence || (rule.always && number > rule.occurrence) {
                throw BlockError.systemCall(SystemCallError("injected \(operation.rawValue) #\(number)", rule.errno), what())
            }
        }
    }

    public func length() throws(BlockError) -> Int64 { try file.driver.length() }

    public func read(at byteOffset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockError) {
        try check(.read, "read of \(buffer.count) bytes at \(byteOffset)")
        try file.driver.read(at: byteOffset, into: buffer)
    }

    public func write(at byteOffset: Int64, from buffer: UnsafeRawBufferPointer) throws(BlockError) {
        try check(.write, "write of \(buffer.count) bytes at \(byteOffset)")
        try file.driver.write(at: byteOffset, from: buffer)
    }

    public func writeZeroes(at byteOffset: Int64, byteCount: Int64, mayUnmap: Bool) throws(BlockError) {
        try check(.write, "zero write of \(byteCount) bytes at \(byteOffset)")
        try file.driver.writeZeroes(at: byteOffset, byteCount: byteCount, mayUnmap: mayUnmap)
    }

    public func flush() throws(BlockError) {
        try check(.flush, "flush")
        try file.driver.flush()
    }

    public func truncate(to byteCount: Int64) throws(BlockError) { try file.driver.truncate(to: byteCount) }

    public func readsAsZeroes(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> Bool {
        try file.driver.readsAsZeroes(at: byteOffset, byteCount: byteCount)
    }

    public func allocatedBytes() throws(BlockError) -> Int64? { try file.driver.allocatedBytes() }
}
