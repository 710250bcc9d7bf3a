// `blk map`: where an image's bytes are — data, zeroes, unallocated — and which image of the
// backing chain holds them, printed as qemu-img 7.2's map prints them, byte for byte, in its
// human and JSON formats (the walk and its merging: BlockLayer's ImageMap).
import ArgumentParser
import BlockCLI
import BlockLayer
import BlockLocking
import Glibc
import Posix

struct MapCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "map",
        abstract: "Show where an image's bytes are: data, zeroes or unallocated, and which image of the backing chain holds them (qemu-img map).")

    enum OutputFormat: String, ExpressibleByArgument {
        case human, json
    }

    @OptionGroup var imageOptions: ImageOptions
    @Option(name: .customLong("output"), help: "human (lines of stored data) or json (every run).") var output = OutputFormat.human
    @Flag(help: "The same as --output=json.") var json = false
    @Option(name: [.customShort("s"), .customLong("start-offset")], help: "The first guest byte to map.") var startOffset = ByteCount(0)
    @Option(name: [.customShort("l"), .customLong("max-length")], help: "The most guest bytes to map.") var maxLength: ByteCount?
    @Option(help: ArgumentHelp("List the ranges persistent dirty bitmap NAME marks, in JSON, instead of the map.", valueName: "name"))
    var bitmap: String?
    @Argument(help: "The image file.") var image: String

    func run() throws {
        let asJSON = json || output == .json
        let opened = try imageOptions.open(image, writable: false, json: asJSON)
        if let bitmap { return try printDirtyRanges(of: bitmap, in: opened) }
        var out = StandardOutputBuffer()
        defer { out.flush() }
        out.append(asJSON ? "[" : "Offset          Length          Mapped to       File\n")
        // The human format has no column for data stored elsewhere or transformed: qemu-img stops.
        var unmappable = false
        do throws(BlockError) {
            var map = try ImageMap(image: opened, start: startOffset.value, maxLength: maxLength?.value, foldingZeroes: !asJSON)
            while let entry = try map.next() {
                if asJSON {
                    out.append(Self.jsonLine(entry) + (map.isFinished ? "]\n" : ",\n"))
                } else if entry.isData && entry.hostOffset == nil {
                    unmappable = true
                    break
                } else if entry.isData && !entry.isZero {
                    out.append(formatted("%#-16llx%#-16llx%#-16llx", entry.start, entry.length, entry.hostOffset ?? 0)
                               + escapingControlCharacters(entry.file ?? "") + "\n")
                }
            }
        } catch {
            out.flush()
            var failure = error
            failure.message = "Could not read file metadata: " + error.message
            throw report(failure, json: false)
        }
        if unmappable {
            out.flush()
            printError("File contains external, encrypted or compressed clusters.")
            throw ExitCode.failure
        }
    }

    /// The bitmap's dirty ranges inside -s/-l's window, one JSON object per line as the map's.
    private func printDirtyRanges(of bitmap: String, in opened: BlockImage) throws {
        var out = StandardOutputBuffer()
        defer { out.flush() }
        do throws(BlockError) {
            let window = startOffset.value..<(maxLength.map { startOffset.value + $0.value } ?? Int64.max)
            let ranges = try opened.dirtyRanges(ofBitmap: bitmap).compactMap { range -> Range<Int64>? in
                range.overlaps(window) ? max(range.lowerBound, window.lowerBound)..<min(range.upperBound, window.upperBound) : nil
            }
            out.append("[" + ranges.map { "{ \"start\": \($0.lowerBound), \"length\": \($0.count), \"dirty\": true}" }
                .joined(separator: ",\n") + "]\n")
        } catch {
            throw report(error, json: false)
        }
    }

    /// qemu-img's dump_map_entry for JSON: one object per line, `offset` only where there is one.
    static func jsonLine(_ entry: MapEntry) -> String {
        var line = "{ \"start\": \(entry.start), \"length\": \(entry.length), \"depth\": \(entry.depth), \"present\": \(entry.isAllocated), "
            + "\"zero\": \(entry.isZero), \"data\": \(entry.isData)"
        if let offset = entry.hostOffset { line += ", \"offset\": \(offset)" }
        return line + "}"
    }
}

/// Lines for stdout, written in large pieces: a map of a big image is many thousands of lines.
struct StandardOutputBuffer {
    private var bytes: [UInt8] = []

    mutating func append(_ text: String) {
        bytes += text.utf8
        if bytes.count >= 1 << 16 { flush() }
    }

    /// As `print` does: a failed write to stdout does not change the command's outcome.
    mutating func flush() {
        try? writeAll(STDOUT_FILENO, bytes)
        bytes.removeAll(keepingCapacity: true)
    }
}
