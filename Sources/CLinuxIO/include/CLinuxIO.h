// CLinuxIO: the shim of the Posix module — the file-I/O calls and flags Swift's Glibc module
// hides behind _GNU_SOURCE: fallocate(2) and its modes, O_DIRECT, SEEK_DATA, SEEK_HOLE,
// sync_file_range(2), dup3(2) and pidfd_open(2). Values are kernel ABI (include/uapi/linux/falloc.h).
#ifndef CLINUXIO_H
#define CLINUXIO_H

#include <sys/types.h>

enum {
    blk_FALLOC_FL_KEEP_SIZE = 0x01,
    blk_FALLOC_FL_PUNCH_HOLE = 0x02,
    blk_FALLOC_FL_ZERO_RANGE = 0x10,
};

/// fallocate(2).
int blk_fallocate(int descriptor, int mode, long long offset, long long length);

/// The O_DIRECT open flag.
int blk_o_direct(void);

/// lseek's SEEK_DATA whence: the next offset at or after the given one that holds data.
int blk_seek_data(void);

/// lseek's SEEK_HOLE whence: the next offset at or after the given one that starts a hole (the
/// end of the file counts as one).
int blk_seek_hole(void);

/// sync_file_range(2) over the whole file with SYNC_FILE_RANGE_WRITE: starts writing back the
/// dirty pages not yet on their way, without waiting for them.
int blk_start_writeback(int descriptor);

/// dup3(2) with O_CLOEXEC: makes `onto` refer to `from`'s open file description in one step,
/// so the number `onto` is never free in between, and no child process inherits it.
int blk_dup3_cloexec(int from, int onto);

/// pidfd_open(2): a descriptor, close-on-exec, that polls readable once the process `pid` has
/// exited — a child or not (glibc has no wrapper Swift can see).
int blk_pidfd_open(int pid);

#endif
