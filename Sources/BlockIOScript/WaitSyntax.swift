// Waits as the command line and `blk io` scripts take them — seconds with decimals
// (`--timeout 2.5`), whole milliseconds (`sleep 250`) — bounded before any conversion, so no
// value overflows into nanoseconds (1e10 seconds trapped) or waits for ever by accident.

/// The longest wait an option or a script may ask for: 1,000,000 s, 11.6 days. Longer is a typo;
/// at most this, every conversion below fits an Int64 of nanoseconds with room to spare.
public let maximumWaitSeconds = 1_000_000

/// `text` as seconds — a decimal number from 0 to `maximumWaitSeconds` — in nanoseconds; nil
/// for anything else (negative, NaN, infinite, too long, not a number).
public func parseSeconds(_ text: String) -> Int64? {
    // NaN fails both comparisons.
    guard let seconds = Double(text), seconds >= 0, seconds <= Double(maximumWaitSeconds) else { return nil }
    return Int64((seconds * 1e9).rounded())
}

/// `text` as whole milliseconds from 0 to `maximumWaitSeconds` × 1000; nil for anything else.
public func parseMilliseconds(_ text: String) -> Int64? {
    guard let milliseconds = Int64(text), (0...Int64(maximumWaitSeconds) * 1000).contains(milliseconds) else { return nil }
    return milliseconds
}
