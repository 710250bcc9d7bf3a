// Issue 21: `blk --version`.
import Foundation
import Testing

@Suite("start-up: blk --version")
struct StartupTests {
    @Test("--version prints blk's version and exits 0, as qemu-img --version does")
    func version() throws {
        let result = try blk("--version")
        #expect(result.status == 0 && result.stdout.hasPrefix("blk version ") && result.stderr.isEmpty, "\(result)")
    }
}
