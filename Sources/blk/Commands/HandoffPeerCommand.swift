// `blk bench handoff-peer`: the waiting process of `blk bench lock`'s hand-over measurement
// (BlockBench's HandoffPeer), started by the benchmark itself.
import ArgumentParser
import BlockBench

struct HandoffPeerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "handoff-peer", abstract: "The waiting process of `blk bench lock` (internal).", shouldDisplay: false)

    @Option var mode: HandoffPeer.Mode
    @Argument var image: String

    func run() throws {
        try HandoffPeer.serve(image: image, mode: mode)
    }
}

extension HandoffPeer.Mode: ExpressibleByArgument {}
