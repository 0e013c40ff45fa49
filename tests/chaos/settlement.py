"""The settlement side of the fault suite: a large book on one event, a settlement worker subprocess, its
supervision (the one documented recovery command: ``resume --event``), and the exactly-once checks made from
the ledger alone (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from inplay.adapters.redis_odds import RedisOddsCache
from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from inplay.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from inplay.wallet.v1 import wallet_pb2
from tests.chaos.harness import ROOT, BetServer
from tests.support.api import OPERATOR, as_user, balance, deposit, ledger_entries, make_market, slip

# The settlement worker's entry point, in one place.
WORKER_MODULE = "inplay.worker"
# 50,000 for the full run (CHAOS_SETTLEMENT_BETS=50000 ./dev chaos); CI places fewer per fault to stay
# within its time budget.
BETS = int(os.environ.get("CHAOS_SETTLEMENT_BETS", "5000"))
ACCOUNTS = 50
STAKE = 100
PAYOUT = 200  # a winner at 2.00
FUNDS = 100_000_000
BATCH = 1000  # slips per PlaceBets call (the API's maximum)
# Small pages: a run is many pages, so a fault lands mid-run and a resume has work left.
WORKER_SETTINGS = {
    "INPLAY_SETTLEMENT_PAGE_SIZE": "250",
    # Short enough that a resume after a kill -9 waits little, long enough that renewals survive a box at
    # load average 20+ (1.5 s lost the lock before any fault in one 50,000-bet run).
    "INPLAY_SETTLEMENT_LOCK_TTL_MS": "5000",
    "INPLAY_SETTLEMENT_LOCK_WAIT_MS": "30000",
}
RUN_TIMEOUT_S = 300.0


@dataclass
class Book:
    event_id: str
    market_id: str
    accounts: list[str]
    winners: dict[str, str] = field(default_factory=dict)  # bet id -> account
    losers: dict[str, str] = field(default_factory=dict)


async def place_book(server: BetServer, odds: RedisOddsCache, unique_id: Callable[[str], str], n: int = BETS) -> Book:
    """``n`` singles on one event over ACCOUNTS accounts, every third on the losing selection, placed in
    PlaceBets batches; transient answers are retried with the same keys until every slip is a bet."""

    class _Runtime:
        def __init__(self) -> None:
            self.odds = odds

    market = await make_market(_Runtime(), unique_id)
    accounts = [unique_id("stl") for _ in range(ACCOUNTS)]
    for a in accounts:
        await deposit(server.channel, a, FUNDS)
    book = Book(market.event_id, market.market_id, accounts)
    tag = unique_id("k")
    todo = {f"{tag}-{i}": (accounts[i % ACCOUNTS], "away" if i % 3 == 0 else "home") for i in range(n)}
    stub = bets_pb2_grpc.BetServiceStub(server.channel)
    deadline = time.monotonic() + 300
    while todo:
        assert time.monotonic() < deadline, f"{len(todo)} slips not placed"
        by_account: dict[str, list[str]] = {}
        for key, (account, _) in todo.items():
            by_account.setdefault(account, []).append(key)
        calls = [
            (account, keys[i : i + BATCH]) for account, keys in by_account.items() for i in range(0, len(keys), BATCH)
        ]
        for i in range(0, len(calls), 8):
            group = calls[i : i + 8]
            await asyncio.gather(*(_place(stub, market, book, todo, account, keys) for account, keys in group))
    return book


async def _place(
    stub: bets_pb2_grpc.BetServiceStub,
    market: object,
    book: Book,
    todo: dict[str, tuple[str, str]],
    account: str,
    keys: list[str],
) -> None:
    slips = [slip(market, "2.00", k, STAKE, selection=todo[k][1]) for k in keys]  # type: ignore[arg-type]
    try:
        reply = await stub.PlaceBets(bets_pb2.PlaceBetsRequest(slips=slips), metadata=as_user(account), timeout=30)
    except grpc.aio.AioRpcError:
        return  # retried with the same keys
    for key, result in zip(keys, reply.results, strict=True):
        if result.WhichOneof("result") == "bet":
            side = book.losers if todo[key][1] == "away" else book.winners
            side[result.bet.bet_id] = account
            del todo[key]
        else:
            reason = result.rejection.reason
            assert reason in (bets_pb2.REJECTION_REASON_IN_PROGRESS, bets_pb2.REJECTION_REASON_UNAVAILABLE), result


class Settlement:
    """One settlement run of ``book`` by a worker subprocess, supervised: a worker that dies or fails is
    replaced by ``python -m WORKER_MODULE resume --event EV`` (the one documented recovery command) until the
    run is COMPLETED. Progress is polled through the bet server's SettlementService."""

    def __init__(self, env: dict[str, str], server: BetServer, book: Book, log: Path) -> None:
        # Not the bet server's writer id: the worker's runtime must not take the server's journal shard.
        self.env = {k: v for k, v in env.items() if k != "INPLAY_WRITER_ID"} | WORKER_SETTINGS
        self.stub = settlement_pb2_grpc.SettlementServiceStub(server.channel)
        self.book = book
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: Counter[str] = Counter()  # how the worker processes ended (rc or signal)
        self.progress: list[tuple[float, int]] = []  # (time, bets processed)
        self.started_at = 0.0
        self.completed_at = 0.0
        self.final: settlement_pb2.SettlementRun | None = None

    def spawn(self, *args: str) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE, *args], env=self.env, cwd=ROOT, stdout=out, stderr=out
            )

    def start(self) -> None:
        self.started_at = time.monotonic()
        outcome = f"{self.book.market_id}:home:WIN"
        self.spawn("settle", "--event", self.book.event_id, "--request-id", "chaos", "--outcome", outcome)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL
        self.proc.wait(30)

    async def status(self) -> settlement_pb2.SettlementRun | None:
        request = settlement_pb2.GetSettlementStatusRequest(event_id=self.book.event_id)
        try:
            reply = await self.stub.GetSettlementStatus(request, metadata=OPERATOR, timeout=5)
        except grpc.aio.AioRpcError:
            return None  # no run yet, or the store is briefly out of reach
        run: settlement_pb2.SettlementRun = reply.run
        return run

    async def wait_processed(self, at_least: int, timeout_s: float = 120) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = await self.status()
            if run is not None and (run.bets_processed >= at_least or run.state == settlement_pb2.RUN_STATE_COMPLETED):
                return int(run.bets_processed)
            self._replace_if_dead(run)  # e.g. a lock lost on an overloaded box before the fault
            await asyncio.sleep(0.05)
        raise AssertionError(f"the run did not reach {at_least} processed bets in {timeout_s} s")

    async def supervise(self) -> None:
        """Until COMPLETED: polls progress; replaces a worker that ended without completing the run."""
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            assert time.monotonic() < deadline, f"run not completed in {RUN_TIMEOUT_S} s: {self.exits}"
            run = await self.status()
            now = time.monotonic()
            if run is not None:
                self.progress.append((now, int(run.bets_processed)))
                if run.state == settlement_pb2.RUN_STATE_COMPLETED:
                    self.completed_at, self.final = now, run
                    await asyncio.to_thread(self._reap)
                    return
            self._replace_if_dead(run)
            await asyncio.sleep(0.2)

    def _replace_if_dead(self, run: settlement_pb2.SettlementRun | None) -> None:
        """A worker that ended without completing the run is replaced by the documented command."""
        if self.proc is None or self.proc.poll() is None:
            return
        rc = self.proc.returncode
        self.exits["SIGKILL" if rc == -9 else f"rc {rc}"] += 1
        self.proc = None
        if run is None or run.state != settlement_pb2.RUN_STATE_COMPLETED:
            self.spawn("resume", "--event", self.book.event_id)

    def _reap(self) -> None:
        """The worker that completed the run should exit by itself; one that hangs is recorded (a finding
        for the worker, shown in the table) and killed, since the run it was asked for is done."""
        if self.proc is None:
            return
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            self.exits["hung after COMPLETED (killed after 60 s)"] += 1
            return
        self.exits["SIGKILL" if rc == -9 else f"rc {rc}"] += 1

    def stalled_after(self, t: float) -> float:
        """The longest time without progress (bets processed unchanged) from ``t`` to completion."""
        points = [(x, n) for x, n in self.progress if x >= t]
        longest, since, last = 0.0, t, -1
        for x, n in points:
            if n != last:
                longest, since, last = max(longest, x - since), x, n
        return max(longest, (self.completed_at or time.monotonic()) - since)


