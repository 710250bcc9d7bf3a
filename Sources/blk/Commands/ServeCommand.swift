// `blk serve`: the NBD server is the program blk-serve beside blk (docs/serve.md), as qemu-nbd is
// beside qemu-img, so that blk's short verbs do not load swift-nio. Exec, not spawn: the signals
// the caller sends, the exit code it waits for and the locks and leases all belong to the server
// process itself, under the pid the caller started.
import ArgumentParser
import BlockCLI
import Glibc
import Posix

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Export images over NBD (fixed newstyle) while holding their locks and leases.",
        discussion: "Runs the blk-serve program installed beside blk; `blk serve --help` shows its options."
    )

    // Captured for passthrough, --help included: the server parses its own arguments.
    @Argument(parsing: .captureForPassthrough, help: "The server's options and images.")
    var arguments: [String] = []

    func run() throws {
        let server = try Self.serverPath()
        let argv = (["blk-serve"] + arguments).map { strdup($0) } + [nil]
        execv(server, argv)
        // execv returns only when it failed.
        let reason = String(cString: strerror(errno))
        argv.forEach { free($0) }
        printError("cannot run \(server), the program `blk serve` runs: \(reason)")
        throw ExitCode(ExitStatus.unsupported)
    }

    /// blk-serve in the folder of the running blk, whatever name or symlink blk was started by.
    private static func serverPath() throws -> String {
        switch currentExecutableFolder() {
        case .success(let folder):
            return folder + "/blk-serve"
        case .failure(let error):
            printError("cannot find blk-serve, the program `blk serve` runs: /proc/self/exe: \(error)")
            throw ExitCode(ExitStatus.unsupported)
        }
    }
}
