#!/usr/bin/python3
"""An NBD client in libnbd (python3-libnbd), for the blk serve tests. Usage: nbd_strict_client.py
URI SIZE, for a writable raw export of SIZE bytes (over 32 MiB) that reads as zeroes."""
# Every command and flag blk serve advertises, through libnbd in strict mode, then the error
# cases with strict mode off (so the requests reach the server). Prints "ok" at the end.
import errno, sys
import nbd

uri, size = sys.argv[1], int(sys.argv[2])
h = nbd.NBD()
h.set_strict_mode(nbd.STRICT_MASK)
h.add_meta_context("base:allocation")
h.add_meta_context("qemu:allocation-depth")
h.connect_uri(uri)
assert h.get_size() == size
assert h.get_structured_replies_negotiated()
assert h.can_meta_context("base:allocation") and h.can_meta_context("qemu:allocation-depth")
for can in (h.can_flush, h.can_fua, h.can_trim, h.can_zero, h.can_cache, h.can_multi_conn, h.can_df, h.can_fast_zero):
    assert can(), can.__name__
assert not h.is_read_only()
assert (h.get_block_size(nbd.SIZE_MINIMUM), h.get_block_size(nbd.SIZE_MAXIMUM)) == (1, 32 << 20)

h.pwrite(b"\xab" * 65536, 0, nbd.CMD_FLAG_FUA)
assert h.pread(65536, 0) == b"\xab" * 65536
h.pwrite(b"\xcd" * 4096, 1 << 20)
h.zero(65536, 2 << 20, nbd.CMD_FLAG_NO_HOLE)
h.zero(65536, 3 << 20, nbd.CMD_FLAG_FUA)
h.zero(65536, 5 << 20, nbd.CMD_FLAG_FAST_ZERO)  # raw on a file system with fallocate: fast
h.trim(65536, 4 << 20, nbd.CMD_FLAG_FUA)
h.cache(size, 0)
h.flush()

# A structured read: data where written, holes elsewhere, covering the range once.
chunks = []
def chunk(data, offset, status, error):
    chunks.append((offset, len(data), status))
    return 0
h.pread_structured(2 << 20, 0, chunk)
assert sum(length for _, length, _ in chunks) == 2 << 20, chunks
assert (0, 65536, nbd.READ_DATA) in chunks and any(status == nbd.READ_HOLE for _, _, status in chunks), chunks
# DF: the same range in one data chunk, zeroes and all.
chunks.clear()
h.pread_structured(2 << 20, 0, chunk, nbd.CMD_FLAG_DF)
assert chunks == [(0, 2 << 20, nbd.READ_DATA)], chunks

extents = {}
def extent(context, offset, entries, error):
    extents[context] = entries
    return 0
h.block_status(size, 0, extent)
assert extents["base:allocation"][:2] == [65536, 0], extents
assert extents["qemu:allocation-depth"][1] == 1, extents  # raw: all of it is the image's own
extents.clear()
h.block_status(size, 0, extent, nbd.CMD_FLAG_REQ_ONE)
assert all(len(entries) == 2 for entries in extents.values()), extents

# Errors the server must give, sent without libnbd's own checks.
h.set_strict_mode(0)
def fails(expected, call, *arguments):
    try:
        call(*arguments)
    except nbd.Error as error:
        assert error.errnum == expected, (call.__name__, error.errnum, error)
        return
    raise AssertionError(call.__name__ + " succeeded")
fails(errno.EINVAL, h.pread, 4096, size)
fails(errno.ENOSPC, h.pwrite, b"x" * 4096, size)
fails(errno.EINVAL, h.trim, 4096, size)
fails(errno.EINVAL, h.pread, 4096, 0, nbd.CMD_FLAG_FAST_ZERO)
fails(errno.EINVAL, h.pwrite, b"x" * 4096, 0, nbd.CMD_FLAG_DF)
fails(errno.EINVAL, h.pread, 4096, 0, nbd.CMD_FLAG_REQ_ONE)
fails(errno.EOVERFLOW, h.pread, (32 << 20) + 512, 0)
assert h.pread(65536, 0) == b"\xab" * 65536
h.shutdown()

# Without structured replies DF means nothing: not advertised, and refused.
h = nbd.NBD()
h.set_request_structured_replies(False)
h.connect_uri(uri)
assert not h.get_structured_replies_negotiated() and not h.can_df() and h.can_fast_zero()
h.set_strict_mode(0)
fails(errno.EINVAL, h.pread, 4096, 0, nbd.CMD_FLAG_DF)
h.shutdown()
print("ok")
