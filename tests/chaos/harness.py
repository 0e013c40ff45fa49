"""The fault suite's machinery: the cluster's controls, the bet server as a subprocess, a PlaceBets load with
idempotency keys and retries, and the checks every fault ends with (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from inplay.adapters.redis_odds import RedisOddsCache
from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from inplay.model import MarketState
from tests.support.api import OPERATOR, as_user, balance, deposit, ledger_entries, make_market, slip
from tests.support.cli import run_reconcile

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = ROOT / "scripts" / "stack" / "cluster.sh"
ACCOUNTS = 4
CLIENTS = 4
SLIPS = 10
STAKE = 100
FUNDS = 100_000_000
CALL_TIMEOUT_S = 5.0
RETRIABLE = {bets_pb2.REJECTION_REASON_IN_PROGRESS, bets_pb2.REJECTION_REASON_UNAVAILABLE}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """cluster.sh (kill/start a component) and the fault proxy's control port."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.dir = Path(env["INPLAY_CLUSTER_DIR"])

    def sh(self, *args: str, timeout_s: float = 300) -> str:
        done = subprocess.run(
            ["bash", str(CLUSTER_SH), *args], env=self.env, capture_output=True, text=True, timeout=timeout_s
        )
        assert done.returncode == 0, f"cluster.sh {' '.join(args)}: {done.stderr[-2000:]}"
        return done.stdout.strip()

    async def kill(self, component: str) -> None:
        await asyncio.to_thread(self.sh, "kill", component)

    async def start(self, component: str) -> None:
        await asyncio.to_thread(self.sh, "start", component)

    async def proxy(self, command: str) -> str:
        host, _, port = self.env["INPLAY_CLUSTER_CONTROL"].rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            answer = (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
        finally:
            writer.close()
        assert answer.startswith("ok"), answer
        return answer

    async def redis_command(self, port: int, *args: str) -> str:
        """One command to one Redis/Sentinel port (RESP, first reply line only)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args))
            await writer.drain()
            return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
        finally:
            writer.close()

    async def redis_master_port(self) -> int:
        """The master's port according to the first Sentinel."""
        host_port = self.env["INPLAY_CLUSTER_SENTINELS"].split(",")[0]
        reader, writer = await asyncio.open_connection(*host_port.split(":"))
        try:
            args = [b"SENTINEL", b"get-master-addr-by-name", self.env["INPLAY_CLUSTER_REDIS_MASTER"].encode()]
            writer.write(b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
            await writer.drain()
            lines = [(await reader.readline()).strip() for _ in range(5)]
            return int(lines[4])
        finally:
            writer.close()


class BetServer:
    """``python -m inplay.server`` against the cluster, stderr to a log file (a pipe could fill and block it)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "inplay.server", "--port", str(self.port)],
                env={**self.env, "INPLAY_GRPC_PORT": str(self.port)},
                cwd=ROOT,
                stdout=out,
                stderr=out,
            )

    async def start(self, timeout_s: float = 120) -> None:
        self.proc = await asyncio.to_thread(self._spawn)
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, f"the server exited: {self.log.read_text()[-3000:]}"
            try:
                await asyncio.wait_for(self.channel.channel_ready(), 1.0)
                return
            except TimeoutError:
                assert time.monotonic() < deadline, f"the server did not come up: {self.log.read_text()[-3000:]}"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        await self.channel.close()


@dataclass
class Load:
    """CLIENTS concurrent PlaceBets callers. A call that is not answered (any RPC error) or whose slips are
    IN_PROGRESS/UNAVAILABLE is kept and retried later with the same keys; answered keys are recorded."""

    server: BetServer
    market: MarketState
    accounts: list[str]
    acknowledged: dict[str, str] = field(default_factory=dict)  # idempotency key -> bet id
    account_of: dict[str, str] = field(default_factory=dict)  # idempotency key -> account
    pending: dict[str, tuple[str, bets_pb2.BetSlip]] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)  # final rejections by reason
    transient: Counter[str] = field(default_factory=Counter)  # retried outcomes by gRPC code / reason
    ack_times: list[float] = field(default_factory=list)
    conflicts: int = 0  # a key answered with two different bet ids
    samples: dict[str, str] = field(default_factory=dict)  # gRPC code -> the first error message seen
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, tag: str) -> None:
        self.tasks = [asyncio.create_task(self._client(tag, c)) for c in range(CLIENTS)]

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)

    async def abandon(self) -> None:
        """Stops the callers without waiting for their calls (a failed test)."""
        self.stop.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _record(self, account: str, slips: list[bets_pb2.BetSlip], reply: bets_pb2.PlaceBetsResponse) -> None:
        now = time.monotonic()
        for s, r in zip(slips, reply.results, strict=True):
            key = s.idempotency_key
            if r.WhichOneof("result") == "bet":
                earlier = self.acknowledged.setdefault(key, r.bet.bet_id)
                self.conflicts += earlier != r.bet.bet_id
                self.pending.pop(key, None)
                self.ack_times.append(now)
            elif r.rejection.reason in RETRIABLE:
                self.transient[bets_pb2.RejectionReason.Name(r.rejection.reason)] += 1
                self.pending[key] = (account, s)
            else:
                self.rejected[bets_pb2.RejectionReason.Name(r.rejection.reason)] += 1
                self.pending.pop(key, None)

    async def call(self, account: str, slips: list[bets_pb2.BetSlip], timeout_s: float = CALL_TIMEOUT_S) -> None:
        for s in slips:
            self.account_of[s.idempotency_key] = account
        stub = bets_pb2_grpc.BetServiceStub(self.server.channel)
        try:
            reply = await stub.PlaceBets(
                bets_pb2.PlaceBetsRequest(slips=slips), metadata=as_user(account), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            self.transient[exc.code().name] += 1
            self.samples.setdefault(exc.code().name, str(exc.details())[:300])
            for s in slips:
                if s.idempotency_key not in self.acknowledged:
                    self.pending[s.idempotency_key] = (account, s)
            return
        self._record(account, slips, reply)

    async def _client(self, tag: str, c: int) -> None:
        n = 0
        while not self.stop.is_set():
            account = self.accounts[(c + n) % len(self.accounts)]
            slips = [slip(self.market, "2.00", f"{tag}-c{c}-{n}-{i}", STAKE) for i in range(SLIPS)]
            n += 1
            await self.call(account, slips)
            if self.pending:
                await asyncio.sleep(0.05)

    async def resolve(self, timeout_s: float = 180) -> float:
        """Retries every pending key with the same key until it has a final answer; returns the seconds taken."""
        t0 = time.monotonic()
        while self.pending:
            assert time.monotonic() - t0 < timeout_s, f"{len(self.pending)} keys unresolved: {list(self.pending)[:3]}"
            by_account: dict[str, list[bets_pb2.BetSlip]] = {}
            for account, s in list(self.pending.values()):
                by_account.setdefault(account, []).append(s)
            for account, slips in by_account.items():
                for i in range(0, len(slips), 100):
                    await self.call(account, slips[i : i + 100], timeout_s=15)
            if self.pending:
                await asyncio.sleep(0.5)
        return time.monotonic() - t0

    def longest_gap_after(self, t: float, until: float) -> float:
        """The longest time without an acknowledged bet between ``t`` and ``until`` (the outage the fault
        caused, as the clients saw it)."""
        times = [x for x in self.ack_times if t <= x <= until]
        points = [t, *times, until] if times else [t, until]
        return max(b - a for a, b in itertools.pairwise(points))


@dataclass
class Row:
    fault: str
    acknowledged: int
    rejected: str
    transient: str
    lost: int
    duplicated: int
    recovery_s: float
    resolve_s: float
    note: str = ""

    def markdown(self) -> str:
        return (
            f"| {self.fault} | {self.acknowledged} | {self.rejected} | {self.transient} | {self.lost} | "
            f"{self.duplicated} | {self.recovery_s:.1f} | {self.resolve_s:.1f} | {self.note} |"
        )


HEADER = (
    "| fault | bets acknowledged | rejected (final, by code) | retried (unanswered calls by gRPC code; slips by "
    "reason) | lost | duplicated | recovery: longest gap without acks (s) | unanswered keys resolved in (s) | "
    "how it recovered |\n| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |"
)


def _counts(c: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in c.most_common()) or "none"


async def open_load(
    server: BetServer, odds: RedisOddsCache, unique_id: Callable[[str], str]
) -> tuple[Load, MarketState]:
    class _Runtime:
        def __init__(self) -> None:
            self.odds = odds

    market = await make_market(_Runtime(), unique_id)
    accounts = [unique_id("acc") for _ in range(ACCOUNTS)]
    for a in accounts:
        await deposit(server.channel, a, FUNDS)
    return Load(server, market, accounts), market


async def check(
    load: Load, fault: str, recovery_s: float, resolve_s: float, bootstrap: str, topic: str, note: str
) -> Row:
    """Every acknowledged bet in the journal (GetBet) with its key, in the ledger views, on Kafka; no key placed
    twice; money conserved from the ledger alone. Returns the table row (lost and duplicated counted, not
    asserted here: the test asserts them after printing the row)."""
    stub = bets_pb2_grpc.BetServiceStub(load.server.channel)
    lost: set[str] = set()

    async def in_journal(key: str, bet_id: str) -> None:
        try:
            got = await stub.GetBet(bets_pb2.GetBetRequest(bet_id=bet_id), metadata=OPERATOR, timeout=15)
            if got.bet.idempotency_key != key:
                lost.add(bet_id)
        except grpc.aio.AioRpcError:
            lost.add(bet_id)

    items = list(load.acknowledged.items())
    for i in range(0, len(items), 200):
        await asyncio.gather(*(in_journal(k, b) for k, b in items[i : i + 200]))
    bet_ids = set(load.acknowledged.values())
    # The views (the projector's STAKE rows) catch up with the journal; a bet staked twice or a stake row of
    # a bet nobody acknowledged is a duplicate.
    deadline = time.monotonic() + 90
    while True:
        entries = {a: await ledger_entries(load.server.channel, a) for a in load.accounts}
        stakes = [e for es in entries.values() for e in es if e.amount.amount_minor < 0]
        staked = {e.bet_id for e in stakes}
        if staked >= bet_ids or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    lost |= bet_ids - staked
    duplicated = load.conflicts + (len(stakes) - len(staked)) + len(staked - bet_ids)
    for a, es in entries.items():
        ids = [e.entry_id for e in es]
        assert len(ids) == len(set(ids)), f"{fault}: {a} has an entry twice"
        total = sum(int(e.amount.amount_minor) for e in es)
        assert total == FUNDS - STAKE * sum(1 for e in es if e.amount.amount_minor < 0), f"{fault}: {a} ledger sum"
        assert await balance(load.server.channel, a) == total, f"{fault}: {a} wallet != ledger"
    published = await asyncio.to_thread(bet_ids_on_kafka, bootstrap, topic, bet_ids)
    missing_on_kafka = len(bet_ids - published)
    if missing_on_kafka:
        note += f"; {missing_on_kafka} acknowledged bets not on Kafka"
    return Row(
        fault,
        len(bet_ids),
        _counts(load.rejected),
        _counts(load.transient),
        len(lost),
        duplicated,
        recovery_s,
        resolve_s,
        note,
    )


def bet_ids_on_kafka(bootstrap: str, topic: str, wanted: set[str], timeout_s: float = 90) -> set[str]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"chaos-{time.time_ns()}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while not wanted <= seen and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                value = msg.value()
                if msg.error() is None and value is not None:
                    seen.add(json.loads(value)["bet"]["id"])
    finally:
        consumer.close()
    return seen


# Tuning variables a fault run may set for the services it starts (e.g. INPLAY_CASSANDRA_SPECULATIVE_DELAY_MS=0
# to measure the partition without speculative execution); every other INPLAY_* comes from the cluster's env.
PASS_THROUGH = ("INPLAY_CASSANDRA_SPECULATIVE_", "INPLAY_ADMISSION_")


def server_env(
    cluster_env: dict[str, str], keyspace: str, prefix: str, topic_prefix: str, writer: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INPLAY_") or k.startswith(PASS_THROUGH)}
    env.update(cluster_env)
    env.update(
        INPLAY_KEYSPACE=keyspace,
        INPLAY_REDIS_PREFIX=prefix,
        INPLAY_TOPIC_PREFIX=topic_prefix,
        INPLAY_WRITER_ID=writer,
        INPLAY_MAX_PRICE_AGE_PREMATCH_MS="3600000",
        INPLAY_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT / "services"),
    )
    return env


async def flushall_and_repair(
    cluster: Cluster, env: dict[str, str], before_repair: Callable[[], Awaitable[None]] | None = None
) -> str:
    """FLUSHALL on the Redis primary, then (after ``before_repair`` and 3 s of traffic against the empty
    projection) the one documented repair command (``reconcile --repair``). Returns the table's words for
    it: the command's duration and where the repair's own time went (its phase line)."""
    master = await cluster.redis_master_port()
    assert await cluster.redis_command(master, "FLUSHALL") == "+OK"
    if before_repair is not None:
        await before_repair()
    await asyncio.sleep(3.0)
    t0 = time.monotonic()
    repair_env = {k: v for k, v in env.items() if k != "INPLAY_WRITER_ID"}
    done = await run_reconcile(repair_env, "--repair")
    assert done.returncode == 0, done.stderr[-3000:]
    took = time.monotonic() - t0
    phases = re.search(
        r"quiesce [0-9.]+ s, read [0-9.]+ s \(\d+ accounts, \d+ idempotency records\), write [0-9.]+ s", done.stderr
    )
    return f"`./dev cli reconcile --repair` ({took:.1f} s{'; ' + phases.group(0) if phases else ''})"


async def until(predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> float:
    t0 = time.monotonic()
    while not await predicate():
        assert time.monotonic() - t0 < timeout_s, f"{what} not within {timeout_s} s"
        await asyncio.sleep(0.2)
    return time.monotonic() - t0


def leader_of_partition0(bootstrap: str, topic: str) -> int:
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return int(meta.topics[topic].partitions[0].leader)
