"""`./dev cli reconcile --repair` (the documented repair command of docs/ledger.md and docs/reliability.md).

Found by the fault suite (FLUSHALL, then repair): the command called ``reconcile`` without the deployment's
projection name and shard count, so any repair crashed on ``record_epoch('')`` (Cassandra: "Key may not be
empty") and the projection stayed fenced-off/unrepaired.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from inplay.ids import key_part
from tests.support.api import balance, deposit
from tests.support.cli import run_reconcile

pytestmark = pytest.mark.integration


def _cli_env(redis_prefix: str, keyspace: str, topic_prefix: str) -> dict[str, str]:
    """The command's environment: this test's deployment (prefix, keyspace, topics) on the real stack."""
    return {
        **os.environ,
        "INPLAY_REDIS_PREFIX": redis_prefix,
        "INPLAY_KEYSPACE": keyspace,
        "INPLAY_TOPIC_PREFIX": topic_prefix,
        "INPLAY_LOG_LEVEL": "WARNING",
    }


async def test_reconcile_repair_command_rebuilds_a_wrong_balance(
    served: tuple[Any, Any],
    redis_prefix: str,
    cassandra_keyspace: str,
    topic_prefix: str,
    unique_id: Callable[[str], str],
) -> None:
    runtime, channel = served
    account = unique_id("acc")
    await deposit(channel, account, 5_000)
    # The projection drifts from the ledger (what a lost write or a stale replica leaves behind).
    await runtime.wallet_store.client.incrby(f"{redis_prefix}bal:{key_part(account)}", 777)
    assert await balance(channel, account) == 5_777
    env = _cli_env(redis_prefix, cassandra_keyspace, topic_prefix)
    done = await run_reconcile(env, "--repair", "--account", account)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "repaired from the ledger" in done.stdout
    assert await balance(channel, account) == 5_000


async def test_reconcile_repair_command_rebuilds_a_lost_projection_once(
    served: tuple[Any, Any],
    redis_prefix: str,
    cassandra_keyspace: str,
    topic_prefix: str,
    unique_id: Callable[[str], str],
) -> None:
    """The projection's keys are gone (FLUSHALL of this deployment's prefix) while the server runs. The
    command rebuilds it once, from the ledger, with nothing but the two money stores open: before, it
    opened a whole runtime (a journal writer on a shard of its own, the odds pipeline, Kafka consumers),
    whose start-up rebuilt the projection a first time, and a repair hung once for 300 s in the fault suite."""
    runtime, channel = served
    account = unique_id("acc")
    await deposit(channel, account, 5_000)
    client = runtime.wallet_store.client
    keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*", count=1000)]
    assert keys
    await client.delete(*keys)
    assert await runtime.wallet_store.epoch() is None
    env = _cli_env(redis_prefix, cassandra_keyspace, topic_prefix)
    # Only an account whose projected and true balances agree (0 and 0): the lost epoch alone must be
    # enough to repair, or every debit would stay NOT_READY.
    done = await run_reconcile(env, "--repair", "--account", unique_id("never-funded"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "repaired from the ledger" in done.stdout, done.stdout
    assert done.stderr.count("rebuilt: quiesce") == 1, done.stderr[-3000:]
    assert "lost its data" not in done.stderr, "the command ran a start-up rebuild of its own"
    assert await runtime.wallet_store.epoch() is not None
    assert await balance(channel, account) == 5_000
