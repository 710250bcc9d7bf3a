// Progress: a one-line progress bar on stderr for long work, shown on a terminal or when
// forced with -p, never mixed into stdout. It redraws only when the whole percent changes, and
// builds its label only then: convert reports after every megabyte, and formatting two sizes
// each time was 8 % of a fast convert's time — spent even when nothing was shown.
import BlockBench
import BlockCLI
import FoundationEssentials
import Glibc
import Synchronization

final class Progress: BenchmarkProgress {
    let enabled: Bool
    private let shownPercent = Atomic(-1)

    init(forced: Bool) {
        enabled = forced || isatty(STDERR_FILENO) == 1
    }

    func update(_ fraction: Double, _ label: @autoclosure () -> String) {
        guard enabled else { return }
        let percent = Int(fraction * 100)
        guard shownPercent.exchange(percent, ordering: .relaxed) != percent else { return }
        let width = 30
        let filled = Int((fraction * Double(width)).rounded(.down))
        let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled)
        let line = "\r[\(bar)] \(percent)% \(label())\u{1B}[K"
        writeStandardError(line)
    }

    func finish() {
        guard enabled else { return }
        writeStandardError("\r\u{1B}[K")
    }
}
