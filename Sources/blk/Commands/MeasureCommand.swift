// `blk measure`: how large an image of a format would be — for a size alone, or for a copy of an
// image — printed as qemu-img 7.2's measure prints it, byte for byte, in text and JSON. The
// arithmetic is the target format's (BlockFormat.measure); the input is only opened and read.
import ArgumentParser
import BlockCLI
import BlockLayer

struct MeasureCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "measure",
        abstract: "Show the storage an image of a format would take, empty or as a copy of an image (qemu-img measure).")

    enum OutputFormat: String, ExpressibleByArgument {
        case human, json
    }

    @OptionGroup var imageOptions: ImageOptions
    @Option(name: .customShort("O"), help: ArgumentHelp("The format to measure for: raw or qcow2.", valueName: "format")) var outputFormat = "raw"
    @Option(name: .customShort("o"), help: ArgumentHelp("The target's create options, NAME=VALUE,... (qcow2: cluster_size, compat, refcount_bits, preallocation, extended_l2, backing_file).", valueName: "options"))
    var createOptions: [String] = []
    @Option(help: "Measure an empty image of this virtual size instead of a copy of IMAGE.") var size: ByteCount?
    @Option(name: .customLong("output"), help: "human (lines of text) or json.") var output = OutputFormat.human
    @Argument(help: "The image a copy of which is measured.") var image: String?

    func validate() throws {
        if size != nil && image != nil { throw ValidationError("--size N cannot be used together with a filename.") }
        if size == nil && image == nil { throw ValidationError("Either --size N or one filename must be specified.") }
    }

    func run() throws {
        let asJSON = output == .json
        let content: MeasuredContent
        if let image {
            content = .copy(of: try imageOptions.open(image, writable: false, json: asJSON))
        } else {
            content = .empty(virtualSize: size!.value)
        }
        let measurement: SizeMeasurement
        do throws(BlockError) {
            guard let format = BlockFormats.named(outputFormat) else {
                throw BlockError(.unsupported, "Unknown file format '\(outputFormat)'")
            }
            measurement = try format.measure(content, options: FormatOptions(parsing: createOptions))
        } catch {
            throw report(error, json: asJSON)
        }
        print(asJSON ? Self.json(measurement) : Self.text(measurement), terminator: "")
    }

    /// qemu-img's lines; the bitmaps line only where both images can hold bitmaps.
    static func text(_ measurement: SizeMeasurement) -> String {
        "required size: \(measurement.required)\nfully allocated size: \(measurement.fullyAllocated)\n"
            + (measurement.bitmaps.map { "bitmaps size: \($0)\n" } ?? "")
    }

    /// qemu-img's JSON as QEMU's pretty printer lays it out, its keys in its order, so that
    /// scripts comparing the two tools' output byte for byte see no difference.
    static func json(_ measurement: SizeMeasurement) -> String {
        let members = (measurement.bitmaps.map { ["\"bitmaps\": \($0)"] } ?? [])
            + ["\"required\": \(measurement.required)", "\"fully-allocated\": \(measurement.fullyAllocated)"]
        return "{\n" + members.map { "    " + $0 }.joined(separator: ",\n") + "\n}\n"
    }
}
