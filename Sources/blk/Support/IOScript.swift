// IOScript: the qemu-io-like commands of `blk io -c …`, parsed before anything runs, so a typo
// in the fifth command does not leave the first four done.
import BlockLocking

enum IOCommandStep: Equatable {
    case read(byteOffset: Int64, byteCount: Int64, pattern: UInt8?)
    case write(byteOffset: Int64, byteCount: Int64, pattern: UInt8, zeroes: Bool)
    case flush
    case sleep(milliseconds: Int64)
    case lock(LockKind)
    case unlock

    /// Parses one command; the error says what is wrong with it.
    static func parse(_ text: String) -> Result<IOCommandStep, IOScriptError> {
        var words = text.split(separator: " ").map(String.init)[...]
        guard let name = words.popFirst() else { return .failure(IOScriptError("empty command")) }
        var pattern: UInt8?
        var zeroes = false
        while let flag = words.first, flag.hasPrefix("-") {
            words.removeFirst()
            switch (name, flag) {
            case ("read", "-P"), ("write", "-P"):
                guard let value = words.popFirst().flatMap(ByteCount.parse), value <= 255 else {
                    return .failure(IOScriptError("\(name): -P takes a byte value (0–255 or 0x00–0xff)"))
                }
                pattern = UInt8(value)
            case ("write", "-z"):
                zeroes = true
            default:
                return .failure(IOScriptError("\(name): unknown option \(flag)"))
            }
        }
        func offsetAndLength() -> (Int64, Int64)? {
            guard words.count == 2, let offset = ByteCount.parse(words.first!), let length = ByteCount.parse(words.last!) else { return nil }
            return (offset, length)
        }
        switch name {
        case "read":
            guard let (offset, length) = offsetAndLength() else { return .failure(IOScriptError("usage: read [-P BYTE] OFFSET LENGTH")) }
            return .success(.read(byteOffset: offset, byteCount: length, pattern: pattern))
        case "write":
            guard let (offset, length) = offsetAndLength() else { return .failure(IOScriptError("usage: write [-P BYTE] [-z] OFFSET LENGTH")) }
            if zeroes && pattern != nil { return .failure(IOScriptError("write: -z and -P exclude each other")) }
            return .success(.write(byteOffset: offset, byteCount: length, pattern: pattern ?? 0xcd, zeroes: zeroes))
        case "flush" where words.isEmpty:
            return .success(.flush)
        case "sleep":
            guard words.count == 1, let milliseconds = Int64(words.first!), milliseconds >= 0 else {
                return .failure(IOScriptError("usage: sleep MILLISECONDS"))
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

struct IOScriptError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
