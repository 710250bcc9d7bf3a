// DocumentationTests: the library as documented API. Every public declaration of every library
// module says why it exists (Scripts/undocumented, issue 17), so a new one without a ///
// comment fails here rather than in a reader's hands. The CLI and the test fixtures are not
// libraries: nothing outside the package calls them.
import Foundation
import Testing

@Suite struct DocumentationTests {
    @Test func everyPublicDeclarationHasADocComment() throws {
        let root = testsDirectory.deletingLastPathComponent().path
        let libraries = ["Posix", "BlockLocking", "BlockGraph", "Qcow2", "BlockLayer", "DeviceState", "BlockIOScript", "NBD", "BlockServe", "BlockServeTLS"]
        let modules = libraries.map { "\(root)/Sources/\($0)" }
        let result = try run("\(root)/Scripts/undocumented", modules)
        #expect(result.status == 0, "public declarations without a /// comment:\n\(result.stdout)")
        #expect(result.stderr.hasPrefix("0 public declarations"), "\(result)")
    }
}
