// shellStatus: how blk reports a child's end (hold's command, the benchmarks' programs), the
// way a shell's $? does, so scripts read it the same.

/// A waitpid status as a shell reports it: the exit code, or 128 + the signal that ended it.
package func shellStatus(ofWaitStatus status: Int32) -> Int32 {
    let signalNumber = status & 0x7f
    return signalNumber == 0 ? (status >> 8) & 0xff : 128 + signalNumber
}
