// ByteCount: sizes and offsets as command-line arguments (the syntax is BlockGraph's
// parseByteCount, which format options share).
import ArgumentParser
import BlockGraph

package struct ByteCount: ExpressibleByArgument, Hashable {
    package let value: Int64

    package init(_ value: Int64) { self.value = value }

    package init?(argument: String) {
        guard let value = Self.parse(argument) else { return nil }
        self.value = value
    }

    package static func parse(_ text: String) -> Int64? { parseByteCount(text) }

    /// A default as help shows it, in the syntax the option takes: "64k", "1G", "4096".
    package var defaultValueDescription: String {
        for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "k")] where value != 0 && value % (1 << shift) == 0 {
            return "\(value >> shift)\(suffix)"
        }
        return "\(value)"
    }
}
