// How `blk bench map` and `blk bench compare` print a side-by-side measurement.
import BlockBench
import Posix

extension SideBySide {
    /// The lines `blk bench map`, `compare` and `commit` print for each scenario.
    func printed(command: String) -> String {
        var lines = ["blk bench \(command): \(scenario)", "  blk        " + formatted("%8.3f s", blkSeconds)]
        if let qemuImgSeconds, let ratio {
            lines.append("  qemu-img   " + formatted("%8.3f s", qemuImgSeconds))
            lines.append("  ratio      " + formatted("%.2f×", ratio) + " (target \(target))")
            lines.append("  output     " + (sameOutput == true ? "the same as qemu-img's" : "DIFFERENT from qemu-img's"))
        } else {
            lines.append("  qemu-img   not installed (Debian package qemu-utils): no baseline")
        }
        return lines.joined(separator: "\n")
    }
}
