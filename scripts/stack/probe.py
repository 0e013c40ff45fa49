#!/usr/bin/env python3
"""Health probes for the dev stack, standard library only (no driver needed, so they work before any venv exists).

    probe.py redis PORT      -> prints PONG                  (RESP PING)
    probe.py cql PORT        -> prints the release_version   (CQL v4: STARTUP, then SELECT ... FROM system.local)
    probe.py kafka PORT      -> prints "brokers=N cluster=ID" (Kafka Metadata v4 request for all topics)

Exit 0 when the server answered as expected, 1 otherwise (one line on stderr says why). Host is 127.0.0.1
unless PROBE_HOST is set; each probe gives up after PROBE_TIMEOUT seconds (default 3).
"""

from __future__ import annotations

import os
import socket
import struct
import sys

HOST = os.environ.get("PROBE_HOST", "127.0.0.1")
TIMEOUT = float(os.environ.get("PROBE_TIMEOUT", "3"))


class ProbeError(Exception):
    pass


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProbeError("connection closed by the server")
        buf += chunk
    return bytes(buf)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


# ------------------------------------------------------------------------------------------------- redis
def redis(port: int) -> str:
    with _connect(port) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        line = sock.recv(64)
    if not line.startswith(b"+PONG"):
        raise ProbeError(f"unexpected PING reply {line!r}")
    return "PONG"


# --------------------------------------------------------------------------------------------------- cql
class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        if len(out) != n:
            raise ProbeError("truncated CQL frame")
        self.pos += n
        return out

    def int32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def uint16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def string(self) -> str:
        return self.take(self.uint16()).decode()

    def bytes_(self) -> bytes | None:
        n = self.int32()
        return None if n < 0 else self.take(n)

    def option(self) -> None:
        kind = self.uint16()
        if kind == 0x0000:  # custom
            self.string()
        elif kind in (0x0020, 0x0022):  # list, set
            self.option()
        elif kind == 0x0021:  # map
            self.option()
            self.option()
        elif kind == 0x0030:  # udt
            self.string()
            self.string()
            for _ in range(self.uint16()):
                self.string()
                self.option()
        elif kind == 0x0031:  # tuple
            for _ in range(self.uint16()):
                self.option()


def _cql_request(sock: socket.socket, opcode: int, body: bytes, stream: int) -> tuple[int, bytes]:
    sock.sendall(struct.pack(">BBhBi", 0x04, 0, stream, opcode, len(body)) + body)
    _version, _flags, _stream, op, length = struct.unpack(">BBhBi", _recv_exact(sock, 9))
    payload = _recv_exact(sock, length)
    if op == 0x00:  # ERROR
        r = _Reader(payload)
        code = r.int32()
        raise ProbeError(f"CQL error 0x{code:04x}: {r.string()}")
    return op, payload


def cql(port: int) -> str:
    def s(x: str) -> bytes:
        return struct.pack(">H", len(x)) + x.encode()

    with _connect(port) as sock:
        op, _ = _cql_request(sock, 0x01, struct.pack(">H", 1) + s("CQL_VERSION") + s("3.0.0"), 1)  # STARTUP
        if op != 0x02:  # READY (0x03 AUTHENTICATE would mean an authenticator is configured)
            raise ProbeError(f"STARTUP answered with opcode 0x{op:02x}, not READY")
        query = b"SELECT release_version FROM system.local"
        body = struct.pack(">i", len(query)) + query + struct.pack(">HB", 0x0001, 0)  # consistency ONE, no flags
        op, payload = _cql_request(sock, 0x07, body, 2)  # QUERY
    if op != 0x08:
        raise ProbeError(f"QUERY answered with opcode 0x{op:02x}, not RESULT")
    r = _Reader(payload)
    if r.int32() != 0x0002:
        raise ProbeError("RESULT is not Rows")
    flags, columns = r.int32(), r.int32()
    if flags & 0x0002:  # has_more_pages
        r.bytes_()
    if flags & 0x0001:  # global_tables_spec
        r.string()
        r.string()
    if not flags & 0x0004:  # metadata present
        for _ in range(columns):
            if not flags & 0x0001:
                r.string()
                r.string()
            r.string()
            r.option()
    if r.int32() < 1:
        raise ProbeError("system.local has no row")
    value = r.bytes_()
    if not value:
        raise ProbeError("release_version is empty")
    return value.decode()


# ------------------------------------------------------------------------------------------------- kafka
def kafka(port: int) -> str:
    client = b"inplay-stack-probe"
    # Request header v1 (api_key 3 = Metadata, version 4, correlation id, client id), body v4: all topics
    # (null array), no auto-creation. Versions 0-3 were removed in Kafka 4.0; 4 is served by 1.0 and later.
    body = struct.pack(">hhih", 3, 4, 7, len(client)) + client + struct.pack(">ib", -1, 0)
    with _connect(port) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        r = _Reader(_recv_exact(sock, size))
    if r.int32() != 7:
        raise ProbeError("correlation id mismatch")
    r.int32()  # throttle_time_ms
    brokers = r.int32()
    for _ in range(max(brokers, 0)):
        r.int32()  # node id
        r.string()  # host
        r.int32()  # port
        n = struct.unpack(">h", r.take(2))[0]  # rack (nullable string)
        if n > 0:
            r.take(n)
    n = struct.unpack(">h", r.take(2))[0]
    cluster = r.take(n).decode() if n > 0 else "?"
    if brokers < 1:
        raise ProbeError("metadata lists no broker yet")
    return f"brokers={brokers} cluster={cluster}"


def main(argv: list[str]) -> int:
    probes = {"redis": redis, "cql": cql, "kafka": kafka}
    if len(argv) != 3 or argv[1] not in probes:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(probes[argv[1]](int(argv[2])))
    except (OSError, ProbeError, struct.error, UnicodeDecodeError) as exc:
        print(f"{argv[1]} probe on {HOST}:{argv[2]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
