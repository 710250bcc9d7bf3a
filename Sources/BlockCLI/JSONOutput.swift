// JSONOutput: machine-readable output, keys in kebab-case as qemu-img prints them.
import BlockLocking
import FoundationEssentials
import Glibc

package func printJSON(_ value: some Encodable) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.keyEncodingStrategy = .convertToKebabCase
    guard let data = try? encoder.encode(value) else { return }
    // As `print` does for text: a failed write to stdout does not change the command's outcome.
    try? writeAll(STDOUT_FILENO, data + [UInt8(ascii: "\n")])
}

package struct LeaseOwnerJSON: Encodable {
    package var hostId: UInt64
    package var hostName: String?
    package var generation: UInt64
    package var mode: String?
    package var hostState: String?

    package init(_ owner: LeaseOwner) {
        hostId = owner.hostID
        hostName = owner.hostName
        generation = owner.generation
        mode = owner.mode?.rawValue
        hostState = owner.hostState
    }
}

package struct HolderJSON: Encodable {
    package var pid: Int32?
    package var program: String?
    package var locks: [String]
    package var ranges: [RangeJSON]
    package var note: String?

    package init(_ holder: LockHolder) {
        pid = holder.pid
        program = holder.program
        locks = holder.meanings
        ranges = holder.locks.map(RangeJSON.init)
        note = holder.visibilityNote
    }
}

package struct RangeJSON: Encodable {
    package var family: String
    package var kind: String
    package var firstByte: Int64
    package var lastByte: Int64?

    package init(_ record: LockRecord) {
        family = record.family
        kind = record.kind.description
        firstByte = record.firstByte
        lastByte = record.lastByte
    }
}

extension JSONEncoder.KeyEncodingStrategy {
    /// camelCase → kebab-case ("firstByte" → "first-byte").
    package static var convertToKebabCase: JSONEncoder.KeyEncodingStrategy {
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
    package init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
