// Implementation of CLinuxIO.h.
#define _GNU_SOURCE
#include "CLinuxIO.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/syscall.h>
#include <unistd.h>

_Static_assert(blk_FALLOC_FL_KEEP_SIZE == FALLOC_FL_KEEP_SIZE, "kernel ABI");
_Static_assert(blk_FALLOC_FL_PUNCH_HOLE == FALLOC_FL_PUNCH_HOLE, "kernel ABI");
_Static_assert(blk_FALLOC_FL_ZERO_RANGE == FALLOC_FL_ZERO_RANGE, "kernel ABI");

int blk_fallocate(int descriptor, int mode, long long offset, long long length) {
    return fallocate(descriptor, mode, (off_t)offset, (off_t)length);
}

int blk_o_direct(void) { return O_DIRECT; }

int blk_seek_data(void) { return SEEK_DATA; }

int blk_seek_hole(void) { return SEEK_HOLE; }

int blk_start_writeback(int descriptor) { return sync_file_range(descriptor, 0, 0, SYNC_FILE_RANGE_WRITE); }

int blk_dup3_cloexec(int from, int onto) { return dup3(from, onto, O_CLOEXEC); }

int blk_pidfd_open(int pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }
