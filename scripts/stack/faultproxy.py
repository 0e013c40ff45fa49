#!/usr/bin/env python3
"""A small TCP proxy in front of every node of the local cluster, which the chaos tests can stall or slow.

iptables is not available on the dev box, so network faults are made here: each Cassandra node advertises
the proxy's address (broadcast_address / broadcast_rpc_address = 127.0.1.N) to its peers and to the
drivers, so every byte from a client or another node to node N passes through this process.

    faultproxy.py --control HOST:PORT --route NAME=NODE@LISTEN_HOST:PORT->TARGET_HOST:PORT ...
                  --route NAME=NODE@LISTEN_HOST:PORT->sentinel:HOST:PORT:MASTER ...
                  [--source NODE=IP ...]

A ``sentinel:`` target is resolved for every new connection by asking that Sentinel for the current master
(the promotion path for Redis: after a failover new connections reach the promoted replica).

Control (one line per command on the control port, answer ``ok ...`` or ``error ...``):
    stall NODE          hold every byte to and from NODE (connections stay open, nothing flows: a partition
                        as TCP sees it; the held bytes flow again after ``heal``, as retransmits would)
    delay NODE MS       every chunk to or from NODE is forwarded MS milliseconds after it arrived
    heal NODE|all       undo stall and delay
    status              the faults in force and the open connections per route

Connections opened by a stalled node (``--source-pidfile NODE=PATH``: the socket's owner, found through
/proc, is that node's process; Cassandra's outbound connections to its peers come from 127.0.0.1) are held
too, so a stalled node is cut off in both directions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field

CHUNK = 65536


@dataclass
class Route:
    name: str
    node: str
    listen: tuple[str, int]
    target: tuple[str, int]
    sentinel_master: str = ""  # when set, ``target`` is a Sentinel to ask for this master's address
    open: int = 0


@dataclass
class Faults:
    stalled: set[str] = field(default_factory=set)
    delay_ms: dict[str, int] = field(default_factory=dict)
    pidfiles: dict[str, str] = field(default_factory=dict)  # node -> pid file of its process
    healed: asyncio.Event = field(default_factory=asyncio.Event)

    def held(self, nodes: tuple[str, ...]) -> bool:
        return any(n in self.stalled for n in nodes)

    def delay_s(self, nodes: tuple[str, ...]) -> float:
        return max((self.delay_ms.get(n, 0) for n in nodes), default=0) / 1000.0


async def _sentinel_master(host: str, port: int, master: str) -> tuple[str, int]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
    try:
        args = [b"SENTINEL", b"get-master-addr-by-name", master.encode()]
        writer.write(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
        await writer.drain()
        header = await asyncio.wait_for(reader.readline(), 2.0)
        if not header.startswith(b"*2"):
            raise ConnectionError(f"sentinel has no master {master!r}: {header!r}")
        values = []
        for _ in range(2):
            await reader.readline()  # $len
            values.append((await reader.readline()).strip().decode())
        return values[0], int(values[1])
    finally:
        writer.close()


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, faults: Faults, nodes: tuple[str, ...]
) -> None:
    """Copies one direction. Chunks are queued with their arrival time so a delay adds latency without
    cutting throughput (order kept); a stall holds the queue until the heal."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        while True:
            data = await reader.read(CHUNK)
            await queue.put((time.monotonic(), data))
            if not data:
                return

    async def write() -> None:
        while True:
            arrived, data = await queue.get()
            while faults.held(nodes):
                faults.healed.clear()
                await faults.healed.wait()
            wait = arrived + faults.delay_s(nodes) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    reading = asyncio.ensure_future(read())
    try:
        await write()
    finally:
        reading.cancel()


