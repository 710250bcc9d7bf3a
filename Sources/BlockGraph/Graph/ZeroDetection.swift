// ZeroDetection: whether a buffer is all zeroes, cheaply enough to ask of every write (detect
// zeroes) and every piece a copy reads: eight bytes at a time, 64 to a test, so a buffer of data
// is usually told apart by its first test.

extension UnsafeRawBufferPointer {
    /// Whether every byte is zero (true for an empty buffer).
    public var isAllZeroes: Bool {
        guard let base = baseAddress else { return true }
        // Loads are unaligned: a write's payload sits wherever the network buffer put it.
        var offset = 0
        while offset + 64 <= count {
            let bits = base.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
                | base.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)
                | base.loadUnaligned(fromByteOffset: offset + 16, as: UInt64.self)
                | base.loadUnaligned(fromByteOffset: offset + 24, as: UInt64.self)
                | base.loadUnaligned(fromByteOffset: offset + 32, as: UInt64.self)
                | base.loadUnaligned(fromByteOffset: offset + 40, as: UInt64.self)
                | base.loadUnaligned(fromByteOffset: offset + 48, as: UInt64.self)
                | base.loadUnaligned(fromByteOffset: offset + 56, as: UInt64.self)
            guard bits == 0 else { return false }
            offset += 64
        }
        while offset + 8 <= count {
            guard base.loadUnaligned(fromByteOffset: offset, as: UInt64.self) == 0 else { return false }
            offset += 8
        }
        while offset < count {
            guard base.load(fromByteOffset: offset, as: UInt8.self) == 0 else { return false }
            offset += 1
        }
        return true
    }
}
