// Progress: a one-line progress bar on stderr for long work, shown on a terminal or when
// forced with -p, never mixed into stdout.
import Foundation
import Glibc

struct Progress {
    let enabled: Bool

    init(forced: Bool) {
        enabled = forced || isatty(STDERR_FILENO) == 1
    }

    func update(_ fraction: Double, _ label: String) {
        guard enabled else { return }
        let width = 30
        let filled = Int((fraction * Double(width)).rounded(.down))
        let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled)
        let line = "\r[\(bar)] \(Int(fraction * 100))% \(label)\u{1B}[K"
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
