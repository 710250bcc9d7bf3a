#!/usr/bin/python3
"""A seeded random NBD client in libnbd (python3-libnbd) against two servers of copies of one
image, for the blk serve differential test. Usage: nbd_differential.py QEMU_IMAGE BLK_URI FORMAT
DISCARD DETECT_ZEROES SEED OPS: qemu-nbd is started on QEMU_IMAGE by libnbd (socket activation)
with the same --discard and --detect-zeroes as the blk serve at BLK_URI, and has exited, the
image released, when this ends. Prints "ok" at the end; on the first difference, exits 1 naming
the seed and the operation."""
# Both servers run with the same --discard and --detect-zeroes. Every operation goes to both;
# what must be the same:
#   - every read, byte for byte, and both against a model of what the image must hold;
#   - whether each request succeeded, and its error (FAST_ZERO may fail with ENOTSUP, when
#     zeroing would write zeroes: both servers must decide alike; the client then zeroes
#     without it, since a failed request leaves its range unspecified);
#   - base:allocation, as merged runs (lengths of descriptors may differ: a server may cut its
#     answer anywhere, so the runs are compared, not the descriptors): exactly where the bytes
#     are not zeroes; where they are, raw may differ in HOLE and ZERO and qcow2 in ZERO alone
#     (see check_status). Every run either server says is ZERO must read as zeroes in the model.
# What may differ, and so is not sent: trims that are not whole qcow2 clusters (QEMU discards
# only whole clusters and leaves the rest; blk serve zeroes all of it: the spec leaves what a
# trimmed range reads unspecified), and the chunking of structured reads (hole chunks are a
# server's choice).
import errno, random, sys
import nbd

qemu_image, blk_uri, image_format, discard, detect_zeroes, seed, count = sys.argv[1:8]
seed, count = int(seed), int(count)
K = 1024
random_ = random.Random(seed)
servers = []
for connect in ("qemu", "blk"):
    h = nbd.NBD()
    h.set_strict_mode(nbd.STRICT_MASK)
    h.add_meta_context("base:allocation")
    if connect == "qemu":
        h.connect_systemd_socket_activation(["qemu-nbd", "-f", image_format, "--discard=" + discard,
                                             "--detect-zeroes=" + detect_zeroes, qemu_image])
    else:
        h.connect_uri(blk_uri)
    servers.append(h)
qemu, blk = servers
size = qemu.get_size()
assert blk.get_size() == size
model = bytearray(size)
trace = []

def fail(message):
    sys.stdout.write("seed %d, operation %d: %s\nlast operations: %s\n" % (seed, len(trace), message, trace[-8:]))
    sys.exit(1)

def both(name, *arguments):
    """Calls `name` on both servers; their results, or errno values where they failed."""
    results = []
    for h in servers:
        try:
            results.append(getattr(h, name)(*arguments))
        except nbd.Error as error:
            results.append(("error", error.errnum))
    return results

def status_runs(h, offset, length, flags=0):
    runs = []
    def extent(context, start, entries, error):
        for i in range(0, len(entries), 2):
            if runs and runs[-1][2] == entries[i + 1]:
                runs[-1][1] += entries[i]
            else:
                runs.append([(runs[-1][0] + runs[-1][1]) if runs else offset, entries[i], entries[i + 1]])
        return 0
    covered = 0
    while covered < length:
        h.block_status(length - covered, offset + covered, extent, flags)
        new = sum(run[1] for run in runs)
        if new <= covered:
            fail("block status of %d+%d made no progress" % (offset + covered, length - covered))
        covered = new
        if flags:
            break
    # The last descriptor may reach past the range: cut it there.
    end = offset + length
    while runs and runs[-1][0] >= end:
        runs.pop()
    if runs and runs[-1][0] + runs[-1][1] > end:
        runs[-1][1] = end - runs[-1][0]
    return runs

