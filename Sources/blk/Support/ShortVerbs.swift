// ShortVerbs: `blk info`, `locks` and `io` parsed without swift-argument-parser when their
// arguments are plain, as VM managers write them many times per VM (issue 21; Blk.main answers
// a lone `--version` itself).
// ArgumentParser builds each command's options by reflection on every run: a Mirror over the
// property wrappers and, for each new wrapper type, a question to the Swift runtime whether it
// conforms to a protocol, which on Linux scans every conformance record of the binary. That was
// most of a short command's instructions (docs/qcow2.md, Start-up). This parse takes only what
// it can take exactly as ArgumentParser would — the verb first, known flags and options as
// separate words, each at most once (`-c` repeatable), one image that does not start with `-` —
// and gives up on anything else (help, combined or `=` forms, `--`, other options, errors), which
// ArgumentParser then parses from the start: it alone speaks to the user about arguments.
import ArgumentParser
import BlockCLI

enum ShortVerbs {
    /// The command, or nil for ArgumentParser.
    static func parse(_ arguments: [String]) -> (any ParsableCommand)? {
        guard let verb = arguments.first else { return nil }
        let rest = arguments.dropFirst()
        switch verb {
        case "info":
            guard let words = PlainWords(rest, flags: ["--json"] + imageFlags, options: imageOptions) else { return nil }
            var command = InfoCommand()
            command.imageOptions = words.imageOptions
            command.json = words.has("--json")
            command.image = words.image
            return command
        case "locks":
            guard let words = PlainWords(rest, flags: ["--json"], options: []) else { return nil }
            var command = LocksCommand()
            command.json = words.has("--json")
            command.image = words.image
            command.leases = LeaseConfigOptions.unset
            return command
        case "io":
            guard let words = PlainWords(rest, flags: ["--json"] + imageFlags, options: imageOptions + ["-c"], repeatable: "-c") else { return nil }
            var command = IOCommand()
            command.imageOptions = words.imageOptions
            command.commands = words.values("-c")
            command.timeout = IOCommand.defaultTimeout
            command.json = words.has("--json")
            command.image = words.image
            // A step ArgumentParser would refuse is its to report, with the usage.
            do { try command.validate() } catch { return nil }
            return command
        default:
            return nil
        }
    }

    private static let imageFlags = ["-r", "--read-only", "-U", "--force-share"]
    private static let imageOptions = ["-f", "--format"]
}

/// The words after the verb, when every one is a known flag, a known option and its value, or the image.
private struct PlainWords {
    private var flags: Set<String> = []
    private var options: [(name: String, value: String)] = []
    let image: String

    init?(_ words: ArraySlice<String>, flags knownFlags: [String], options knownOptions: [String], repeatable: String? = nil) {
        var image: String?
        var index = words.startIndex
        while index < words.endIndex {
            let word = words[index]
            index += 1
            if knownFlags.contains(word) {
                guard flags.insert(Self.canonical(word)).inserted else { return nil }
            } else if knownOptions.contains(word) {
                guard index < words.endIndex, Self.isPlain(words[index]),
                      word == repeatable || !options.contains(where: { $0.name == Self.canonical(word) }) else { return nil }
                options.append((Self.canonical(word), words[index]))
                index += 1
            } else if Self.isPlain(word), image == nil {
                image = word
            } else {
                return nil
            }
        }
        guard let image else { return nil }
        self.image = image
    }

    /// A value or an image: ArgumentParser reads a word starting with `-` as an option.
    private static func isPlain(_ word: String) -> Bool { !word.isEmpty && !word.hasPrefix("-") }

    /// The long name of a short flag or option, so that `-r --read-only` counts as given twice.
    private static func canonical(_ name: String) -> String {
        switch name {
        case "-r": "--read-only"
        case "-U": "--force-share"
        case "-f": "--format"
        default: name
        }
    }

    func has(_ flag: String) -> Bool { flags.contains(flag) }

    func values(_ option: String) -> [String] { options.filter { $0.name == option }.map { $0.value } }

    var imageOptions: ImageOptions {
        ImageOptions.given(format: values("--format").first, readOnly: has("--read-only"), forceShare: has("--force-share"))
    }
}
