// `blk amend`: change a qcow2 image's options in place, as `qemu-img amend` 7.2 does —
// compat=0.10|1.1, lazy_refcounts=on|off, refcount_bits=N and size — through the format's
// `amend` operation (Qcow2Amend.swift has the order of the steps). The image is opened writable,
// with the locks qemu-img takes (write and resize held, neither shared), and its lease.
import ArgumentParser
import BlockCLI
import BlockLayer

struct AmendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "amend", abstract: "Change an image's format options in place (qemu-img amend).")

    @OptionGroup var imageOptions: ImageOptions
    @Option(name: .customShort("o"), help: ArgumentHelp("The options to change, NAME=VALUE,... (qcow2: compat, lazy_refcounts, refcount_bits, size).", valueName: "options"))
    var options: [String] = []
    @Flag(name: .customShort("p"), help: "Show progress even when stderr is not a terminal.") var progress = false
    @Flag(name: .customShort("q"), help: "Quiet: no progress.") var quiet = false
    @Flag(help: "Accepted as qemu-img accepts it; it matters only for encryption options, which blk refuses.") var force = false
    @Flag(help: "Print errors also as JSON on stdout.") var json = false
    @Argument(help: "The image file.") var image: String

    func validate() throws {
        if options.isEmpty { throw ValidationError("Must specify options (-o)") }
    }

    func run() throws {
        let bar = Progress(forced: progress && !quiet)
        let opened = try imageOptions.open(image, writable: true, json: json)
        do throws(BlockError) {
            let parsed = try FormatOptions(parsing: options)
            defer { bar.finish() }
            let warnings = try opened.amend(parsed, force: force) { fraction in
                if !quiet { bar.update(fraction, "") }
            }
            warnings.forEach(printWarning)
            try opened.close()
        } catch {
            throw report(error, json: json)
        }
    }
}
