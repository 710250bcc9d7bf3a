#!/usr/bin/python3
"""An NBD client in libnbd (python3-libnbd), for the blk serve tests of reads sent with sendfile.

nbd_zero_copy_client.py compare URI REFERENCE ALIGNMENT
    Reads the whole export in requests of several sizes, at offsets that are multiples of
    ALIGNMENT and of no cluster (odd bytes where ALIGNMENT is 1), with structured replies, with DF (one data chunk), and with simple
    replies, and compares every byte with the file REFERENCE.
nbd_zero_copy_client.py race URI
    Writes and trims the first MiB over two connections, and writes and trims the second MiB
    over a third, while a fourth reads the first MiB in 256 KiB and 1 MiB requests: every byte
    read must be one the first MiB was given (a pattern of its writers, or zeroes), never the
    second MiB's. The export is a fresh writable 4 MiB image, served with --discard unmap.
nbd_zero_copy_client.py truncated URI CONTROL IMAGE
    Asks for the first 16 MiB of the raw export without reading the reply, waits until the
    control socket CONTROL counts them as sent from the file (the reply's region is made), cuts
    the file IMAGE to nothing, then reads on: the reply can never complete, and the connection
    must end within 30 s (a server whose sendfile spins at the file's new end never ends it).

Prints "ok" at the end; strict mode throughout."""
import json, os, random, socket, sys, threading, time
import nbd

K, M = 1024, 1024 * 1024


def connect(uri, structured=True):
    h = nbd.NBD()
    h.set_strict_mode(nbd.STRICT_MASK)
    h.set_request_structured_replies(structured)
    h.connect_uri(uri)
    return h


def read(h, count, offset, flags):
    """The bytes at offset; with DF through pread_structured (libnbd's pread takes no flags),
    which must then see exactly one data chunk."""
    if not flags:
        return h.pread(count, offset)
    got = bytearray(count)
    chunks = []
    def chunk(subbuf, start, status, error):
        assert status == nbd.READ_DATA, status
        chunks.append(start)
        got[start - offset:start - offset + len(subbuf)] = subbuf
        return 0
    h.pread_structured(count, offset, chunk, flags)
    assert chunks == [offset], chunks
    return bytes(got)


def compare(uri, reference, alignment):
    with open(reference, "rb") as f:
        expected = f.read()
    handles = [(connect(uri), 0), (connect(uri), nbd.CMD_FLAG_DF), (connect(uri, structured=False), 0)]
    assert handles[0][0].get_structured_replies_negotiated() and not handles[2][0].get_structured_replies_negotiated()
    size = handles[0][0].get_size()
    assert size == len(expected), (size, len(expected))
    for h, flags in handles:
        for start, length in [(0, size), (3 * alignment, 2001 * 512), (alignment, 131 * 512)]:
            offset = start
            while offset < size:
                count = min(length, size - offset, 32 * M)
                got = read(h, count, offset, flags)
                if got != expected[offset:offset + count]:
                    first = next(i for i in range(count) if got[i] != expected[offset + i])
                    sys.exit(f"flags {flags}: {count} bytes at {offset} differ first at {offset + first}: "
                             f"{got[first]:#x}, expected {expected[offset + first]:#x}")
                offset += count
    for h, _ in handles:
        h.shutdown()


def race(uri):
    done = threading.Event()
    failures = []

    def writer(patterns, base, seed):
        try:
            write(patterns, base, seed)
        except Exception as error:
            failures.append(f"writer at {base}: {error}")

    def write(patterns, base, seed):
        h = connect(uri)
        rng = random.Random(seed)
        i = 0
        while not done.is_set():
            pattern = patterns[i % len(patterns)]
            i += 1
            choice = rng.randrange(8)
            if choice < 4:
                h.pwrite(bytes([pattern]) * M, base)
            elif choice < 6:
                # Part of the range, clusters torn at both ends.
                offset = rng.randrange(0, 13) * 64 * K + 4 * K
                h.pwrite(bytes([pattern]) * (192 * K), base + offset)
            elif choice == 6:
                h.trim(256 * K, base + rng.randrange(0, 4) * 256 * K)
            else:
                h.flush()
        h.shutdown()

    # The first MiB's writers, racing each other's allocations, and the second MiB's.
    first = set(range(1, 101)) | {0}
    threads = [threading.Thread(target=writer, args=(list(range(1, 51)), 0, 1)),
               threading.Thread(target=writer, args=(list(range(51, 101)), 0, 2)),
               threading.Thread(target=writer, args=(list(range(101, 201)), M, 3))]
    for t in threads:
        t.start()
    try:
        h = connect(uri)
        for i in range(160):
            length = M if i % 2 else 256 * K
            offset = 0 if i % 2 else (i // 2 % 4) * 256 * K
            got = h.pread(length, offset)
            stray = set(got) - first
            if stray:
                where = next(n for n in range(length) if got[n] in stray)
                failures.append(f"read {i}: byte {offset + where} is {got[where]:#x}, not one of the first MiB's")
                break
        h.shutdown()
    finally:
        done.set()
        for t in threads:
            t.join()
    if failures:
        sys.exit("\n".join(failures))


def sent_from_file(control):
    control.sendall(b'{"execute": "status"}\n')
    line = b""
    while not line.endswith(b"\n"):
        more = control.recv(4096)
        assert more, "the control socket closed"
        line += more
    return json.loads(line)["return"]["bytes-sent-from-file"]


def truncated(uri, control_path, image):
    h = connect(uri)
    count = 16 * M
    assert h.get_size() >= count
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.connect(control_path)
    cookie = h.aio_pread(nbd.Buffer(count), 0)
    deadline = time.monotonic() + 30
    while sent_from_file(control) < count:
        assert time.monotonic() < deadline, "the read was never answered from the file"
    os.truncate(image, 0)
    deadline = time.monotonic() + 30
    try:
        while not h.aio_command_completed(cookie):
            assert time.monotonic() < deadline, "the connection did not end: the reply hangs"
            h.poll(1000)
    except nbd.Error:
        return
    sys.exit("a reply of data the file no longer holds completed")


if sys.argv[1] == "compare":
    compare(sys.argv[2], sys.argv[3], int(sys.argv[4]))
elif sys.argv[1] == "truncated":
    truncated(sys.argv[2], sys.argv[3], sys.argv[4])
else:
    race(sys.argv[2])
print("ok")