async def _serve(route: Route, faults: Faults, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
    peer = client_w.get_extra_info("peername") or ("", 0)
    owner = await asyncio.to_thread(_socket_owner, peer, faults.pidfiles) if route.name.startswith("storage") else ""
    nodes = (route.node, owner)
    route.open += 1
    upstream_w: asyncio.StreamWriter | None = None
    try:
        while faults.held(nodes):  # a partitioned node accepts no new connection either
            faults.healed.clear()
            await faults.healed.wait()
        host, port = route.target
        if route.sentinel_master:
            host, port = await _sentinel_master(host, port, route.sentinel_master)
        upstream_r, upstream_w = await asyncio.wait_for(asyncio.open_connection(host, port), 5.0)
        up = asyncio.ensure_future(_pump(client_r, upstream_w, faults, nodes))
        down = asyncio.ensure_future(_pump(upstream_r, client_w, faults, nodes))
        # Either side closing (or a reset) ends the connection as a whole.
        _, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
    except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError):
        pass
    finally:
        route.open -= 1
        for w in (client_w, upstream_w):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.close()


def _socket_owner(peer: tuple[str, int], pidfiles: dict[str, str]) -> str:
    """The node whose process owns the client end (``peer``) of a loopback connection ('' if none)."""
    if peer[0] != "127.0.0.1" or not pidfiles:
        return ""
    local = f"0100007F:{peer[1]:04X}"
    inode = ""
    with contextlib.suppress(OSError), open("/proc/net/tcp") as table:
        for line in table:
            cols = line.split()
            if len(cols) > 9 and cols[1] == local:
                inode = cols[9]
                break
    if not inode:
        return ""
    wanted = f"socket:[{inode}]"
    for node, pidfile in pidfiles.items():
        with contextlib.suppress(OSError, ValueError):
            pid = int(open(pidfile).read().strip())
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                        return node
    return ""


def _command(line: str, routes: list[Route], faults: Faults) -> str:
    words = line.split()
    if not words:
        return "error empty command"
    nodes = {r.node for r in routes}
    match words:
        case ["stall", node] if node in nodes:
            faults.stalled.add(node)
        case ["delay", node, ms] if node in nodes and ms.isdigit():
            faults.delay_ms[node] = int(ms)
        case ["heal", "all"]:
            faults.stalled.clear()
            faults.delay_ms.clear()
        case ["heal", node] if node in nodes:
            faults.stalled.discard(node)
            faults.delay_ms.pop(node, None)
        case ["status"]:
            pass
        case _:
            return f"error unknown command or node: {line.strip()!r} (nodes: {' '.join(sorted(nodes))})"
    faults.healed.set()
    conns = " ".join(f"{r.name}={r.open}" for r in routes)
    return f"ok stalled={','.join(sorted(faults.stalled)) or '-'} delay={faults.delay_ms or '-'} open: {conns}"


def _parse_route(spec: str) -> Route:
    name, _, rest = spec.partition("=")
    node, _, rest = rest.partition("@")
    listen, _, target = rest.partition("->")
    lhost, _, lport = listen.rpartition(":")
    if target.startswith("sentinel:"):
        _, shost, sport, master = target.split(":")
        return Route(name, node, (lhost, int(lport)), (shost, int(sport)), master)
    thost, _, tport = target.rpartition(":")
    return Route(name, node, (lhost, int(lport)), (thost, int(tport)))


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--control", required=True, help="HOST:PORT of the control port")
    parser.add_argument("--route", action="append", default=[], help="NAME=NODE@HOST:PORT->HOST:PORT")
    parser.add_argument("--source-pidfile", action="append", default=[], help="NODE=PIDFILE (see above)")
    args = parser.parse_args(argv)
    routes = [_parse_route(r) for r in args.route]
    faults = Faults(pidfiles={node: path for node, _, path in (s.partition("=") for s in args.source_pidfile)})
    servers = []
    for route in routes:
        servers.append(
            await asyncio.start_server(
                lambda r, w, route=route: _serve(route, faults, r, w), route.listen[0], route.listen[1]
            )
        )

    async def control(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while line := (await reader.readline()).decode():
                writer.write((_command(line, routes, faults) + "\n").encode())
                await writer.drain()
        writer.close()

    chost, _, cport = args.control.rpartition(":")
    servers.append(await asyncio.start_server(control, chost, int(cport)))
    print(f"faultproxy: {len(routes)} routes, control on {args.control}", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
