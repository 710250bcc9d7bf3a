// blk: the command-line tool. Commands are thin: they parse, call a library type that does the
// work, print, and exit with interface.md's codes (Support/CommandFailure.swift).
import ArgumentParser

@main
struct Blk: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blk",
        abstract: "A block layer for VM images that many processes and hosts can share safely.",
        version: "blk version 0.1.0",
        subcommands: [CreateCommand.self, InfoCommand.self, CheckCommand.self, IOCommand.self, MapCommand.self, CompareCommand.self, MeasureCommand.self, ConvertCommand.self, ResizeCommand.self, SnapshotCommand.self, RebaseCommand.self, CommitCommand.self, AmendCommand.self, BitmapCommand.self, LocksCommand.self, HoldCommand.self, LeaseCommand.self, ServeCommand.self, StateCommand.self, BenchCommand.self]
    )

    /// The short verbs with plain arguments skip ArgumentParser's reflection (Support/ShortVerbs.swift);
    /// their failures end as ArgumentParser's `main` ends them.
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments == ["--version"] {
            print(configuration.version)
            return
        }
        guard var command = ShortVerbs.parse(arguments) else { return main(takingNegativeSize(arguments)) }
        do {
            try command.run()
        } catch {
            exit(withError: error)
        }
    }

    /// `blk resize IMAGE -1G`: qemu-img takes its last argument as the size before it parses
    /// options, so a size to take away needs no `--`; ArgumentParser would read it as an option.
    private static func takingNegativeSize(_ arguments: [String]) -> [String] {
        guard arguments.first == "resize", !arguments.contains("--"), let last = arguments.last,
              last.count > 1, last.hasPrefix("-"), last.dropFirst().first?.isNumber == true else { return arguments }
        return Array(arguments.dropLast()) + ["--", last]
    }
}
