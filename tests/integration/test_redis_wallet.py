"""RedisWallet against the real Redis (and a throwaway redis-server of our own for the failure test)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from inplay.adapters.redis_wallet import RedisWallet
from inplay.ports import AccountLimits, Credit, Debit, DebitResult

pytestmark = pytest.mark.integration

DAY = "20260301"
NOW = 1_772_323_200_000  # 2026-03-01T00:00:00Z


def debit(
    account: str,
    amount: int,
    key: str,
    bet_id: str | None = None,
    *,
    liability_keys: tuple[str, ...] = (),
    liability: int = 0,
    cap: int = 0,
    day: str = DAY,
    now_ms: int = NOW,
) -> Debit:
    return Debit(
        account_id=account,
        idempotency_key=key,
        bet_id=bet_id or f"bet-{key}",
        amount_minor=amount,
        liability_keys=liability_keys,
        liability_minor=liability,
        liability_cap_minor=cap,
        day=day,
        now_ms=now_ms,
    )


async def funded(wallet: RedisWallet, account: str, amount: int) -> None:
    assert await wallet.credit_batch([Credit(account, f"deposit:{account}:seed", amount)]) == [True]


def statuses(results: list[DebitResult]) -> list[str]:
    return [r.status for r in results]


# --- round trips ---------------------------------------------------------------------------------------


async def test_round_trips(wallet: RedisWallet, unique_id: Callable[[str], str]) -> None:
    a, b, never = unique_id("acc"), unique_id("acc"), unique_id("acc")
    assert await wallet.balances([]) == []
    assert await wallet.balances([never]) == [0]  # missing = 0
    await wallet.set_balances({a: 1_234, b: -5})
    assert await wallet.balances([a, never, b]) == [1_234, 0, -5]

    assert await wallet.get_limits(a) == AccountLimits()
    limits = AccountLimits(daily_stake_limit_minor=5_000, self_excluded_until_ms=NOW + 1)
    await wallet.set_limits(a, limits)
    assert await wallet.get_limits(a) == limits

    assert await wallet.get_idempotent([(a, "k1"), (b, "k1")]) == [None, None]
    await wallet.finish_idempotent([(a, "k1", '{"rejection":{"reason":"X"}}')])
    assert await wallet.get_idempotent([(a, "k1"), (b, "k1")]) == ['{"rejection":{"reason":"X"}}', None]
    # Empty batches are no-ops (no script call).
    assert await wallet.debit_batch([]) == []
    assert await wallet.credit_batch([]) == []
    await wallet.compensate([])
    await wallet.finish_idempotent([])


async def test_amounts_stay_exact_integers(wallet: RedisWallet, unique_id: Callable[[str], str]) -> None:
    # Lua numbers are doubles and print large values as 1e+15: amounts must travel as integer strings.
    account = unique_id("big")
    big = 10**15 + 7
    await funded(wallet, account, big)
    [result] = await wallet.debit_batch([debit(account, 10**15, "k")])
    assert result == DebitResult("DEBITED", 7)
    assert await wallet.balances([account]) == [7]


# --- debit statuses ------------------------------------------------------------------------------------


async def test_every_debit_status(wallet: RedisWallet, unique_id: Callable[[str], str]) -> None:
    rich, poor, limited, excluded = (unique_id(p) for p in ("rich", "poor", "limited", "excluded"))
    await wallet.set_balances({rich: 100_000, poor: 50, limited: 100_000, excluded: 100_000})
    await wallet.set_limits(limited, AccountLimits(daily_stake_limit_minor=1_000))
    await wallet.set_limits(excluded, AccountLimits(self_excluded_until_ms=NOW + 60_000))
    selection = f"{unique_id('mkt')}/home"

    results = await wallet.debit_batch(
        [
            debit(rich, 1_000, "d1", liability_keys=(selection,), liability=9_000, cap=10_000),
            debit(rich, 1_000, "d1", "bet-other"),  # same key, same batch: sees the reservation
            debit(poor, 51, "p1"),
            debit(limited, 600, "l1"),
            debit(limited, 600, "l2"),  # 600 + 600 > 1000 today
            debit(limited, 600, "l3", day="20260302"),  # a new day has its own counter
            debit(excluded, 10, "x1"),
            debit(excluded, 10, "x2", now_ms=NOW + 60_000),  # exclusion over
            debit(rich, 100, "r2", liability_keys=(selection,), liability=1_001, cap=10_000),
            debit(rich, 100, "r3", liability_keys=(selection,), liability=1_000, cap=10_000),
        ]
    )
    assert statuses(results) == [
        "DEBITED",
        "DUPLICATE",
        "INSUFFICIENT_FUNDS",
        "DEBITED",
        "DAILY_STAKE_LIMIT",
        "DEBITED",
        "SELF_EXCLUDED",
        "DEBITED",
        "LIABILITY_EXCEEDED",
        "DEBITED",
    ]
    assert results[0].balance_minor == 99_000
    assert results[1].existing == "PENDING:bet-d1:"
    assert results[2].balance_minor == 50  # unchanged, reported
    assert results[9].balance_minor == 98_900
    assert await wallet.balances([rich, poor, limited, excluded]) == [98_900, 50, 98_800, 99_990]
    # Rejections reserve nothing: the same keys can be used again.
    assert await wallet.get_idempotent([(poor, "p1"), (limited, "l2"), (excluded, "x1"), (rich, "r2")]) == [None] * 4
    # The liability counter holds exactly the accepted bets' liability (9000 + 1000 = the cap).
    assert int(await wallet.client.get(f"{wallet.prefix}liab:{selection}") or 0) == 10_000
    # A zero-liability debit with keys (no cap) does not touch them.
    [ok] = await wallet.debit_batch([debit(rich, 1, "z", liability_keys=(selection,))])
    assert ok.status == "DEBITED"


async def test_duplicate_returns_the_final_record(wallet: RedisWallet, unique_id: Callable[[str], str]) -> None:
    account = unique_id("acc")
    await funded(wallet, account, 1_000)
    assert statuses(await wallet.debit_batch([debit(account, 100, "k", "b1")])) == ["DEBITED"]
    await wallet.finish_idempotent([(account, "k", '{"bet":{"id":"b1"}}')])
    [dup] = await wallet.debit_batch([debit(account, 100, "k", "b2")])
    assert dup == DebitResult("DUPLICATE", 900, '{"bet":{"id":"b1"}}')


async def test_retried_debit_is_not_applied_twice(wallet: RedisWallet, unique_id: Callable[[str], str]) -> None:
    # The client retries a script whose reply was lost: the same bet id finds its own reservation.
    account = unique_id("acc")
    await funded(wallet, account, 1_000)
    first = await wallet.debit_batch([debit(account, 300, "k", "b1")])
    again = await wallet.debit_batch([debit(account, 300, "k", "b1")])
    assert statuses(first) == statuses(again) == ["DEBITED"]
    assert await wallet.balances([account]) == [700]


# --- credits and compensation --------------------------------------------------------------------------


async def test_credit_applies_once_per_entry(wallet: RedisWallet, unique_id: Callable[[str], str]) -> None:
    account = unique_id("acc")
    deposit = Credit(account, f"deposit:{account}:key-1", 5_000)
    payout = Credit(account, f"payout:{unique_id('bet')}:run-1", 1_250)
    assert await wallet.credit_batch([deposit, deposit, payout]) == [True, False, True]
    assert await wallet.credit_batch([deposit, payout]) == [False, False]
    reversal = Credit(account, f"payout-reversal:{payout.entry_id}", -1_250)  # negative credits debit
    assert await wallet.credit_batch([reversal, reversal]) == [True, False]
    assert await wallet.balances([account]) == [5_000]


async def test_compensate_applies_once_and_releases_everything(
    wallet: RedisWallet, unique_id: Callable[[str], str]
) -> None:
    account = unique_id("acc")
    selection = f"{unique_id('mkt')}/away"
    await funded(wallet, account, 1_000)
    await wallet.set_limits(account, AccountLimits(daily_stake_limit_minor=500))
    d = debit(account, 400, "k", liability_keys=(selection,), liability=2_000, cap=2_000)
    assert statuses(await wallet.debit_batch([d])) == ["DEBITED"]

    assert await wallet.compensate_count([d, d]) == 1
    await wallet.compensate([d])
    assert await wallet.balances([account]) == [1_000]
    assert await wallet.get_idempotent([(account, "k")]) == [None]
    assert int(await wallet.client.get(f"{wallet.prefix}liab:{selection}") or 0) == 0
    # Daily counter and liability released: the same stake fits again, under a new key and bet.
    retry = debit(account, 400, "k", "bet-retry", liability_keys=(selection,), liability=2_000, cap=2_000)
    assert statuses(await wallet.debit_batch([retry])) == ["DEBITED"]
    # The first bet's compensation stays spent; a debit that never happened is never refunded.
    never = debit(account, 400, "other", "bet-never")
    assert await wallet.compensate_count([d, never]) == 0
    assert await wallet.balances([account]) == [600]


async def test_finish_never_overwrites_a_reservation_with_a_rejection(
    wallet: RedisWallet, unique_id: Callable[[str], str]
) -> None:
    account = unique_id("acc")
    await funded(wallet, account, 1_000)
    await wallet.debit_batch([debit(account, 100, "k", "b1")])
    rejection = '{"rejection":{"reason":"INSUFFICIENT_FUNDS"}}'
    await wallet.finish_idempotent([(account, "k", rejection)])
    assert await wallet.get_idempotent([(account, "k")]) == ["PENDING:b1:"]
    await wallet.finish_idempotent([(account, "k", '{"bet":{"id":"b1"}}'), (account, "free", rejection)])
    assert await wallet.get_idempotent([(account, "k"), (account, "free")]) == ['{"bet":{"id":"b1"}}', rejection]
    # A late rejection (e.g. a concurrent retry that lost) never replaces the acceptance.
    await wallet.finish_idempotent([(account, "k", rejection)])
    assert await wallet.get_idempotent([(account, "k")]) == ['{"bet":{"id":"b1"}}']
    ttl = await wallet.client.ttl(f"{wallet.prefix}idem:{account}:k")
    assert 6 * 86_400 < ttl <= 7 * 86_400


# --- concurrency ---------------------------------------------------------------------------------------


async def test_concurrent_debits_never_overdraw(wallet: RedisWallet, unique_id: Callable[[str], str]) -> None:
    account = unique_id("acc")
    await funded(wallet, account, 50 * 100)
    calls = [wallet.debit_batch([debit(account, 100, f"c{i}")]) for i in range(200)]
    results = [r for batch in await asyncio.gather(*calls) for r in batch]
    assert statuses(results).count("DEBITED") == 50
    assert set(statuses(results)) == {"DEBITED", "INSUFFICIENT_FUNDS"}
    assert all(r.balance_minor >= 0 for r in results)
    # Each accepted debit saw a distinct balance: 4900, 4800, ..., 0.
    assert sorted(r.balance_minor for r in results if r.status == "DEBITED") == list(range(0, 5_000, 100))
    assert await wallet.balances([account]) == [0]


# --- failures ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_closed_port_raises_connection_error(unique_id: Callable[[str], str]) -> None:
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        await RedisWallet.connect(f"redis://127.0.0.1:{_free_port()}/0", f"{unique_id('t')}:")
    assert time.monotonic() - started < 10


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A throwaway redis-server of this test (never the shared one): (url, pid)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (scripts/stack/stack.sh installs it)")
    port = _free_port()
    pidfile = tmp_path / "redis.pid"
    subprocess.run(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--daemonize", "yes", "--pidfile", str(pidfile), "--dir", str(tmp_path)],
        check=True,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        if time.monotonic() > deadline:
            pytest.fail("own redis-server did not start")
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    try:
        yield f"redis://127.0.0.1:{port}/0", pid
    finally:
        try:
            os.kill(pid, signal.SIGKILL)  # our own server, by its pid
        except ProcessLookupError:
            pass


@pytest.fixture
async def own_wallet(own_redis: tuple[str, int]) -> AsyncIterator[RedisWallet]:
    url, _ = own_redis
    deadline = time.monotonic() + 10
    while True:
        try:
            store = await RedisWallet.connect(url, "own:")
            break
        except RedisConnectionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
    yield store
    await store.close()


async def test_server_killed_mid_test(own_wallet: RedisWallet, own_redis: tuple[str, int]) -> None:
    _, pid = own_redis
    await own_wallet.credit_batch([Credit("acc", "deposit:acc:1", 1_000_000)])
    before = await own_wallet.debit_batch([debit("acc", 1, f"k{i}") for i in range(10)])
    assert statuses(before) == ["DEBITED"] * 10

    # Keep placing batches while the server dies under them.
    outcomes: list[list[DebitResult] | BaseException] = []

    async def place(n: int) -> None:
        for i in range(n):
            try:
                outcomes.append(await own_wallet.debit_batch([debit("acc", 1, f"live-{n}-{i}")]))
            except Exception as exc:
                outcomes.append(exc)
            await asyncio.sleep(0.002)

    placing = asyncio.gather(*(place(n) for n in range(20, 30)))
    await asyncio.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    await placing

    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert failures, "every call succeeded although the server was killed"
    # A failure is a clear connection error, never a result; successes happened before the kill.
    assert all(isinstance(f, RedisConnectionError | RedisTimeoutError) for f in failures), failures[:3]
    port = own_redis[0].rsplit(":", 1)[1].split("/")[0]
    assert port in str(failures[-1]), failures[-1]
    # Every later call fails too (nothing reported as success on a dead server).
    for call in (
        own_wallet.debit_batch([debit("acc", 1, "after")]),
        own_wallet.credit_batch([Credit("acc", "after", 1)]),
        own_wallet.balances(["acc"]),
    ):
        with pytest.raises(RedisConnectionError):
            await call


async def test_scripts_survive_a_script_cache_flush(own_wallet: RedisWallet) -> None:
    # EVALSHA after SCRIPT FLUSH (a restarted or failed-over server) reloads the script transparently.
    # On our own server: flushing the shared one's script cache would disturb other tests.
    await own_wallet.credit_batch([Credit("acc", "deposit:acc:1", 100)])
    await own_wallet.client.script_flush()
    assert statuses(await own_wallet.debit_batch([debit("acc", 100, "k")])) == ["DEBITED"]
