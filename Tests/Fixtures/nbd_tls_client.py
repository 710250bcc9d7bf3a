#!/usr/bin/python3
"""NBD clients for blk serve's TLS tests. Usage:
  nbd_tls_client.py plain URI            libnbd in strict mode, without TLS, against a server
                                         requiring it: prints what libnbd says
  nbd_tls_client.py tls SOCKET DIR       the protocol by hand over Python's ssl, with DIR's
                                         ca-cert.pem, client-cert.pem and client-key.pem: the
                                         STARTTLS rules, then a write and a read through TLS;
                                         prints "ok"
  nbd_tls_client.py hold SOCKET DIR      libnbd through TLS: a write, "connected", then waits
                                         for its input to end"""
# By hand because no real client sends what the spec forbids or asks what it must refuse:
# options before STARTTLS (NBD_REP_ERR_TLS_REQD), STARTTLS twice (NBD_REP_ERR_INVALID).
import socket, ssl, struct, sys

OPTION_MAGIC, REPLY_MAGIC = 0x49484156454F5054, 0x3E889045565A9
ACK, SERVER, ERR_INVALID, ERR_TLS_REQD = 1, 2, 0x80000003, 0x80000005
OPT_LIST, OPT_STARTTLS, OPT_GO, OPT_STRUCTURED_REPLY = 3, 5, 7, 8


def exactly(conn, count):
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        assert chunk, "the server closed the connection"
        data += chunk
    return data


def option(conn, number, data=b""):
    """The types of the replies to an option, up to its ACK or error."""
    conn.sendall(struct.pack(">QII", OPTION_MAGIC, number, len(data)) + data)
    types = []
    while True:
        magic, answered, kind, length = struct.unpack(">QIII", exactly(conn, 20))
        assert magic == REPLY_MAGIC and answered == number, (hex(magic), answered)
        exactly(conn, length)
        types.append(kind)
        if kind == ACK or kind >= 1 << 31:
            return types


def plain(uri):
    import nbd
    h = nbd.NBD()
    h.set_strict_mode(nbd.STRICT_MASK)
    try:
        h.connect_uri(uri)
        print("connected without TLS")
    except nbd.Error as error:
        print(error.string)


def tls(path, folder):
    conn = socket.socket(socket.AF_UNIX)
    conn.settimeout(20)
    conn.connect(path)
    assert exactly(conn, 18)[:16] == b"NBDMAGICIHAVEOPT"
    conn.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
    for number in (OPT_LIST, OPT_STRUCTURED_REPLY, 99):
        assert option(conn, number) == [ERR_TLS_REQD], number
    assert option(conn, OPT_STARTTLS, b"x") == [ERR_INVALID]
    assert option(conn, OPT_STARTTLS) == [ACK]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # a Unix socket has no host name
    context.load_verify_locations(folder + "/ca-cert.pem")
    context.load_cert_chain(folder + "/client-cert.pem", folder + "/client-key.pem")
    conn = context.wrap_socket(conn)
    assert option(conn, OPT_STARTTLS) == [ERR_INVALID]
    assert option(conn, OPT_LIST) == [SERVER, ACK]
    assert option(conn, OPT_GO, struct.pack(">IH", 0, 0)) == [3, ACK]
    conn.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 1, 0, 4096) + b"\x5a" * 4096)  # NBD_CMD_WRITE
    assert struct.unpack(">IIQ", exactly(conn, 16)) == (0x67446698, 0, 1)
    conn.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 2, 0, 4096))  # NBD_CMD_READ
    assert struct.unpack(">IIQ", exactly(conn, 16)) == (0x67446698, 0, 2)
    assert exactly(conn, 4096) == b"\x5a" * 4096
    conn.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 3, 0, 0))  # NBD_CMD_DISC
    print("ok")


def hold(path, folder):
    import nbd
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE)
    h.set_tls_certificates(folder)
    h.connect_unix(path)
    h.pwrite(b"\x3c" * 4096, 0)
    print("connected", flush=True)
    sys.stdin.read()


if sys.argv[1] == "plain":
    plain(sys.argv[2])
elif sys.argv[1] == "hold":
    hold(sys.argv[2], sys.argv[3])
else:
    tls(sys.argv[2], sys.argv[3])
