// humanSize: sizes as qemu-img prints them (its size_to_str), for every tool that shows a size
// beside qemu-img's: info, convert's progress, the benchmarks' scenario names.
import Posix

/// qemu-img's human size: three significant digits and a binary unit ("1 MiB", "1.46 GiB").
package func humanSize(_ bytes: Int64) -> String {
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
