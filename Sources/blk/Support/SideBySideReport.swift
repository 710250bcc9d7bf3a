// How the benches that time blk beside qemu-img print a side-by-side measurement.
import BlockBench
import Posix

extension SideBySide {
    /// The lines each such bench prints for each scenario; the line on the outputs only where
    /// they were compared.
    func printed(command: String) -> String {
        var lines = ["blk bench \(command): \(scenario)", "  blk        " + formatted("%8.3f s", blkSeconds)]
        if let qemuImgSeconds, let ratio {
            lines.append("  qemu-img   " + formatted("%8.3f s", qemuImgSeconds))
            lines.append("  ratio      " + formatted("%.2f×", ratio) + " (target \(target))")
            if let sameOutput { lines.append("  output     " + (sameOutput ? "the same as qemu-img's" : "DIFFERENT from qemu-img's")) }
        } else {
            lines.append("  qemu-img   not installed (Debian package qemu-utils): no baseline")
        }
        return lines.joined(separator: "\n")
    }
}
