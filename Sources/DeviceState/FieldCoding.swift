// FieldCoding: the big-endian fields of the store's on-disk structures (docs/state.md), read
// with bounds checks so a hostile or truncated structure is an error, never a trap.

struct FieldWriter {
    private(set) var bytes: [UInt8] = []

    mutating func append(_ value: UInt8) { bytes.append(value) }
    mutating func append(_ value: UInt16) { appendBigEndian(UInt64(value), byteCount: 2) }
    mutating func append(_ value: UInt32) { appendBigEndian(UInt64(value), byteCount: 4) }
    mutating func append(_ value: UInt64) { appendBigEndian(value, byteCount: 8) }
    mutating func append(_ values: some Sequence<UInt8>) { bytes.append(contentsOf: values) }

    private mutating func appendBigEndian(_ value: UInt64, byteCount: Int) {
        for index in (0..<byteCount).reversed() { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(index * 8))) }
    }
}

struct FieldReader {
    let bytes: [UInt8]
    private(set) var position: Int
    /// Names the structure in the errors ("directory slot A").
    let what: String

    init(_ bytes: [UInt8], at position: Int = 0, what: String) {
        self.bytes = bytes
        self.position = position
        self.what = what
    }

    var remaining: Int { bytes.count - position }

    mutating func bytes(_ count: Int) throws(StateError) -> [UInt8] {
        guard count >= 0, count <= remaining else {
            throw StateError(.corrupt, "\(what) is truncated: \(count) bytes needed at byte \(position), \(remaining) left")
        }
        defer { position += count }
        return Array(bytes[position..<position + count])
    }

    mutating func uint8() throws(StateError) -> UInt8 { try bytes(1)[0] }
    mutating func uint16() throws(StateError) -> UInt16 { UInt16(try bigEndian(2)) }
    mutating func uint32() throws(StateError) -> UInt32 { UInt32(try bigEndian(4)) }
    mutating func uint64() throws(StateError) -> UInt64 { try bigEndian(8) }

    private mutating func bigEndian(_ count: Int) throws(StateError) -> UInt64 {
        try bytes(count).reduce(0) { $0 << 8 | UInt64($1) }
    }
}
