// FormatOptions: a format's options as qemu-img's -o takes them, "name=value,name=value" (a
// comma in a value doubled), each typed only by the format that reads it — as QEMU's QemuOpts
// are checked against the format's own option list. A name given twice counts with its last value.

/// The `-o` options of a command, for a format to read and check: it takes the names it knows,
/// then refuses the rest.
public struct FormatOptions: Sendable {
    /// Each name with its last value, and the order names were first given, for refusals.
    private var values: [String: String] = [:]
    private var names: [String] = []

    /// Options as `-o` gives them, one string per `-o`; a name without "=" is an "on" flag, as
    /// QEMU takes it.
    public init(parsing texts: [String]) throws(BlockError) {
        for text in texts where !text.isEmpty {
            for item in Self.items(text) {
                let name = String(item.prefix { $0 != "=" })
                guard !name.isEmpty else { throw BlockError(.invalidRequest, "Invalid option list '\(text)': an option has no name") }
                let value = item.count > name.count ? String(item.dropFirst(name.count + 1)) : "on"
                if values.updateValue(value, forKey: name) == nil { names.append(name) }
            }
        }
    }

    /// The comma-separated items of `text`, with ",," read as a comma inside a value.
    private static func items(_ text: String) -> [String] {
        var items: [String] = [], current = ""
        var characters = text.makeIterator()
        var pending = characters.next()
        while let character = pending {
            pending = characters.next()
            if character == "," && pending == "," {
                current.append(",")
                pending = characters.next()
            } else if character == "," {
                items.append(current)
                current = ""
            } else {
                current.append(character)
            }
        }
        return items + [current]
    }

    /// The names given, in the order first given: for a format whose refusals name the first
    /// one it lacks in words of its own (`qemu-img amend`'s "only supported for image creation").
    public var givenNames: [String] { names }

    /// The value given for `name`, nil when not given.
    public func string(_ name: String) -> String? { values[name] }

    /// A size (decimal or 0x hex, with K/M/G/T/P/E suffixes); out of Int64 is refused.
    public func size(_ name: String) throws(BlockError) -> Int64? {
        guard let text = values[name] else { return nil }
        guard let size = parseByteCount(text) else {
            throw BlockError(.invalidRequest, "Value '\(text)' is not a size in range for parameter '\(name)'")
        }
        return size
    }

    /// A whole number; out of Int64 is refused.
    public func number(_ name: String) throws(BlockError) -> Int64? {
        guard let text = values[name] else { return nil }
        guard let number = Int64(text) else { throw BlockError(.invalidRequest, "Value '\(text)' is not a number in range for parameter '\(name)'") }
        return number
    }

    /// "on" or "off" (QEMU's other spellings too).
    public func flag(_ name: String) throws(BlockError) -> Bool? {
        switch values[name] {
        case nil: return nil
        case "on", "yes", "true", "y": return true
        case "off", "no", "false", "n": return false
        default: throw BlockError(.invalidRequest, "Parameter '\(name)' expects 'on' or 'off'")
        }
    }

    /// One of `T`'s raw values.
    public func choice<T: RawRepresentable<String> & CaseIterable>(_ name: String, of type: T.Type) throws(BlockError) -> T? {
        guard let text = values[name] else { return nil }
        guard let value = T(rawValue: text) else {
            throw BlockError(.invalidRequest, "Invalid value '\(text)' for parameter '\(name)': expected "
                             + T.allCases.map(\.rawValue).joined(separator: ", "))
        }
        return value
    }

    /// Refuses the first option not among `known`, as QEMU refuses a name the format lacks.
    public func refuseUnknown(_ known: Set<String>, format: String) throws(BlockError) {
        if let unknown = names.first(where: { !known.contains($0) }) {
            throw BlockError(.invalidRequest, "Invalid parameter '\(unknown)' for file format '\(format)'")
        }
    }
}
