// IOCommandStep: the qemu-io-like commands of `blk io -c …`, parsed before anything runs, so a
// typo in the fifth command does not leave the first four done. A module of its own so the
// parser can be fuzzed without the CLI (Fuzz/).
import BlockGraph
import BlockLocking

/// One parsed command of a `blk io` script, checked before any runs.
public enum IOCommandStep: Equatable, Sendable {
    /// What a `write` step writes.
    public enum WriteKind: Equatable, Sendable {
        case pattern(UInt8)
        /// `-z`: the range reads as zeroes afterwards, however the format stores that.
        case zeroes
        /// `-c`: whole clusters stored compressed (qcow2), as qemu-io's `write -c`.
        case compressed(pattern: UInt8)
    }

    case read(byteOffset: Int64, byteCount: Int64, pattern: UInt8?)
    case write(byteOffset: Int64, byteCount: Int64, kind: WriteKind)
    case flush
    case sleep(milliseconds: Int64)
    case lock(LockKind)
    case unlock

    /// The most one read or pattern write moves: its buffer is made whole (qemu-io's bound is
    /// 2 GiB less 512 bytes).
    public static let maximumRequestBytes: Int64 = 1 << 31

    /// The bytes a step touches in the image, nil for a step that touches none.
    public var range: (byteOffset: Int64, byteCount: Int64)? {
        switch self {
        case .read(let offset, let count, _), .write(let offset, let count, _): (offset, count)
        case .flush, .sleep, .lock, .unlock: nil
        }
    }

    /// Parses one command; the error says what is wrong with it.
    public static func parse(_ text: String) -> Result<IOCommandStep, IOScriptError> {
        var words = text.split(separator: " ").map(String.init)[...]
        guard let name = words.popFirst() else { return .failure(IOScriptError("empty command")) }
        var pattern: UInt8?
        var zeroes = false
        var compressed = false
        while let flag = words.first, flag.hasPrefix("-") {
            words.removeFirst()
            switch (name, flag) {
            case ("read", "-P"), ("write", "-P"):
                guard let value = words.popFirst().flatMap(parseByteCount), value <= 255 else {
                    return .failure(IOScriptError("\(name): -P takes a byte value (0–255 or 0x00–0xff)"))
                }
                pattern = UInt8(value)
            case ("write", "-z"):
                zeroes = true
            case ("write", "-c"):
                compressed = true
            default:
                return .failure(IOScriptError("\(name): unknown option \(flag)"))
            }
        }
        func offsetAndLength() -> (Int64, Int64)? {
            guard words.count == 2, let offset = parseByteCount(words.first!), let length = parseByteCount(words.last!) else { return nil }
            return (offset, length)
        }
        // A read or a pattern write makes a buffer of its length: bounded here, as qemu-io
        // does, before the image is even opened.
        func lengthFault(_ length: Int64) -> IOScriptError? {
            length <= maximumRequestBytes ? nil : IOScriptError("\(name): length cannot exceed \(maximumRequestBytes), given \(words.last!)")
        }
        switch name {
        case "read":
            guard let (offset, length) = offsetAndLength() else { return .failure(IOScriptError("usage: read [-P BYTE] OFFSET LENGTH")) }
            if let fault = lengthFault(length) { return .failure(fault) }
            return .success(.read(byteOffset: offset, byteCount: length, pattern: pattern))
        case "write":
            guard let (offset, length) = offsetAndLength() else { return .failure(IOScriptError("usage: write [-P BYTE] [-z | -c] OFFSET LENGTH")) }
            if zeroes && pattern != nil { return .failure(IOScriptError("write: -z and -P exclude each other")) }
            if zeroes && compressed { return .failure(IOScriptError("write: -z and -c exclude each other")) }
            if !zeroes, let fault = lengthFault(length) { return .failure(fault) }
            let kind: WriteKind = zeroes ? .zeroes : compressed ? .compressed(pattern: pattern ?? 0xcd) : .pattern(pattern ?? 0xcd)
            return .success(.write(byteOffset: offset, byteCount: length, kind: kind))
        case "flush" where words.isEmpty:
            return .success(.flush)
        case "sleep":
            guard words.count == 1, let milliseconds = parseMilliseconds(words.first!) else {
                return .failure(IOScriptError("usage: sleep MILLISECONDS (0 to \(Int64(maximumWaitSeconds) * 1000))"))
            }
            return .success(.sleep(milliseconds: milliseconds))
        case "lock":
            guard words.count == 1, let kind = LockKind.allCases.first(where: { "\($0)" == words.first! }) else {
                return .failure(IOScriptError("usage: lock shared|exclusive"))
            }
            return .success(.lock(kind))
        case "unlock" where words.isEmpty:
            return .success(.unlock)
        default:
            return .failure(IOScriptError("unknown command: \(text)"))
        }
    }
}

extension IOCommandStep {
    /// The command as `-c` takes it, in one canonical spelling.
    public var commandText: String {
        switch self {
        case .read(let offset, let count, let pattern):
            "read \(pattern.map { "-P \($0) " } ?? "")\(offset) \(count)"
        case .write(let offset, let count, .pattern(let pattern)):
            "write -P \(pattern) \(offset) \(count)"
        case .write(let offset, let count, .zeroes):
            "write -z \(offset) \(count)"
        case .write(let offset, let count, .compressed(let pattern)):
            "write -c -P \(pattern) \(offset) \(count)"
        case .flush: "flush"
        case .sleep(let milliseconds): "sleep \(milliseconds)"
        case .lock(let kind): "lock \(kind)"
        case .unlock: "unlock"
        }
    }
}

/// A script that does not parse: no step of it has run.
public struct IOScriptError: Error, CustomStringConvertible {
    /// What is wrong, in qemu-io's words where it has words for it.
    public var description: String
    init(_ description: String) { self.description = description }
}
