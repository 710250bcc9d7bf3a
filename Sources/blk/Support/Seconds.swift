// Seconds: a wait given on the command line (`--timeout SEC`), parsed by BlockIOScript's
// parseSeconds — 0 to 1,000,000 seconds, decimals allowed — so that no value traps on its way
// to nanoseconds, and a wrong one is a usage error (64) that says what is taken.
import ArgumentParser
import BlockIOScript

struct Seconds: Hashable, Sendable, CustomStringConvertible {
    let nanoseconds: Int64

    init(_ seconds: Int) { nanoseconds = Int64(seconds) * 1_000_000_000 }

    private init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    /// The option's transform: the value, or why it is refused (ArgumentParser adds the value).
    @Sendable static func parse(_ text: String) throws -> Seconds {
        guard let nanoseconds = parseSeconds(text) else {
            throw ValidationError("a number of seconds from 0 to \(maximumWaitSeconds) is taken (decimals allowed)")
        }
        return Seconds(nanoseconds: nanoseconds)
    }

    var duration: Duration { .nanoseconds(nanoseconds) }

    /// As a message says it: "10 s", "2.5 s".
    var description: String {
        let whole = nanoseconds / 1_000_000_000, fraction = nanoseconds % 1_000_000_000
        guard fraction != 0 else { return "\(whole) s" }
        var digits = String(fraction)
        digits = String(repeating: "0", count: 9 - digits.count) + digits
        while digits.hasSuffix("0") { digits.removeLast() }
        return "\(whole).\(digits) s"
    }
}
