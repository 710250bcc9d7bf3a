// `blk bitmap`: change an image's persistent dirty bitmaps as `qemu-img bitmap` 7.2 does —
// --add, --remove, --clear, --enable, --disable and --merge SOURCE, repeatable and applied in
// the order given, to one bitmap — through the format's `changeBitmap` operation
// (Qcow2BitmapUpdate.swift has the order of the writes). --merge takes SOURCE from the image
// itself, or from -b SOURCE_FILE (-F its format), opened read-only. Failures say, as qemu-img
// does, which operation failed; exit codes are blk's (interface.md §3), where qemu-img exits 1.
import ArgumentParser
import BlockCLI
import BlockLayer

struct BitmapCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bitmap", abstract: "Add, remove, clear, enable, disable or merge a persistent dirty bitmap (qemu-img bitmap).")

    @Flag(help: "Add BITMAP, empty and enabled.") var add = false
    @Flag(help: "Remove BITMAP.") var remove = false
    @Flag(help: "Clear every bit of BITMAP.") var clear = false
    @Flag(help: "Enable BITMAP: writes mark it.") var enable = false
    @Flag(help: "Disable BITMAP: writes no longer mark it.") var disable = false
    @Option(help: ArgumentHelp("Mark in BITMAP what bitmap SOURCE marks (of this image, or of -b).", valueName: "source"))
    var merge: [String] = []
    @Option(name: .customShort("g"), help: ArgumentHelp("The granularity of a bitmap --add creates (default: the cluster size, at least 4 KiB).", valueName: "granularity"))
    var granularity: ByteCount?
    @Option(name: .customShort("b"), help: ArgumentHelp("The image --merge takes SOURCE from.", valueName: "source_file")) var sourceFile: String?
    @Option(name: .customShort("F"), help: ArgumentHelp("The format of -b's image.", valueName: "source_fmt")) var sourceFormat: String?
    @OptionGroup var imageOptions: ImageOptions
    @Flag(help: "Print errors also as JSON on stdout.") var json = false
    @Argument(help: "The image file.") var image: String
    @Argument(help: "The bitmap's name.") var bitmap: String

    func validate() throws {
        guard add || remove || clear || enable || disable || !merge.isEmpty else {
            throw ValidationError("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge")
        }
        if granularity != nil && !add { throw ValidationError("granularity only supported with --add") }
        if sourceFile != nil && merge.isEmpty { throw ValidationError("-b only supported with --merge") }
        if sourceFormat != nil && sourceFile == nil { throw ValidationError("-F only supported with -b") }
    }

    /// The operations in command-line order: ArgumentParser keeps each flag's count, not where
    /// it stood, and qemu-img applies them as given.
    private var operations: [(name: String, merge: String?)] {
        var found: [(String, String?)] = []
        var merges = merge.makeIterator()
        var arguments = CommandLine.arguments.dropFirst().drop { $0 != "bitmap" }.dropFirst().makeIterator()
        while let argument = arguments.next() {
            switch argument {
            case "--add", "--remove", "--clear", "--enable", "--disable": found.append((String(argument.dropFirst(2)), nil))
            case "--merge":
                _ = arguments.next()
                found.append(("merge", merges.next()))
            case _ where argument.hasPrefix("--merge="): found.append(("merge", merges.next()))
            case "--": return found
            default: break
            }
        }
        return found
    }

    func run() throws {
        let opened = try imageOptions.open(image, writable: true, json: json)
        do {
            for operation in operations {
                do {
                    try opened.changeBitmap(bitmap, try change(operation.name, source: operation.merge, of: opened))
                } catch let error as BlockError {
                    var failed = error
                    failed.message = "Operation \(operation.name) on bitmap \(bitmap) failed: " + error.message
                    throw failed
                }
            }
            try opened.close()
        } catch let error as BlockError {
            throw report(error, json: json)
        }
    }

    /// One operation; a --merge reads its source's dirty ranges first (from -b's image, opened
    /// read-only, which reports its own failure to open).
    private func change(_ name: String, source: String?, of opened: BlockImage) throws -> BitmapChange {
        switch name {
        case "add": return .add(granularity: granularity?.value)
        case "remove": return .remove
        case "clear": return .clear
        case "enable": return .enable
        case "disable": return .disable
        default:
            guard let source else { throw BlockError(.invalidRequest, "--merge needs a source bitmap") }
            guard let sourceFile else { return .merge(try opened.dirtyRanges(ofBitmap: source)) }
            let sourceImage = try ImageOptions.given(format: sourceFormat, readOnly: true, forceShare: false)
                .open(sourceFile, writable: false, json: json)
            let ranges = try sourceImage.dirtyRanges(ofBitmap: source)
            try sourceImage.close()
            return .merge(ranges)
        }
    }
}
