// Golden transcripts, in the spirit of QEMU's iotests: a command's stdout, stderr and exit
// status, with paths and pids filtered out, compared with Tests/Golden/NAME.out.
// BLK_REGENERATE_GOLDEN=1 rewrites the files instead (then review the diff).
import Foundation
import Testing

/// The repository's Tests folder (this file is Tests/BlockLayerTests/Support/Golden.swift).
let testsDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

let goldenDirectory = testsDirectory.appendingPathComponent("Golden")

/// The transcript of one command, filtered: `placeholders` maps literal strings (paths) to names.
func transcript(_ command: String, _ finished: Finished, placeholders: [(String, String)]) -> String {
    var text = "$ \(command)\n\(finished.stdout)"
    if !finished.stderr.isEmpty { text += "--- stderr\n\(finished.stderr)" }
    text += "--- exit \(finished.status)\n"
    for (literal, name) in placeholders.sorted(by: { $0.0.count > $1.0.count }) {
        text = text.replacingOccurrences(of: literal, with: name)
    }
    let patterns = [
        (#"pid \d+"#, "pid PID"),
        (#""pid" : \d+"#, #""pid" : PID"#),
        (#"\d+ processes could not"#, "N processes could not"),
    ]
    for (pattern, replacement) in patterns {
        text = text.replacingOccurrences(of: pattern, with: replacement, options: .regularExpression)
    }
    return text
}

func expectGolden(_ name: String, _ actual: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let file = goldenDirectory.appendingPathComponent(name + ".out")
    if ProcessInfo.processInfo.environment["BLK_REGENERATE_GOLDEN"] == "1" {
        try actual.write(to: file, atomically: true, encoding: .utf8)
        return
    }
    let expected = try String(contentsOf: file, encoding: .utf8)
    #expect(actual == expected, "golden \(name).out differs", sourceLocation: sourceLocation)
}
