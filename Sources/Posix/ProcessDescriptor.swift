// ProcessDescriptor: pidfd_open(2), for waiting on the exit of a process that is not our child
// (a daemon that forked away) with poll and a deadline; the shim calls it (glibc's wrapper is
// not in Swift's Glibc module).
import CLinuxIO
import Glibc

/// A descriptor (close-on-exec) that polls readable once process `pid` has exited.
public func processDescriptor(of pid: pid_t) -> Result<Int32, SystemCallError> {
    valueOrErrno("pidfd_open", { blk_pidfd_open(pid) })
}
