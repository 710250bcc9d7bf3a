// JSONOutput: machine-readable output, keys in kebab-case as qemu-img prints them.
import BlockLocking
import FoundationEssentials
import Glibc

func printJSON(_ value: some Encodable) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.keyEncodingStrategy = .convertToKebabCase
    guard let data = try? encoder.encode(value) else { return }
    // As `print` does for text: a failed write to stdout does not change the command's outcome.
    try? writeAll(STDOUT_FILENO, data + [UInt8(ascii: "\n")])
}

struct LeaseOwnerJSON: Encodable {
    var hostId: UInt64
    var hostName: String?
    var generation: UInt64
    var mode: String?
    var hostState: String?

    init(_ owner: LeaseOwner) {
        hostId = owner.hostID
        hostName = owner.hostName
        generation = owner.generation
        mode = owner.mode?.rawValue
        hostState = owner.hostState
    }
}

struct HolderJSON: Encodable {
    var pid: Int32?
    var program: String?
    var locks: [String]
    var ranges: [RangeJSON]
    var note: String?

    init(_ holder: LockHolder) {
        pid = holder.pid
        program = holder.program
        locks = holder.meanings
        ranges = holder.locks.map(RangeJSON.init)
        note = holder.visibilityNote
    }
}

struct RangeJSON: Encodable {
    var family: String
    var kind: String
    var firstByte: Int64
    var lastByte: Int64?

    init(_ record: LockRecord) {
        family = record.family
        kind = record.kind.description
        firstByte = record.firstByte
        lastByte = record.lastByte
    }
}

extension JSONEncoder.KeyEncodingStrategy {
    /// camelCase → kebab-case ("firstByte" → "first-byte").
    static var convertToKebabCase: JSONEncoder.KeyEncodingStrategy {
        .custom { path in
            let key = path.last!.stringValue
            var kebab = ""
            for character in key {
                if character.isUppercase {
                    kebab += "-" + character.lowercased()
                } else {
                    kebab.append(character)
                }
            }
            return KebabKey(stringValue: kebab)
        }
    }
}

private struct KebabKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
