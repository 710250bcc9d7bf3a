#!/usr/bin/python3
"""A FUSE file system that refuses every byte-range lock (ENOLCK), with one 1 MiB file
`image.raw` kept in memory: a real file system on which F_OFD_SETLK/GETLK fail, for testing
`--locking on|auto` against unsupported file systems. Usage: nolockfs.py MOUNTPOINT (foreground)."""
import errno
import stat
import sys
import time

from fusepy import FUSE, FuseOSError, Operations

SIZE = 1 << 20


class NoLockFS(Operations):
    def __init__(self):
        self.data = bytearray(SIZE)
        self.now = time.time()

    def getattr(self, path, fh=None):
        common = dict(st_uid=0, st_gid=0, st_atime=self.now, st_mtime=self.now, st_ctime=self.now)
        if path == "/":
            return dict(st_mode=stat.S_IFDIR | 0o755, st_nlink=2, **common)
        if path == "/image.raw":
            return dict(st_mode=stat.S_IFREG | 0o644, st_nlink=1, st_size=len(self.data), **common)
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", "image.raw"]

    def open(self, path, flags):
        if path != "/image.raw":
            raise FuseOSError(errno.ENOENT)
        return 0

    def read(self, path, size, offset, fh):
        return bytes(self.data[offset:offset + size])

    def write(self, path, buf, offset, fh):
        self.data[offset:offset + len(buf)] = buf
        return len(buf)

    def truncate(self, path, length, fh=None):
        del self.data[length:]
        self.data.extend(bytes(max(0, length - len(self.data))))

    def lock(self, path, fh, cmd, lock):
        raise FuseOSError(errno.ENOLCK)


if __name__ == "__main__":
    FUSE(NoLockFS(), sys.argv[1], foreground=True, nothreads=True)
