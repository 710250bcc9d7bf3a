// `blk convert`: copy an image into a new raw or qcow2 one, skipping runs of zeroes so the copy
// stays sparse (unallocated, in qcow2); with -c, qcow2 clusters are stored compressed.
import ArgumentParser
import BlockLayer
import BlockLocking
import Glibc
import Qcow2

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "convert", abstract: "Copy an image into a new image.")

    @OptionGroup var imageOptions: ImageOptions
    @Option(name: .customShort("O"), help: "The output format: raw or qcow2.") var outputFormat = "raw"
    @Option(help: "qcow2 output: the cluster size.") var clusterSize = ByteCount(65536)
    @Flag(name: .customShort("c"), help: "qcow2 output: compress every cluster (deflate, readable by any QEMU).") var compress = false
    @Flag(name: .customShort("p"), help: "Show progress even when stderr is not a terminal.") var progress = false
    @Flag(help: "Print errors also as JSON on stdout.") var json = false
    @Argument(help: "The source image.") var source: String
    @Argument(help: "The image to create.") var destination: String

    /// Bytes copied per request: large enough that syscalls cost nothing next to the copy.
    static let chunkBytes = 1 << 20
    /// The granularity at which runs of zeroes are left as holes in a raw copy.
    static let holeBytes = 64 << 10

    func run() throws {
        guard outputFormat == "raw" || outputFormat == "qcow2" else {
            throw report(BlockError(.unsupported, "Unknown file format '\(outputFormat)'"), json: json)
        }
        if compress && outputFormat != "qcow2" {
            throw report(BlockError(.unsupported, "Compression not supported for this file format"), json: json)
        }
        let input = try imageOptions.open(source, writable: false, json: json)
        let bar = Progress(forced: progress)
        do throws(BlockError) {
            let length = try input.length()
            let output = try createOutput(destination, length: length)
            let compressor = compress ? output.root.driver as? Qcow2Driver : nil
            // Zeroes are skipped cluster by cluster in qcow2 (an unallocated cluster), in 64 KiB
            // holes in raw.
            let pieceBytes = outputFormat == "qcow2" ? Int(clusterSize.value) : Self.holeBytes
            let chunkBytes = max(Self.chunkBytes, pieceBytes)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 4096)
            defer { buffer.deallocate() }
            var offset: Int64 = 0
            while offset < length {
                let count = Int(min(Int64(chunkBytes), length - offset))
                let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
                // The new file reads as zeroes already: writing zeroes would only fill its holes.
                if try !input.readsAsZeroes(at: offset, byteCount: Int64(count)) {
                    try input.read(at: offset, into: chunk)
                    for start in stride(from: 0, to: count, by: pieceBytes) {
                        let piece = UnsafeRawBufferPointer(rebasing: chunk[start..<min(start + pieceBytes, count)])
                        guard !Self.isZero(piece) else { continue }
                        if let compressor {
                            try compressor.writeCompressed(cluster: UInt64((offset + Int64(start)) / Int64(pieceBytes)), from: piece)
                        } else {
                            try output.write(at: offset + Int64(start), from: piece)
                        }
                    }
                }
                offset += Int64(count)
                bar.update(Double(offset) / Double(max(length, 1)), "\(humanSize(offset)) of \(humanSize(length))")
            }
            try output.flush()
            bar.finish()
        } catch {
            bar.finish()
            throw report(error, json: json)
        }
    }

    /// All zero: the first byte is, and every byte equals the one before it (one memcmp).
    private static func isZero(_ piece: UnsafeRawBufferPointer) -> Bool {
        guard let first = piece.first else { return true }
        guard let start = piece.baseAddress else { return true }
        return first == 0 && memcmp(start, start + 1, piece.count - 1) == 0
    }

    /// The new image, `length` bytes of zeroes, opened read-write (with its locks) for the copy.
    private func createOutput(_ path: String, length: Int64) throws(BlockError) -> BlockImage {
        if outputFormat == "qcow2" {
            try Qcow2Format.create(at: path, virtualSize: length, clusterSize: Int(clusterSize.value), locking: imageOptions.locking)
        } else {
            try RawDriver.create(at: path, byteCount: length, locking: imageOptions.locking)
        }
        return try BlockImage.open(path, options: OpenOptions(format: outputFormat, writable: true, locking: imageOptions.locking,
                                                              cache: imageOptions.cache), formats: blkFormats)
    }
}
