// FaultInjectionDriver: QEMU's blkdebug in miniature — a node between a format node and its
// file that makes chosen requests fail with a chosen errno, so tests can prove that every failed
// step of an operation surfaces as an error and leaves the image openable. A rule picks the
// Nth read, write or flush among those it matches — all of that kind, those made during a named
// step (BlockEvent), or those touching a byte range of the file — once or from then on.
import BlockLocking
import Posix
import Synchronization
import SystemPackage

/// Which request fails and how: one rule of `--inject-fault`, named by the step it fails rather
/// than by a request count that shifts whenever an operation changes.
public struct FaultRule: Sendable, Hashable, CustomStringConvertible {
    /// The kinds of request a rule can fail; zero writes count as writes.
    public enum Operation: String, Sendable, Hashable, CaseIterable {
        case read, write, flush
    }

    /// Which requests of the operation the rule counts.
    public enum Scope: Sendable, Hashable {
        case every
        /// Those made while the step is in progress.
        case event(BlockEvent)
        /// Reads and writes touching any byte of the file in the range.
        case bytes(ClosedRange<Int64>)
    }

    /// The kind of request the rule counts.
    public var operation: Operation
    /// Which of those requests it counts.
    public var scope: Scope
    /// Which matching request fails, counting from 1.
    public var occurrence: Int
    /// What the failed request fails with: EIO for an I/O error, ENOSPC for a full device.
    public var errno: Errno
    /// Every matching request from the `occurrence`th on fails, not just that one.
    public var always: Bool

    /// A rule made in code, as tests make them.
    public init(_ operation: Operation, _ scope: Scope = .every, occurrence: Int, errno: Errno = .ioError, always: Bool = false) {
        self.operation = operation
        self.scope = scope
        self.occurrence = occurrence
        self.errno = errno
        self.always = always
    }

    /// `OP[@EVENT|@FIRST-LAST]:N[:eio|enospc][:always]`, as `--inject-fault` takes it:
    /// `write:3`, `write@l2_update:1:enospc`, `read@0-511:1:always`.
    public init?(parsing text: String) {
        let parts = text.lowercased().split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 2, let occurrence = Int(parts[1]), occurrence >= 1 else { return nil }
        let operationAndScope = parts[0].split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard let operation = Operation(rawValue: operationAndScope[0]) else { return nil }
        var scope = Scope.every
        if operationAndScope.count == 2 {
            if let event = BlockEvent(rawValue: operationAndScope[1]) {
                scope = .event(event)
            } else {
                let bounds = operationAndScope[1].split(separator: "-", omittingEmptySubsequences: false)
                guard operation != .flush, bounds.count == 2, let first = Int64(bounds[0]), let last = Int64(bounds[1]),
                      first >= 0, first <= last else { return nil }
                scope = .bytes(first...last)
            }
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
        self.init(operation, scope, occurrence: occurrence, errno: errno, always: always)
    }

    /// The rule as `--inject-fault` takes it, so a test's failure message can be pasted back.
    public var description: String {
        let scopeText = switch scope {
        case .every: ""
        case .event(let event): "@\(event.rawValue)"
        case .bytes(let range): "@\(range.lowerBound)-\(range.upperBound)"
        }
        return "\(operation.rawValue)\(scopeText):\(occurrence):\(errno == .noSpace ? "enospc" : "eio")\(always ? ":always" : "")"
    }

    func matches(_ request: FaultRule.Operation, bytes: ClosedRange<Int64>?, during events: [BlockEvent]) -> Bool {
        guard request == operation else { return false }
        switch scope {
        case .every: return true
        case .event(let event): return events.contains(event)
        case .bytes(let range): return bytes.map(range.overlaps) ?? false
        }
    }
}

/// A node that fails the requests its rules pick, put between a format node and its file when
/// the open asks for faults: tests only, never in the graph otherwise.
public final class FaultInjectionDriver: BlockDriver {
    /// QEMU's name for the same driver, so messages read alike.
    public let formatName = "blkdebug"
    /// The node the requests that pass go to.
    public let file: BlockNode
    /// The rules, each counted on its own.
    public let rules: [FaultRule]

