// ByteCount: sizes and offsets as command-line arguments (the syntax is BlockIOScript's
// parseByteCount).
import ArgumentParser
import BlockIOScript

struct ByteCount: ExpressibleByArgument, Hashable {
    let value: Int64

    init(_ value: Int64) { self.value = value }

    init?(argument: String) {
        guard let value = Self.parse(argument) else { return nil }
        self.value = value
    }

    static func parse(_ text: String) -> Int64? { parseByteCount(text) }

    /// A default as help shows it, in the syntax the option takes: "64k", "1G", "4096".
    var defaultValueDescription: String {
        for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "k")] where value != 0 && value % (1 << shift) == 0 {
            return "\(value >> shift)\(suffix)"
        }
        return "\(value)"
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
    var text = formatted("%.3g", value)
    if text.contains("e") { text = formatted("%.0f", value) }
    return "\(text) \(units[unit])"
}
