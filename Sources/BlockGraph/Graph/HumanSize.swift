// humanSize: sizes as qemu-img prints them (its size_to_str), for every tool that shows a size
// beside qemu-img's: info, convert's progress, the benchmarks' scenario names.

/// qemu-img's human size: three significant digits and a binary unit ("1 MiB", "1.46 GiB"), as
/// its size_to_str prints the double `bytes / unit` with "%0.3g" — and where that would print an
/// exponent (1000 to 1023), blk prints the whole number. Rounded here in integers from the same
/// double, half to even as printf rounds: a double passed to printf costs a short command four
/// lookups in the Swift runtime's conformance tables.
package func humanSize(_ bytes: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    guard bytes >= 1024 else { return "\(bytes) B" }
    let exact = UInt64(Double(bytes)) // the double qemu-img divides: rounded above 2^53, like it
    var unit = 1
    while unit < units.count - 1 && exact >> (10 * (unit + 1)) != 0 { unit += 1 }
    let shift = UInt64(10 * unit)
    /// exact / 2^shift × scale, rounded half to even.
    func rounded(scale: UInt64) -> UInt64 {
        let (high, low) = exact.multipliedFullWidth(by: scale)
        let quotient = high << (64 - shift) | low >> shift
        let remainder = low & (1 << shift - 1), half: UInt64 = 1 << (shift - 1)
        return remainder > half || (remainder == half && quotient % 2 == 1) ? quotient + 1 : quotient
    }
    let whole = exact >> shift
    var decimals = whole >= 100 ? 0 : whole >= 10 ? 1 : 2
    var significant = rounded(scale: [1, 10, 100][decimals])
    if significant >= 1000 { // four digits: whole, or rounding carried into a fourth
        guard decimals > 0 else { return "\(significant) \(units[unit])" }
        decimals -= 1
        significant = 100
    }
    var digits = String(significant)
    if decimals > 0 {
        digits.insert(".", at: digits.index(digits.endIndex, offsetBy: -decimals))
        while digits.hasSuffix("0") { digits.removeLast() }
        if digits.hasSuffix(".") { digits.removeLast() }
    }
    return "\(digits) \(units[unit])"
}
