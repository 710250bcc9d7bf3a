// RefcountWidth: one of qcow2's seven refcount widths (refcount_order 0–6: 1 to 64 bits). Widths
// of a byte or more are big-endian; narrower ones are packed with the lowest-numbered entry in the
// least significant bits of its byte (qcow2.rst, "Host cluster management").

struct RefcountWidth: Sendable {
    let bits: Int

    init(order: UInt32) { bits = 1 << Int(order) }

    /// The largest refcount this width holds; a cluster shared more often cannot be shared.
    var maximum: UInt64 { bits == 64 ? .max : (1 << UInt64(bits)) - 1 }

    /// How many clusters one refcount block of `clusterSize` bytes counts.
    func entriesPerBlock(clusterSize: Int) -> UInt64 { UInt64(clusterSize) * 8 / UInt64(bits) }

    func value(in block: [UInt8], at index: Int) -> UInt64 {
        switch bits {
        case 64: return block.bigEndian(UInt64.self, at: index * 8)
        case 32: return UInt64(block.bigEndian(UInt32.self, at: index * 4))
        case 16: return UInt64(block.bigEndian(UInt16.self, at: index * 2))
        case 8: return UInt64(block[index])
        default:
            let perByte = 8 / bits
            return UInt64(block[index / perByte] >> UInt8((index % perByte) * bits)) & maximum
        }
    }

    /// `count` refcounts of a block from entry `first` on, decoded in one go, for the check that
    /// walks them all.
    func values(in block: [UInt8], from first: Int, count: Int) -> [UInt64] {
        block.withUnsafeBytes { bytes in
            [UInt64](unsafeUninitializedCapacity: count) { values, initialized in
                // One loop per width: the switch outside, as the check decodes millions of entries.
                switch bits {
                case 64:
                    for slot in 0..<count { values[slot] = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: (first + slot) * 8, as: UInt64.self)) }
                case 32:
                    for slot in 0..<count { values[slot] = UInt64(UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: (first + slot) * 4, as: UInt32.self))) }
                case 16:
                    for slot in 0..<count { values[slot] = UInt64(UInt16(bigEndian: bytes.loadUnaligned(fromByteOffset: (first + slot) * 2, as: UInt16.self))) }
                case 8:
                    for slot in 0..<count { values[slot] = UInt64(bytes[first + slot]) }
                default:
                    let perByte = 8 / bits
                    for slot in 0..<count {
                        let index = first + slot
                        values[slot] = UInt64(bytes[index / perByte] >> UInt8((index % perByte) * bits)) & maximum
                    }
                }
                initialized = count
            }
        }
    }

    /// Stores `value`, which the caller has checked against `maximum`.
    func set(_ value: UInt64, in block: inout [UInt8], at index: Int) {
        switch bits {
        case 64: block.setBigEndian(value, at: index * 8)
        case 32: block.setBigEndian(UInt32(value), at: index * 4)
        case 16: block.setBigEndian(UInt16(value), at: index * 2)
        case 8: block[index] = UInt8(value)
        default:
            let perByte = 8 / bits
            let shift = UInt8((index % perByte) * bits)
            let mask = UInt8(maximum) << shift
            block[index / perByte] = block[index / perByte] & ~mask | UInt8(value) << shift
        }
    }
}
