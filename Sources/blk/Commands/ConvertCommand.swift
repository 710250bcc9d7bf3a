// `blk convert`: copy an image into a new raw or qcow2 one, skipping runs of zeroes so the copy
// stays sparse (unallocated, in qcow2); with -c, qcow2 clusters are stored compressed.
import ArgumentParser
import BlockCLI
import BlockLayer
import BlockLocking

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "convert", abstract: "Copy an image into a new image.")

    @OptionGroup var imageOptions: ImageOptions
    @Option(name: .customShort("O"), help: "The output format: raw or qcow2.") var outputFormat = "raw"
    @Option(help: "qcow2 output: the cluster size (default 64k).") var clusterSize: ByteCount?
    @Option(name: .customShort("t"), help: "The new image's cache mode: writeback (flushed when done: durable), none, or unsafe (never flushed, as qemu-img convert's default).")
    var outputCache = CacheMode.writeback
    @Flag(name: .customShort("c"), help: "qcow2 output: compress every cluster (deflate, readable by any QEMU).") var compress = false
    @Flag(name: .customShort("p"), help: "Show progress even when stderr is not a terminal.") var progress = false
    @Flag(help: "Print errors also as JSON on stdout.") var json = false
    @Argument(help: "The source image.") var source: String
    // qemu-img convert's -r; here -r is --read-only, as on every command that opens an image.
    @Option(name: .customLong("rate-limit"), help: "At most this many bytes of data written per second (k/M/G/T suffixes; 0: no limit).")
    var rate: String?
    @Argument(help: "The image to create.") var destination: String

    func run() throws {
        guard let format = BlockFormats.named(outputFormat) else {
            throw report(BlockError(.unsupported, "Unknown file format '\(outputFormat)'"), json: json)
        }
        if compress && !format.writesCompressed {
            throw report(BlockError(.unsupported, "Compression not supported for this file format"), json: json)
        }
        let limit = try rateLimit(rate)
        let input = try imageOptions.open(source, writable: false, json: json)
        let bar = Progress(forced: progress)
        do throws(BlockError) {
            let length = try input.length()
            let output = try createOutput(format, destination, length: length)
            let conversion = try ImageConversion(from: input, to: output, compressed: compress)
            try conversion.run(syncAtEnd: outputCache == .writeback, rateLimit: limit) { done in
                bar.update(Double(done) / Double(max(length, 1)), "\(humanSize(done)) of \(humanSize(length))")
            }
            bar.finish()
        } catch {
            bar.finish()
            throw report(error, json: json)
        }
    }

    /// The new image, `length` bytes of zeroes, opened read-write (with its locks) for the copy:
    /// unflushed until the conversion's one sync at the end when the copy is to be durable.
    private func createOutput(_ format: any BlockFormat.Type, _ path: String, length: Int64) throws(BlockError) -> BlockImage {
        try format.create(at: path, options: ImageCreateOptions(virtualSize: length, clusterSize: clusterSize.map { Int($0.value) },
                                                                 locking: imageOptions.locking, lease: imageOptions.leases.policy))
        return try BlockImage.open(path, options: OpenOptions(format: outputFormat, writable: true, locking: imageOptions.locking,
                                                              cache: outputCache == .writeback ? .unsafe : outputCache,
                                                              metadataCacheBytes: imageOptions.cacheSize.map { Int($0.value) },
                                                              lease: imageOptions.leases.policy))
    }
}
