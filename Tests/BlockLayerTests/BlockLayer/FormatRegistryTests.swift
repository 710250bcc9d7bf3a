// The library's front door: `BlockImage.open(path)` knows every format of the build, and a
// format without an operation says so with `notSupportedByFormat` (which the CLI turns into
// exit 69; 63 for check, as qemu-img, tested in Qcow2CheckTests).
import BlockLayer
import Testing

@Suite("the format registry and the format operations")
struct FormatRegistryTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("BlockImage.open without a format list opens a qcow2 image as qcow2, and its operations answer")
    func qcow2ByDefault() throws {
        let path = try scratch.qcow2Image(size: "8M")
        try qemuImg(["snapshot", "-c", "first", path])
        let image = try BlockImage.open(path)
        #expect(image.format == "qcow2" && image.formatWasProbed)
        #expect(try image.formatInfo().clusterSize == 65536)
        #expect(try image.snapshots().map(\.name) == ["first"])
        #expect(try image.check().corruptionCount == 0)
    }

    @Test("a raw image has none of the format operations: each throws notSupportedByFormat")
    func rawHasNone() throws {
        let path = try scratch.rawImage(bytes: 1 << 20)
        let image = try BlockImage.open(path, options: OpenOptions(format: "raw", writable: true))
        #expect(image.format == "raw")
        func code(_ body: () throws(BlockError) -> Void) -> BlockError.Code? {
            do { try body() } catch { return error.code }
            return nil
        }
        #expect(code { () throws(BlockError) in _ = try image.check() } == .notSupportedByFormat)
        #expect(code { () throws(BlockError) in _ = try image.formatInfo() } == .notSupportedByFormat)
        #expect(code { () throws(BlockError) in _ = try image.snapshots() } == .notSupportedByFormat)
        let cluster = [UInt8](repeating: 1, count: 65536)
        #expect(code { () throws(BlockError) in
            try cluster.withUnsafeBytes { bytes in Result { () throws(BlockError) in try image.writeCompressed(at: 0, from: bytes) } }.get()
        } == .notSupportedByFormat)
    }

    @Test("the registry names every format once, raw last since it claims any bytes")
    func registry() {
        #expect(BlockFormats.all.map { $0.formatName } == ["qcow2", "raw"])
        #expect(BlockFormats.named("qcow2")?.writesCompressed == true && BlockFormats.named("raw")?.writesCompressed == false)
        #expect(BlockFormats.named("vmdk") == nil)
    }
}
