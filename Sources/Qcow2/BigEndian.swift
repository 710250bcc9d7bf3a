// BigEndian: qcow2 stores every integer big-endian; these read and write them in byte arrays.

extension Array where Element == UInt8 {
    func bigEndian<T: FixedWidthInteger>(_: T.Type, at byteOffset: Int) -> T {
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size { value = value << 8 | T(self[byteOffset + index]) }
        return value
    }

    /// The bytes as a table of big-endian 64-bit entries (L1, L2 and refcount tables).
    var bigEndianEntries: [UInt64] { (0..<count / 8).map { bigEndian(UInt64.self, at: $0 * 8) } }

    mutating func setBigEndian<T: FixedWidthInteger>(_ value: T, at byteOffset: Int) {
        let size = MemoryLayout<T>.size
        for index in 0..<size { self[byteOffset + index] = UInt8(truncatingIfNeeded: value >> (8 * (size - 1 - index))) }
    }
}
