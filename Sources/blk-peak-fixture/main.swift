// blk-peak-fixture: runs a program and reports its peak resident memory, for the tests that
// bound it. The test process cannot measure its own children: posix_spawn clones them sharing
// its memory (vfork-style), and exec records the memory being left — the test process's peak,
// often larger than the bound — as the child's starting peak. From this small process, what
// a child inherits is this process's few MiB, so wait4's figure is the program's own.
//
//   blk-peak-fixture FILE PROGRAM [ARG…]   runs PROGRAM with this process's stdio, writes its
//                                          peak RSS in KiB to FILE, and exits with its status
//                                          (128+N when signal N ended it, as a shell does)
import Glibc
import Posix

func complain(_ text: String) { _ = text.withCString { write(2, $0, strlen($0)) } }

let arguments = CommandLine.arguments
guard arguments.count >= 3 else {
    complain("usage: blk-peak-fixture FILE PROGRAM [ARG…]\n")
    exit(64)
}
let argv = arguments.dropFirst(2).map { strdup($0) } + [nil]
var child: pid_t = 0
let spawned = posix_spawn(&child, arguments[2], nil, nil, argv, environ)
guard spawned == 0 else {
    complain("blk-peak-fixture: cannot run \(arguments[2]): \(String(cString: strerror(spawned)))\n")
    exit(127)
}
var status: Int32 = 0
var usage = rusage()
_ = valueOrErrno("wait4", { wait4(child, &status, 0, &usage) })
guard let file = fopen(arguments[1], "w") else { exit(70) }
fputs("\(usage.ru_maxrss)\n", file)
fclose(file)
exit(status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f))
