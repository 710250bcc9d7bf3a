// Sizes and offsets as qemu-img and qemu-io take them — decimal or 0x hex, with an optional
// K/M/G/T/P/E suffix (powers of 1024) — rejected, never wrapped, when they overflow.

/// The number `text` stands for, or nil for anything else — an overflow included — so a hostile
/// command line is refused instead of wrapping.
public func parseByteCount(_ text: String) -> Int64? {
    var digits = Substring(text)
    var multiplier: Int64 = 1
    let suffixes: [Character: Int64] = ["k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50, "e": 1 << 60]
    let isHex = digits.lowercased().hasPrefix("0x")
    if !isHex, let last = digits.last?.lowercased().first, let scale = suffixes[last] {
        multiplier = scale
        digits = digits.dropLast()
    } else if !isHex, digits.last == "b" || digits.last == "B" {
        digits = digits.dropLast()
    }
    let number: Int64?
    if isHex {
        number = Int64(digits.dropFirst(2), radix: 16)
    } else {
        number = Int64(digits)
    }
    guard let number, number >= 0 else { return nil }
    let (scaled, overflow) = number.multipliedReportingOverflow(by: multiplier)
    return overflow ? nil : scaled
}
