"""Exactly once across crashes: the settlement worker runs as a SUBPROCESS against the real stack and is
killed mid-run — by an injected exit at a chosen point of a page (``tests/support/crash_worker.py``: the
worker built by the composition root with its ports wrapped, the process ends with ``os._exit`` like a
kill -9 would), or by SIGKILL from the test once progress shows —
then run again. Every winning bet must be paid exactly once, none missed, and the Redis balances must
equal the ledger."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from inplay.domain.settlement.messages import result_message
from inplay.model import BetState, EntryKind, RunState
from inplay.ports import TOPIC_RESULTS, BusMessage
from tests.support.settlement import SettleEnv, W, open_senv, res

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Injected crashes count pages: one worker committing one page at a time, so "after page 3" is exact.
ONE_PAGE_AT_A_TIME = {"INPLAY_SETTLEMENT_COMMIT_CONCURRENCY": "1", "INPLAY_SETTLEMENT_WORKERS": "1"}
# Four workers over bucket ranges, two pages in flight each: many pages are being written at once.
PARALLEL = {"INPLAY_SETTLEMENT_COMMIT_CONCURRENCY": "2", "INPLAY_SETTLEMENT_WORKERS": "4"}


@pytest.fixture
async def senv(
    ledger: Any,
    wallet: Any,
    bus: Any,
    topic_prefix: str,
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    unique_id: Callable[[str], str],
) -> AsyncIterator[SettleEnv]:
    async with open_senv(ledger, wallet, bus, topic_prefix, kafka_bootstrap, redis_url, redis_prefix, unique_id) as env:
        yield env


@pytest.fixture
def worker_env(cassandra_keyspace: str, redis_prefix: str, topic_prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INPLAY_SETTLEMENT_")}
    env.update(
        INPLAY_KEYSPACE=cassandra_keyspace,
        INPLAY_REDIS_PREFIX=redis_prefix,
        INPLAY_TOPIC_PREFIX=topic_prefix,
        INPLAY_SETTLEMENT_PAGE_SIZE="10",
        INPLAY_SETTLEMENT_MULTI_PAGE_SIZE="4",
        INPLAY_SETTLEMENT_LOCK_TTL_MS="1500",
        INPLAY_SETTLEMENT_LOCK_WAIT_MS="20000",
        PYTHONUNBUFFERED="1",
    )
    return env


def worker(
    env: dict[str, str], *args: str, extra: dict[str, str] | None = None, crash_at: str = "", page_delay_ms: int = 0
) -> subprocess.Popen[str]:
    """``python -m inplay.worker ARGS``; with ``crash_at`` (exit at that write) or ``page_delay_ms`` (a pause
    after each page) the test entry tests/support/crash_worker.py, which wraps the worker's ports."""
    entry = ["inplay.worker"]
    if crash_at or page_delay_ms:
        entry = ["tests.support.crash_worker", "--crash-at", crash_at, "--page-delay-ms", str(page_delay_ms)]
    return subprocess.Popen(
        [sys.executable, "-m", *entry, *args],
        env={**env, **(extra or {})},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


async def run_worker(
    env: dict[str, str], *args: str, extra: dict[str, str] | None = None, crash_at: str = ""
) -> tuple[int, str, str]:
    return await asyncio.to_thread(lambda: finish(worker(env, *args, extra=extra, crash_at=crash_at)))


async def place_book(senv: SettleEnv, ev: str, n: int) -> tuple[list[Any], list[Any]]:
    """``n`` singles over 6 accounts; every third one loses."""
    accounts = [await senv.account(10**6) for _ in range(6)]
    await senv.seed_markets((ev, "m", ("h", "a")))
    bets = [senv.make_bet(accounts[i % 6], [(ev, "m", "a" if i % 3 == 0 else "h", "2.50")], 100 + i) for i in range(n)]
    await senv.place(bets)
    winners = [b for i, b in enumerate(bets) if i % 3]
    losers = [b for i, b in enumerate(bets) if i % 3 == 0]
    return winners, losers


async def assert_paid_exactly_once(senv: SettleEnv, winners: list[Any], losers: list[Any]) -> None:
    for bet in winners:
        payouts = [e for e in await senv.entries_of(bet) if e.kind == EntryKind.PAYOUT]
        assert [e.amount_minor for e in payouts] == [bet.stake_minor * 5 // 2], bet.bet_id
        assert await senv.settled(bet) == (BetState.WON, bet.stake_minor * 5 // 2)
        settled_rows = [e for e in await senv.ledger.bet_history(bet.bet_id) if e.kind == "SETTLED"]
        assert len(settled_rows) == 1
    for bet in losers:
        assert [e.kind for e in await senv.entries_of(bet)] == [EntryKind.STAKE]
        assert await senv.settled(bet) == (BetState.LOST, 0)
    kinds = await senv.check_conservation()
    assert kinds["PAYOUT"] == sum(b.stake_minor * 5 // 2 for b in winners)


async def ledger_vs_redis(senv: SettleEnv) -> dict[str, tuple[int, int]]:
    truth = await senv.ledger.account_balances()
    projected = await senv.wallet.balances(senv.accounts)
    return {a: (p, truth.get(a, 0)) for a, p in zip(senv.accounts, projected, strict=True) if p != truth.get(a, 0)}


@pytest.mark.parametrize("stage", ["ledger", "credit", "checkpoint"])
async def test_injected_crash_mid_page_then_rerun(
    senv: SettleEnv,
    worker_env: dict[str, str],
    stage: str,
) -> None:
    ev = senv.unique_id("ev")
    winners, losers = await place_book(senv, ev, 45)
    args = ["settle", "--event", ev, "--request-id", "ft", "--outcome", "m:h:WIN"]
    rc, _, err = await run_worker(worker_env, *args, extra=ONE_PAGE_AT_A_TIME, crash_at=f"S:3:{stage}")
    assert rc == 137, err[-2000:]
    assert "crash injected" in err
    status = await senv.service.status(ev)
    assert status.run.state == RunState.RUNNING  # started, not finished, nobody running it
    processed = status.run.stats.bets_processed
    assert processed == (30 if stage == "checkpoint" else 20)
    if stage == "ledger":  # the ledger has page 3's payouts, Redis does not (yet)
        assert await ledger_vs_redis(senv)
    # Run again (a retry with the same request id): waits for the dead worker's lock to expire, resumes.
    rc, out, err = await run_worker(worker_env, *args)
    assert rc == 0, err[-2000:]
    run = json.loads(out)
    assert run["state"] == "COMPLETED" and run["bets_processed"] == 45 and run["bets_total"] == 45
    assert run["payouts_minor"] == sum(b.stake_minor * 5 // 2 for b in winners)
    assert "resuming" in err and "already done" in err
    assert await ledger_vs_redis(senv) == {}
    await assert_paid_exactly_once(senv, winners, losers)


@pytest.mark.parametrize("stage", ["ledger", "credit"])
async def test_injected_crash_in_the_middle_of_a_parallel_run_then_rerun(
    senv: SettleEnv,
    worker_env: dict[str, str],
    stage: str,
) -> None:
    """Four workers over bucket ranges; the process dies (kill -9 style) while page 6's rows are in the
    ledger (or credited) and other workers' pages are in flight; the retry pays each bet exactly once."""
    ev = senv.unique_id("ev")
    winners, losers = await place_book(senv, ev, 150)
    args = ["settle", "--event", ev, "--request-id", "ft", "--outcome", "m:h:WIN"]
    rc, _, err = await run_worker(worker_env, *args, extra=PARALLEL, crash_at=f"S:6:{stage}")
    assert rc == 137, err[-2000:]
    status = await senv.service.status(ev)
    assert status.run.state == RunState.RUNNING and status.run.stats.bets_processed < 150
    rc, out, err = await run_worker(worker_env, *args, extra=PARALLEL)
    assert rc == 0, err[-2000:]
    run = json.loads(out)
    assert run["state"] == "COMPLETED" and run["bets_processed"] == 150 and run["bets_total"] == 150
    assert run["payouts_minor"] == sum(b.stake_minor * 5 // 2 for b in winners)
    assert await ledger_vs_redis(senv) == {}
    await assert_paid_exactly_once(senv, winners, losers)


async def test_injected_crash_in_the_accumulator_phase(
    senv: SettleEnv,
    worker_env: dict[str, str],
) -> None:
    e1, e2 = senv.unique_id("ev"), senv.unique_id("ev")
    acc = await senv.account(10**6)
    accas = [
        senv.make_bet(acc, [(e1, "a", "h", "2.00"), (e2, "b", "h" if i % 2 else "x", "3.00")], 100) for i in range(10)
    ]
    await senv.place(accas)
    await senv.seed_markets((e1, "a", ("h",)), (e2, "b", ("h", "x")))
    await senv.service.settle_event(e1, res(("a", "h", W)), "ft")
    args = ["settle", "--event", e2, "--request-id", "ft", "--outcome", "b:h:WIN"]
    rc, _, err = await run_worker(worker_env, *args, extra=ONE_PAGE_AT_A_TIME, crash_at="M:2:ledger")
    assert rc == 137, err[-2000:]
    rc, out, err = await run_worker(worker_env, *args)
    assert rc == 0, err[-2000:]
    assert json.loads(out)["payouts_minor"] == 5 * 600
    for i, bet in enumerate(accas):
        payouts = [e.amount_minor for e in await senv.entries_of(bet) if e.kind == EntryKind.PAYOUT]
        assert payouts == ([600] if i % 2 else []), bet.bet_id
    await senv.check_conservation()


async def test_kill_9_while_running_then_resume(
    senv: SettleEnv,
    worker_env: dict[str, str],
) -> None:
    ev = senv.unique_id("ev")
    winners, losers = await place_book(senv, ev, 90)
    args = ["settle", "--event", ev, "--request-id", "ft", "--outcome", "m:h:WIN"]
    proc = worker(worker_env, *args, page_delay_ms=400)
    try:
        deadline = time.monotonic() + 120
        processed = 0
        while time.monotonic() < deadline:
            try:
                processed = (await senv.service.status(ev)).run.stats.bets_processed
            except Exception:  # no run yet
                processed = 0
            if processed >= 30:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            await asyncio.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    status = await senv.service.status(ev)
    assert status.run.state == RunState.RUNNING and 30 <= status.run.stats.bets_processed < 90
    # The operator (or the restarted worker) resumes the event's unfinished runs.
    rc, out, err = await run_worker(worker_env, "resume", "--event", ev)
    assert rc == 0, err[-2000:]
    [run] = json.loads(out)
    assert run["state"] == "COMPLETED" and run["bets_processed"] == 90
    await assert_paid_exactly_once(senv, winners, losers)


async def test_kafka_triggered_worker_killed_and_restarted(
    senv: SettleEnv,
    worker_env: dict[str, str],
) -> None:
    """The production path: a result message on Kafka, the worker's consumer settles; kill -9 mid-run; a
    restarted worker gets the message again (its offset was not committed) and finishes the same run."""
    ev = senv.unique_id("ev")
    winners, losers = await place_book(senv, ev, 60)
    topic = senv.topic_prefix + TOPIC_RESULTS
    await senv.bus.publish([BusMessage(topic, ev, result_message(ev, "feed-9", [("m", "h", "WIN")]))])
    await senv.bus.flush()
    env = {**worker_env}  # the worker's consumer group is per topic prefix, i.e. per test session
    proc = worker(env, "serve", page_delay_ms=400)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if (await senv.service.status(ev)).run.stats.bets_processed >= 20:
                    break
            except Exception:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            await asyncio.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert (await senv.service.status(ev)).run.state == RunState.RUNNING
    proc = worker(env, "serve")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = await senv.service.status(ev)
            if status.run.state == RunState.COMPLETED:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            await asyncio.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc, _, err = await asyncio.to_thread(lambda: finish(proc, 60))
    assert rc == 0, err[-3000:]
    assert [r.run_id for r in status.history] == [f"{ev}.s.feed-9"]
    await assert_paid_exactly_once(senv, winners, losers)
