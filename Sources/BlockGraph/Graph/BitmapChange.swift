/// One operation of `blk bitmap` (qemu-img bitmap's), applied to one persistent dirty bitmap.
public enum BitmapChange: Sendable, Hashable {
    /// A new, empty, enabled bitmap; nil granularity: the format's default.
    case add(granularity: Int64?)
    /// The bitmap deleted, its clusters freed.
    case remove
    /// Every bit cleared.
    case clear
    /// Writes mark the bitmap.
    case enable
    /// Writes no longer mark the bitmap.
    case disable
    /// Every granule overlapping one of these byte ranges (another bitmap's dirty ranges) set.
    case merge([Range<Int64>])
}
