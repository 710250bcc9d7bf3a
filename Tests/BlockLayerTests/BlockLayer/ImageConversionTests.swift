// The conversion job through the library, as a server or a VM manager would run it without blk:
// the copy reads the same, what read as zeroes stays unallocated in the copy, and what the
// target cannot take is refused before anything is written.
import BlockLayer
import Synchronization
import Testing

@Suite("ImageConversion through the library")
struct ImageConversionTests {
    let scratch: Scratch

    init() throws {
        scratch = try Scratch()
    }

    /// A 16 MiB qcow2 image with data in its first and last megabytes and zeroes written in between.
    private func source() throws -> BlockImage {
        let path = scratch.directory + "/source.qcow2"
        try BlockFormats.named("qcow2")!.create(at: path, options: ImageCreateOptions(virtualSize: 16 << 20))
        let image = try BlockImage.open(path, options: OpenOptions(writable: true))
        for (offset, byte) in [(Int64(0), UInt8(0xa1)), (Int64(15 << 20), UInt8(0xb2))] {
            try [UInt8](repeating: byte, count: 1 << 20).withUnsafeBytes { try image.write(at: offset, from: $0) }
        }
        try [UInt8](repeating: 0, count: 1 << 20).withUnsafeBytes { try image.write(at: 8 << 20, from: $0) }
        return image
    }

    private func target(_ format: String, bytes: Int64) throws -> BlockImage {
        let path = scratch.directory + "/target.\(format)"
        try BlockFormats.named(format)!.create(at: path, options: ImageCreateOptions(virtualSize: bytes))
        return try BlockImage.open(path, options: OpenOptions(format: format, writable: true, cache: .unsafe))
    }

    private func contents(_ image: BlockImage) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Int(try image.length()))
        try bytes.withUnsafeMutableBytes { try image.read(at: 0, into: $0) }
        return bytes
    }

    @Test("qcow2 into raw and qcow2: the same bytes, zeroes left unallocated, progress to the end", arguments: ["raw", "qcow2"])
    func copies(format: String) throws {
        let source = try source()
        let target = try target(format, bytes: 16 << 20)
        let reported = ProgressRecord()
        try ImageConversion(from: source, to: target, compressed: false).run(syncAtEnd: true) { reported.add($0) }
        #expect(try contents(target) == contents(source))
        #expect(reported.last == 16 << 20)
        let middle = try target.blockStatus(at: 4 << 20, byteCount: 8 << 20)
        #expect(middle.isZero && !middle.isData, "the zeroes between the data were written: \(middle)")
    }

    @Test("a target shorter than the source is refused before anything is copied")
    func shorterTarget() throws {
        let source = try source()
        let target = try target("raw", bytes: 1 << 20)
        #expect(throws: BlockError.self) { try ImageConversion(from: source, to: target, compressed: false) }
        #expect(try contents(target) == [UInt8](repeating: 0, count: 1 << 20))
    }

    @Test("compression into raw fails with not-supported-by-format, and nothing is written")
    func compressionIntoRaw() throws {
        let source = try source()
        let target = try target("raw", bytes: 16 << 20)
        do {
            try ImageConversion(from: source, to: target, compressed: true).run(syncAtEnd: false)
            Issue.record("a compressed conversion into raw succeeded")
        } catch {
            #expect(error.code == .notSupportedByFormat)
        }
        #expect(try contents(target) == [UInt8](repeating: 0, count: 16 << 20))
    }
}

/// The last progress value a conversion reported (from its worker threads).
private final class ProgressRecord: Sendable {
    private let value = Mutex<Int64>(0)

    func add(_ done: Int64) { value.withLock { $0 = max($0, done) } }
    var last: Int64 { value.withLock { $0 } }
}
