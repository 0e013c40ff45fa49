"""RedisWallet against the real Redis (and a throwaway redis-server of our own for the failure test):
what is Redis's alone. The WalletStore contract (tests/support/contracts/wallet.py) runs over this adapter
in tests/integration/test_contract_real.py."""

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
from inplay.ports import Credit, Debit, DebitResult

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


# --- what only the Redis adapter has (the port's promises: tests/support/contracts/wallet.py) -------


async def test_compensate_count_reports_each_refund_once(wallet: RedisWallet, unique_id: Callable[[str], str]) -> None:
    account = unique_id("acc")
    selection = f"{unique_id('mkt')}/away"
    await funded(wallet, account, 1_000)
    d = debit(account, 400, "k", liability_keys=(selection,), liability=2_000, cap=2_000)
    assert statuses(await wallet.debit_batch([d])) == ["DEBITED"]
    assert await wallet.compensate_count([d, d]) == 1
    assert await wallet.compensate_count([d, debit(account, 400, "other", "bet-never")]) == 0
    assert await wallet.balances([account]) == [1_000]
    # The liability counter itself is back to zero (not only "the next debit fits").
    assert int(await wallet.client.get(f"{wallet.prefix}liab:{selection}") or 0) == 0


async def test_idempotency_records_expire_after_a_week(wallet: RedisWallet, unique_id: Callable[[str], str]) -> None:
    account = unique_id("acc")
    await funded(wallet, account, 1_000)
    await wallet.debit_batch([debit(account, 100, "k", "b1")])
    await wallet.finish_idempotent([(account, "k", '{"bet":{"id":"b1"}}')])
    ttl = await wallet.client.ttl(f"{wallet.prefix}idem:{account}:k")
    assert 6 * 86_400 < ttl <= 7 * 86_400


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