def random_range(limit, aligned):
    unit = random_.choice([4 * K, 64 * K]) if aligned else 1
    length = random_.randint(1, max(1, limit // unit)) * unit
    length = min(length, size)
    offset = random_.randrange(0, (size - length) // unit + 1) * unit
    return offset, length

def differences(q, b):
    """The pieces where two covers of the same range say different things: (start, end, q, b)."""
    cuts = sorted({run[0] for run in q + b} | {q[-1][0] + q[-1][1]})
    def flags_at(runs, position):
        return next(run[2] for run in runs if run[0] <= position < run[0] + run[1])
    return [(start, end, flags_at(q, start), flags_at(b, start)) for start, end in zip(cuts, cuts[1:])
            if flags_at(q, start) != flags_at(b, start)]

def check_status(offset, length, flags=0):
    q, b = status_runs(qemu, offset, length, flags), status_runs(blk, offset, length, flags)
    if flags:
        # One descriptor each, which the servers may cut at different lengths: the shorter counts.
        length = min(q[0][1], b[0][1])
        q, b = [[offset, length, q[0][2]]], [[offset, length, b[0][2]]]
    for runs in (q, b):
        for start, run_length, flags in runs:
            if flags & nbd.STATE_ZERO and any(model[start:start + run_length]):
                fail("%d+%d is said to read as zeroes and does not: %s" % (start, run_length, runs))
    # Where the bytes are zeroes, the servers may see them differently, and both be right:
    # - raw: a zeroed range keeps its blocks (fallocate's ZERO_RANGE), and whether the file
    #   system then calls them a hole (SEEK_DATA) depends on what its page cache holds of them,
    #   which each server's own reads and writes decide: "data" on one, "hole, zero" on the other;
    # - qcow2: HOLE comes from the tables and must agree; ZERO is optional for data, and QEMU
    #   also asks the file whether a data cluster's blocks are unwritten (it fills the rest of
    #   a new cluster with fallocate, blk serve with written zeroes), so only it may say ZERO.
    for start, end, q_flags, b_flags in differences(q, b):
        zeroes = not any(model[start:end])
        tolerated = zeroes and (image_format == "raw" or q_flags ^ b_flags == nbd.STATE_ZERO)
        if not tolerated:
            fail("base:allocation of %d+%d: qemu-nbd %s, blk serve %s" % (offset, length, q, b))

for _ in range(count):
    kind = random_.choices(["write", "read", "zero", "trim", "flush", "status", "status-one"], [30, 20, 15, 10, 3, 17, 5])[0]
    aligned = random_.random() < 0.6
    if kind == "write":
        offset, length = random_range(192 * K, aligned)
        data = bytes(length) if random_.random() < 0.3 else random_.randbytes(length)
        flags = nbd.CMD_FLAG_FUA if random_.random() < 0.1 else 0
        trace.append(("write", offset, length, flags, any(data)))
        results = both("pwrite", data, offset, flags)
        model[offset:offset + length] = data
    elif kind == "read":
        offset, length = random_range(256 * K, aligned)
        trace.append(("read", offset, length))
        results = both("pread", length, offset)
        if results[0] != bytes(model[offset:offset + length]):
            fail("qemu-nbd read %d+%d differs from the model" % (offset, length))
    elif kind == "zero":
        offset, length = random_range(512 * K, aligned)
        flags = random_.choice([0, nbd.CMD_FLAG_NO_HOLE, nbd.CMD_FLAG_FAST_ZERO, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FAST_ZERO])
        trace.append(("zero", offset, length, flags))
        results = both("zero", length, offset, flags)
        if results[0] == results[1] == ("error", errno.ENOTSUP) and flags & nbd.CMD_FLAG_FAST_ZERO:
            # A failed request leaves its range unspecified (QEMU may have zeroed whole clusters
            # before refusing the tail; blk serve refuses before changing anything): a client
            # falls back to a zeroing that may be slow, as qemu-img convert does.
            results = both("zero", length, offset, flags & ~nbd.CMD_FLAG_FAST_ZERO)
        if results[0] is None:
            model[offset:offset + length] = bytes(length)
    elif kind == "trim":
        offset, length = random_range(512 * K, True)
        offset, length = offset // (64 * K) * (64 * K), max(64 * K, length // (64 * K) * (64 * K))
        length = min(length, size - offset)
        trace.append(("trim", offset, length))
        results = both("trim", length, offset)
        if discard == "unmap":
            model[offset:offset + length] = bytes(length)
    elif kind == "flush":
        trace.append(("flush",))
        results = both("flush")
    elif kind == "status":
        offset, length = random_range(size, aligned)
        trace.append(("status", offset, length))
        check_status(offset, length)
        continue
    else:
        offset, length = random_range(size, aligned)
        trace.append(("status-one", offset, length))
        check_status(offset, length, nbd.CMD_FLAG_REQ_ONE)
        continue
    if results[0] != results[1]:
        fail("%s: qemu-nbd %r, blk serve %r" % (kind, results[0], results[1]))

check_status(0, size)
for h in servers:
    h.flush()
    h.shutdown()
# Closing the handles waits for qemu-nbd, which exits once its only client has left.
del servers[:], qemu, blk, h
print("ok")
