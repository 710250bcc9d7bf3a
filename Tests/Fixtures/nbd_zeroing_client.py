#!/usr/bin/python3
"""An NBD client in libnbd (python3-libnbd), for the blk serve tests of --discard, --detect-zeroes,
FAST_ZERO and DF. Usage: nbd_zeroing_client.py URI FORMAT DISCARD DETECT_ZEROES, for a fresh
writable export (raw or qcow2 with 64 KiB clusters) of 4 MiB. Prints "ok" at the end."""
import errno, sys
import nbd

uri, image_format, discard, detect = sys.argv[1:5]
K = 1024
h = nbd.NBD()
h.set_strict_mode(nbd.STRICT_MASK)
h.add_meta_context("base:allocation")
h.connect_uri(uri)
assert h.can_trim() and h.can_zero() and h.can_fast_zero() and h.can_df()

def status(offset, length):
    """base:allocation of the range, as a list of (length, flags), merged."""
    runs = []
    def extent(context, start, entries, error):
        for i in range(0, len(entries), 2):
            if runs and runs[-1][1] == entries[i + 1]:
                runs[-1] = (runs[-1][0] + entries[i], entries[i + 1])
            else:
                runs.append((entries[i], entries[i + 1]))
        return 0
    done = 0
    while done < length:
        before = sum(n for n, _ in runs)
        h.block_status(length - done, offset + done, extent)
        done = sum(n for n, _ in runs)
        assert done > before
    return runs

def zeroes_flag(offset, length):
    return all(flags & nbd.STATE_ZERO for _, flags in status(offset, length))

def holes(offset, length):
    return all(flags & nbd.STATE_HOLE for _, flags in status(offset, length))

data = b"\xab" * (256 * K)
h.pwrite(data, 0)

# Trim: ignore leaves the bytes; unmap zeroes them, deallocated (raw: a hole punched; qcow2: the
# cluster made a zero cluster).
h.trim(64 * K, 0)
if discard == "ignore":
    assert h.pread(64 * K, 0) == data[:64 * K]
else:
    assert h.pread(64 * K, 0) == bytes(64 * K)
    assert zeroes_flag(0, 64 * K) and holes(0, 64 * K), status(0, 64 * K)

# A write of zeroes: written as data (off), or zeroed without data (on, unmap).
h.pwrite(bytes(64 * K), 64 * K)
assert h.pread(64 * K, 64 * K) == bytes(64 * K)
if detect == "unmap" or (detect == "on" and image_format == "qcow2"):
    assert zeroes_flag(64 * K, 64 * K), status(64 * K, 64 * K)
if detect == "unmap" and image_format == "raw":
    assert holes(64 * K, 64 * K), status(64 * K, 64 * K)
if detect == "off":
    assert not zeroes_flag(64 * K, 64 * K), status(64 * K, 64 * K)

# Write-zeroes deallocates only where discard allows it (raw: a hole punched, else a zeroed range).
h.zero(64 * K, 128 * K)
assert h.pread(64 * K, 128 * K) == bytes(64 * K)
if discard == "unmap" and image_format == "raw":
    assert holes(128 * K, 64 * K), status(128 * K, 64 * K)

# FAST_ZERO: whole qcow2 clusters and raw files are fast; part of a qcow2 data cluster is not, and
# is refused before anything changes; part of a cluster that reads as zeroes already needs nothing.
h.zero(64 * K, 192 * K, nbd.CMD_FLAG_FAST_ZERO)
assert h.pread(64 * K, 192 * K) == bytes(64 * K)
h.pwrite(data[:64 * K], 192 * K)
if image_format == "qcow2":
    try:
        h.zero(4 * K, 192 * K + 512, nbd.CMD_FLAG_FAST_ZERO)
        raise AssertionError("a fast zero of part of a data cluster succeeded")
    except nbd.Error as error:
        assert error.errnum == errno.ENOTSUP, error
    assert h.pread(64 * K, 192 * K) == data[:64 * K]
    h.zero(4 * K, 1024 * K + 512, nbd.CMD_FLAG_FAST_ZERO)
else:
    h.zero(4 * K, 192 * K + 512, nbd.CMD_FLAG_FAST_ZERO)
    assert h.pread(4 * K, 192 * K + 512) == bytes(4 * K)
h.zero(64 * K, 192 * K)

# DF: a read over data and holes comes as one data chunk; without DF, as data and hole chunks.
h.pwrite(data[:4 * K], 1024 * K)
chunks = []
def chunk(buffer, offset, state, error):
    chunks.append((offset, len(buffer), state))
    return 0
h.pread_structured(2048 * K, 0, chunk, nbd.CMD_FLAG_DF)
assert chunks == [(0, 2048 * K, nbd.READ_DATA)], chunks
chunks.clear()
h.pread_structured(2048 * K, 0, chunk)
assert any(state == nbd.READ_HOLE for _, _, state in chunks) and sum(n for _, n, _ in chunks) == 2048 * K, chunks
h.flush()
h.shutdown()
print("ok")