    private struct Tally {
        /// Requests each rule has matched so far.
        var matched: [Int]
        /// Steps in progress (nested: a qcow2 L2 update inside a state-store blob write).
        var events: [BlockEvent] = []
    }

    private let tally: Mutex<Tally>

    /// A node over `file` that fails what `rules` pick.
    public init(file: BlockNode, rules: [FaultRule]) {
        self.file = file
        self.rules = rules
        tally = Mutex(Tally(matched: Array(repeating: 0, count: rules.count)))
    }

    /// Counts the request against every rule it matches and throws the failure one asks for.
    private func check(_ operation: FaultRule.Operation, bytes: ClosedRange<Int64>?, _ what: @autoclosure () -> String) throws(BlockError) {
        let failing = tally.withLock { tally -> FaultRule? in
            var failing: FaultRule?
            for (index, rule) in rules.enumerated() where rule.matches(operation, bytes: bytes, during: tally.events) {
                tally.matched[index] += 1
                if tally.matched[index] == rule.occurrence || (rule.always && tally.matched[index] > rule.occurrence) {
                    failing = failing ?? rule
                }
            }
            return failing
        }
        if let failing {
            throw BlockError.systemCall(SystemCallError("injected by \(failing)", failing.errno), what())
        }
    }

    private static func range(_ byteOffset: Int64, _ count: Int64) -> ClosedRange<Int64>? {
        count > 0 ? byteOffset...byteOffset + count - 1 : nil
    }

    /// Remembers the step, for rules scoped to it, and passes it down.
    public func eventBegan(_ event: BlockEvent) {
        tally.withLock { $0.events.append(event) }
        file.driver.eventBegan(event)
    }

    /// Forgets the innermost instance of the step, and passes the end down.
    public func eventEnded(_ event: BlockEvent) {
        tally.withLock { tally in
            if let index = tally.events.lastIndex(of: event) { tally.events.remove(at: index) }
        }
        file.driver.eventEnded(event)
    }

    /// The file's length: the driver changes no sizes.
    public func length() throws(BlockError) -> Int64 { try file.driver.length() }
    /// The file's length as the storage has it now.
    public func refreshedLength() throws(BlockError) -> Int64 { try file.driver.refreshedLength() }

    /// Fails if a read rule picks this request; passes it down otherwise.
    public func read(at byteOffset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockError) {
        try check(.read, bytes: Self.range(byteOffset, Int64(buffer.count)), "read of \(buffer.count) bytes at \(byteOffset)")
        try file.driver.read(at: byteOffset, into: buffer)
    }

    /// Fails if a write rule picks this request; passes it down otherwise.
    public func write(at byteOffset: Int64, from buffer: UnsafeRawBufferPointer) throws(BlockError) {
        try check(.write, bytes: Self.range(byteOffset, Int64(buffer.count)), "write of \(buffer.count) bytes at \(byteOffset)")
        try file.driver.write(at: byteOffset, from: buffer)
    }

    /// Counted as a write: a failed zero write is a failed write to the format above.
    public func writeZeroes(at byteOffset: Int64, byteCount: Int64, mayUnmap: Bool) throws(BlockError) {
        try check(.write, bytes: Self.range(byteOffset, byteCount), "zero write of \(byteCount) bytes at \(byteOffset)")
        try file.driver.writeZeroes(at: byteOffset, byteCount: byteCount, mayUnmap: mayUnmap)
    }

    /// Fails if a flush rule picks this flush, as a lost write-back would.
    public func flush() throws(BlockError) {
        try check(.flush, bytes: nil, "flush")
        try file.driver.flush()
    }

    /// Never failed: no operation's failure path depends on a failed truncation yet.
    public func truncate(to byteCount: Int64) throws(BlockError) { try file.driver.truncate(to: byteCount) }

    /// The file's answer: faults change no allocation.
    public func blockStatus(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> BlockStatus {
        try file.driver.blockStatus(at: byteOffset, byteCount: byteCount)
    }

    /// The file's figure.
    public func allocatedBytes() throws(BlockError) -> Int64? { try file.driver.allocatedBytes() }
}
