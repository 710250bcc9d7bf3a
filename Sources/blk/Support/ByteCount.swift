// ByteCount: sizes and offsets as qemu-img and qemu-io take them — decimal or 0x hex, with an
// optional K/M/G/T/P/E suffix (powers of 1024) — rejected, never wrapped, when they overflow.
import ArgumentParser

struct ByteCount: ExpressibleByArgument, Hashable {
    let value: Int64

    init(_ value: Int64) { self.value = value }

    init?(argument: String) {
        guard let value = Self.parse(argument) else { return nil }
        self.value = value
    }

    static func parse(_ text: String) -> Int64? {
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
}

/// qemu-img's human size: three significant digits and a binary unit ("1 MiB", "1.46 GiB").
func humanSize(_ bytes: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    if unit == 0 { return "\(bytes) B" }
    var text = String(format: "%.3g", value)
    if text.contains("e") { text = String(format: "%.0f", value) }
    return "\(text) \(units[unit])"
}
