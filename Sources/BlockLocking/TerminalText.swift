// escapingControlCharacters: the one escaping every text printer uses for strings it does not
// control — a program name from /proc/PID/comm, a qcow2 feature or backing file name, a blob
// name from a state directory, a host name from a lockspace. Printed raw, a control character
// moves the cursor, rewrites earlier lines, retitles the terminal or forges a line of output.
// JSON output needs none of this: the encoder escapes control characters itself.

/// `text` with each control character (C0, DEL and C1: U+0000–U+001F, U+007F–U+009F) spelled
/// `\xHH`. `keepingNewlines` keeps the line feeds of a message whose lines are ours, for printers
/// that escape a whole message as a last defence.
public func escapingControlCharacters(_ text: String, keepingNewlines: Bool = false) -> String {
    guard text.unicodeScalars.contains(where: { isControl($0) && !(keepingNewlines && $0 == "\n") }) else { return text }
    var escaped = ""
    escaped.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
    for scalar in text.unicodeScalars {
        if isControl(scalar) && !(keepingNewlines && scalar == "\n") {
            let hex = String(scalar.value, radix: 16)
            escaped += "\\x" + (hex.count < 2 ? "0" : "") + hex
        } else {
            escaped.unicodeScalars.append(scalar)
        }
    }
    return escaped
}

private func isControl(_ scalar: Unicode.Scalar) -> Bool {
    scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value)
}
