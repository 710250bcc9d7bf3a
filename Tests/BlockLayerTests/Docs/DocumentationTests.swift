// DocumentationTests: the library as documented API. Every public declaration of the modules
// documented so far says why it exists (Scripts/undocumented, issue 17; BlockLayer and Qcow2
// follow), so a new one without a /// comment fails here rather than in a reader's hands.
import Foundation
import Testing

@Suite struct DocumentationTests {
    @Test func everyPublicDeclarationHasADocComment() throws {
        let root = testsDirectory.deletingLastPathComponent().path
        let modules = ["BlockLocking", "DeviceState"].map { "\(root)/Sources/\($0)" }
        let result = try run("\(root)/Scripts/undocumented", modules)
        #expect(result.status == 0, "public declarations without a /// comment:\n\(result.stdout)")
        #expect(result.stderr.hasPrefix("0 public declarations"), "\(result)")
    }
}
