// Fault rules (FaultInjectionDriver): the `--inject-fault` syntax, and which requests a counted,
// event-scoped or byte-range rule picks, on a real raw image opened through the block layer.
import BlockLayer
import Foundation
import SystemPackage
import Testing

@Suite("fault rules")
struct FaultRuleTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("the syntax reads back as written; nonsense is refused")
    func syntax() {
        for text in ["write:3:eio", "flush:1:enospc:always", "write@l2_update:2:eio", "read@0-511:1:eio:always",
                     "write@directory_publish:1:enospc"] {
            #expect(FaultRule(parsing: text)?.description == text)
        }
        #expect(FaultRule(parsing: "write@blob_write:1") == FaultRule(.write, .event(.blobWrite), occurrence: 1))
        #expect(FaultRule(parsing: "read@4096-8191:2:always") == FaultRule(.read, .bytes(4096...8191), occurrence: 2, always: true))
        for text in ["write", "write:0", "erase:1", "write@no_such_step:1", "flush@0-511:1", "write@9-3:1", "write@-1-3:1",
                     "write:1:eperm", "write@:1"] {
            #expect(FaultRule(parsing: text) == nil, "\(text)")
        }
    }

    private func withImage(_ rules: [String], _ body: (BlockImage, UnsafeRawBufferPointer) throws -> Void) throws {
        let path = try scratch.rawImage(bytes: 1 << 20)
        let image = try BlockImage.open(path, options: OpenOptions(format: "raw", writable: true, faults: rules.map { FaultRule(parsing: $0)! }))
        defer { try? image.close() }
        let bytes = [UInt8](repeating: 0x5a, count: 4096)
        try bytes.withUnsafeBytes { try body(image, $0) }
    }

    private func fails(_ errno: Errno = .ioError, _ body: () throws(BlockError) -> Void) -> Bool {
        do throws(BlockError) {
            try body()
            return false
        } catch {
            return error.cause?.errno == errno
        }
    }

    @Test("an event rule counts only the requests made during that step, nested steps included")
    func eventScope() throws {
        try withImage(["write@directory_publish:2:enospc"]) { image, bytes in
            #expect(!fails { () throws(BlockError) in try image.write(at: 0, from: bytes) })
            #expect(!fails { () throws(BlockError) in try image.during(.directoryPublish) { () throws(BlockError) in try image.write(at: 0, from: bytes) } })
            #expect(!fails { () throws(BlockError) in try image.write(at: 4096, from: bytes) }, "outside the step again")
            #expect(fails(.noSpace) { () throws(BlockError) in
                try image.during(.directoryPublish) { () throws(BlockError) in
                    try image.during(.l2Update) { () throws(BlockError) in try image.write(at: 8192, from: bytes) }
                }
            })
            #expect(!fails { () throws(BlockError) in try image.during(.directoryPublish) { () throws(BlockError) in try image.flush() } })
        }
    }

    @Test("a byte-range rule counts the reads or writes touching those bytes; always keeps failing")
    func byteRange() throws {
        try withImage(["write@8192-8192:1:always", "read@0-0:2"]) { image, bytes in
            #expect(!fails { () throws(BlockError) in try image.write(at: 0, from: bytes) })
            #expect(!fails { () throws(BlockError) in try image.write(at: 8193, from: bytes) })
            #expect(fails { () throws(BlockError) in try image.write(at: 4097, from: bytes) }, "4097 + 4096 bytes reach 8192")
            #expect(fails { () throws(BlockError) in try image.write(at: 8192, from: bytes) })
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 512, alignment: 512)
            defer { buffer.deallocate() }
            #expect(!fails { () throws(BlockError) in try image.read(at: 0, into: buffer) })
            #expect(!fails { () throws(BlockError) in try image.read(at: 512, into: buffer) })
            #expect(fails { () throws(BlockError) in try image.read(at: 0, into: buffer) })
            #expect(!fails { () throws(BlockError) in try image.read(at: 0, into: buffer) }, "once, without always")
        }
    }
}