@dataclass
class SettlementRow:
    fault: str
    bets: int
    settled: int
    payouts: int
    duplicated: int
    missed: int
    recovery_s: float
    run_s: float
    workers: str
    note: str = ""

    def markdown(self) -> str:
        return (
            f"| {self.fault} | {self.bets} | {self.settled} | {self.payouts} | {self.duplicated} | {self.missed} | "
            f"{self.recovery_s:.1f} | {self.run_s:.1f} | {self.workers} | {self.note} |"
        )


SETTLEMENT_HEADER = (
    "| fault (during the settlement run) | bets on the event | bets settled | payouts | duplicated | missed | "
    "recovery: longest stall (s) | run (s) | worker processes (how they ended) | how it recovered |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"
)


async def check_settlement(server: BetServer, run: Settlement, fault: str, stall_s: float, note: str) -> SettlementRow:
    """From the ledger alone: each winner has exactly one PAYOUT of PAYOUT, each loser none; entry ids unique;
    each account's entries sum to deposit - stakes + payouts and to its wallet balance."""
    book = run.book
    payouts: Counter[str] = Counter()
    wrong_amount = 0
    for account in book.accounts:
        entries = await ledger_entries(server.channel, account)
        ids = [e.entry_id for e in entries]
        assert len(ids) == len(set(ids)), f"{fault}: {account} has an entry twice"
        kinds = Counter(e.kind for e in entries)
        for e in entries:
            if e.kind == wallet_pb2.ENTRY_KIND_PAYOUT:
                payouts[e.bet_id] += 1
                wrong_amount += e.amount.amount_minor != PAYOUT
        total = sum(int(e.amount.amount_minor) for e in entries)
        expected = FUNDS - STAKE * kinds[wallet_pb2.ENTRY_KIND_STAKE] + PAYOUT * kinds[wallet_pb2.ENTRY_KIND_PAYOUT]
        assert total == expected and not wrong_amount, f"{fault}: {account} ledger sum {total} != {expected}"
        assert await balance(server.channel, account) == total, f"{fault}: {account} wallet != ledger"
    duplicated = sum(c - 1 for c in payouts.values() if c > 1) + sum(1 for b in payouts if b in book.losers)
    missed = sum(1 for b in book.winners if payouts[b] == 0)
    final = run.final
    assert final is not None
    return SettlementRow(
        fault,
        len(book.winners) + len(book.losers),
        int(final.bets_processed),
        sum(payouts.values()),
        duplicated,
        missed,
        stall_s,
        run.completed_at - run.started_at,
        ", ".join(f"{k} x{v}" for k, v in run.exits.items()),
        note,
    )
