// BigEndian: qcow2 stores every integer big-endian; these read and write them in byte arrays.

extension Array where Element == UInt8 {
    func bigEndian<T: FixedWidthInteger>(_: T.Type, at byteOffset: Int) -> T {
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size { value = value << 8 | T(self[byteOffset + index]) }
        return value
    }

    /// The bytes as a table of big-endian 64-bit entries (L1, L2 and refcount tables).
    /// Loads whole words, not byte by byte: checks decode millions of entries.
    var bigEndianEntries: [UInt64] {
        withUnsafeBytes { bytes in (0..<count / 8).map { UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)) } }
    }

    mutating func setBigEndian<T: FixedWidthInteger>(_ value: T, at byteOffset: Int) {
        let size = MemoryLayout<T>.size
        for index in 0..<size { self[byteOffset + index] = UInt8(truncatingIfNeeded: value >> (8 * (size - 1 - index))) }
    }
}
