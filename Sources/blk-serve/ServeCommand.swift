// `blk serve`: images exported over NBD (docs/serve.md). Parsing, the ready line and exit codes
// here; the server is BlockServe's NBDServer, run with the control socket in a ServiceGroup of
// swift-service-lifecycle, which turns SIGTERM and SIGINT into a graceful stop. The images stay open, their locks and
// leases held, from before the socket is bound until after the last connection has ended and
// they are flushed and closed. A program of its own, as qemu-nbd is beside qemu-img, so that blk's
// short verbs do not load the network stack; `blk serve` execs it.
import ArgumentParser
import BlockCLI
import BlockLayer
import BlockServe
import BlockServeTLS
import Glibc
import Logging
import ServiceLifecycle

extension Logger.Level: @retroactive ExpressibleByArgument {}
extension DiscardMode: ExpressibleByArgument {}
extension DetectZeroesMode: ExpressibleByArgument {}

@main
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        // Users type `blk serve`, which execs this program with the same arguments.
        commandName: "blk serve",
        abstract: "Export images over NBD (fixed newstyle) while holding their locks and leases.",
        discussion: """
            Listens on a Unix socket (--socket PATH, or blk-serve.sock in $XDG_RUNTIME_DIR by \
            default), made with mode 0600, never replacing a file already at the path; or on TCP \
            with --bind (loopback unless an address is given). Prints one line, "listening on \
            ADDRESS", once clients may connect. Each image is an export: named by --export-name \
            (once per image, in order), else the default export "" for a single image, or the \
            image's file name for several. Without --persistent the server stops when its last \
            client leaves. SIGTERM or SIGINT (or quit on the control socket): stop accepting, \
            finish the requests under way, flush, release the images, exit 0. --control PATH \
            answers JSON lines ({"execute": "status"}, inactivate, activate, quit) on a second \
            Unix socket; --inactive starts a migration destination that holds no locks and \
            refuses writes until activate. With --tls-creds every client must use TLS \
            (NBD_OPT_STARTTLS) with a certificate from DIR/ca-cert.pem, as qemu-nbd requires; \
            credentials that cannot be used exit 77 before the server listens.
            """
    )

    @OptionGroup var imageOptions: ImageOptions
    @Option(help: ArgumentHelp("Listen on a Unix socket created at PATH.", valueName: "path")) var socket: String?
    @Option(help: ArgumentHelp("Listen on TCP ADDR:PORT, [IPV6]:PORT or :PORT (address 127.0.0.1, port 10809 when left out).",
                               valueName: "addr:port"))
    var bind: String?
    @Option(name: .customLong("export-name"), help: ArgumentHelp("The export's name, once per image in order.", valueName: "name"))
    var exportNames: [String] = []
    @Option(help: "The most clients at once (1 to 1000).") var shared = 1
    @Flag(help: "Keep serving after the last client leaves.") var persistent = false
    @Option(name: .customLong("tls-creds"),
            help: ArgumentHelp("Require TLS, with qemu's layout of X.509 files in DIR: ca-cert.pem (the clients' authority), server-cert.pem, server-key.pem.",
                               valueName: "dir"))
    var tlsCredentials: String?
    @Flag(name: .customLong("tls-required"), help: "Refuse to start without --tls-creds (TLS is always required with them).")
    var tlsRequired = false
    @Option(help: ArgumentHelp("Answer control requests (one JSON object a line: status, inactivate, activate, quit) on a Unix socket created at PATH.",
                               valueName: "path"))
    var control: String?
    @Flag(help: "Start as a migration destination: the images opened without their locks and lease, writes refused (EPERM), until activate on the control socket.")
    var inactive = false
    @Option(help: "Trims: ignore (succeed, change nothing) or unmap (zero and deallocate where the format can); zeroing deallocates only with unmap.")
    var discard = DiscardMode.ignore
    @Option(name: .customLong("detect-zeroes"), help: "Writes of zeroes: off, on (made write-zeroes) or unmap (which may deallocate; needs --discard unmap).")
    var detectZeroes = DetectZeroesMode.off
    @Option(help: "Diagnostics on stderr from this level up: trace, debug, info, notice, warning, error, critical.")
    var logLevel = Logger.Level.warning
    @Argument(help: "The images to serve.") var images: [String]

    func validate() throws {
        if socket != nil && bind != nil { throw ValidationError("--socket and --bind exclude each other") }
        if inactive && control == nil { throw ValidationError("--inactive needs --control: only its activate makes the images writable") }
        if images.isEmpty { throw ValidationError("missing the image to serve") }
        if !exportNames.isEmpty && exportNames.count != images.count {
            throw ValidationError("--export-name is given \(exportNames.count) times for \(images.count) images: give it once per image, or not at all")
        }
        if !(1...1000).contains(shared) { throw ValidationError("--shared must be from 1 to 1000") }
        if tlsRequired && tlsCredentials == nil { throw ValidationError("--tls-required needs --tls-creds DIR") }
        if detectZeroes == .unmap && discard != .unmap {
            throw ValidationError("setting --detect-zeroes to unmap is not allowed without setting --discard to unmap")
        }
        if Set(names).count != names.count { throw ValidationError("two exports would have the same name: give --export-name for each image") }
    }

    /// The export names, one per image.
    private var names: [String] {
        if !exportNames.isEmpty { return exportNames }
        if images.count == 1 { return [""] }
        return images.map { String($0.split(separator: "/").last ?? Substring($0)) }
    }

    func run() async throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let address: NBDListenAddress
        do throws(BlockError) {
            address = try listenAddress()
        } catch {
            throw report(error, json: false)
        }
        // Before the images are opened and their locks taken: bad credentials change nothing.
        var tls: NBDTLSCredentials?
        if let tlsCredentials {
            do throws(NBDTLSCredentialError) {
                tls = try NBDTLSCredentials(directory: tlsCredentials)
            } catch {
                printError(error.description)
                throw ExitCode(ExitStatus.keyProblem)
            }
        }
        var options = imageOptions.openOptions(writable: true)
        options.inactive = inactive
        var opened: [BlockImage] = []
        for path in images { opened.append(try openImage(path, options, json: false)) }
        let logger = Logger(label: "blk.serve")
        let server: NBDServer
        do throws(BlockError) {
            let exports = zip(names, opened).map { NBDExport(name: $0, image: $1, discard: discard, detectZeroes: detectZeroes) }
            server = try NBDServer(exports: exports, address: address,
                                   connectionLimit: shared, persistent: persistent, tls: tls, logger: logger)
        } catch {
            throw report(error, json: false)
        }
        var failure = await serveUntilStopped(server, logger: logger)
        // The connections have ended: make what they wrote durable and let the images go (an
        // activation may have replaced an export's image with a fresh open of it).
        for export in server.exports {
            do throws(BlockError) { try export.image.close() } catch { failure = failure ?? error }
        }
        if let failure { throw report(failure, json: false) }
    }

    private func listenAddress() throws(BlockError) -> NBDListenAddress {
        if let bind { return try NBDListenAddress(bind: bind) }
        if let socket { return .unix(path: socket) }
        guard let runtime = getenv("XDG_RUNTIME_DIR").map({ String(cString: $0) }), !runtime.isEmpty else {
            throw BlockError(.invalidRequest, "give --socket PATH or --bind ADDR:PORT: XDG_RUNTIME_DIR is not set for the default socket")
        }
        return .unix(path: runtime + "/blk-serve.sock")
    }

    /// Runs the server, and the control socket if asked for, until SIGTERM, SIGINT, `quit` or
    /// (without --persistent) the last client's leaving; the failure, if any.
    private func serveUntilStopped(_ server: NBDServer, logger: Logger) async -> BlockError? {
        do {
            var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
            // Bound first, so that the "listening" line means both sockets are ready.
            if let control {
                services.append(.init(service: try await ControlSocket.bind(path: control, server: server, logger: logger)))
            }
            let nbd = NBDService(server: server) { address in try? writeAll(STDOUT_FILENO, "listening on \(address)\n".utf8) }
            // The server stopping for any reason stops the control socket too.
            services.append(.init(service: nbd, successTerminationBehavior: .gracefullyShutdownGroup))
            let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint],
                                                                              logger: logger))
            try await group.run()
            return nil
        } catch let error as BlockError {
            return error
        } catch {
            return BlockError(.ioError, "blk serve failed: \(error)")
        }
    }
}
