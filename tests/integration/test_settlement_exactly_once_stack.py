"""C1 on the real stack: a fault injected once (through the ports) on a write of the accumulator phase,
then a retry of the same SettleEvent: each ``payout:<run>:<bet>`` entry at most once in Cassandra, Redis
equal to the ledger, money conserved (tests/support/ledger_checks.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from inplay.domain.settlement import SettlementConfig, SettlementService
from inplay.model import BetState, RunState
from tests.support.faults import Faulty, InjectedFault
from tests.support.ledger_checks import assert_money_invariants
from tests.support.settlement import DEFAULT_CONFIG, SettleEnv, W, open_senv, res

pytestmark = pytest.mark.integration


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


def faulty_service(senv: SettleEnv, ledger: Faulty) -> SettlementService:
    config = SettlementConfig(**{**DEFAULT_CONFIG, "topic_prefix": senv.topic_prefix})
    return SettlementService(senv.store, ledger, senv.wallet, senv.bus, senv.locks, config=config)  # type: ignore[arg-type]


@pytest.mark.parametrize("applied", [False, True], ids=["history-lost", "history-landed-reply-lost"])
async def test_history_fault_in_accumulator_phase_then_retry_pays_once(senv: SettleEnv, applied: bool) -> None:
    a, b = senv.unique_id("evA"), senv.unique_id("evB")
    accounts = [await senv.account() for _ in range(3)]
    accas = [await senv.bet(accounts[i % 3], [(a, "ma", "h", "2.00"), (b, "mb", "h", "3.00")], 100) for i in range(8)]
    await senv.service.settle_event(b, res(("mb", "h", W)), "r1")
    ids = {x.bet_id for x in accas}
    ledger = Faulty(senv.ledger)
    ledger.fail("append_bet_events", applied=applied, when=lambda args: any(ev.bet_id in ids for ev in args[0]))
    service = faulty_service(senv, ledger)
    with pytest.raises(InjectedFault):
        await service.settle_event(a, res(("ma", "h", W)), "r1")
    assert ledger.fired == ["append_bet_events"]
    run = await service.settle_event(a, res(("ma", "h", W)), "r1")
    assert run.state == RunState.COMPLETED
    for bet in accas:
        assert await senv.settled(bet) == (BetState.WON, 600)
    summary = await assert_money_invariants(senv.ledger, senv.wallet, senv.accounts, deposits=senv.deposits)
    assert summary.by_kind["PAYOUT"] == 8 * 600
    assert sorted(summary.payout_entry_ids()) == sorted(f"payout:{run.run_id}:{x.bet_id}" for x in accas)


async def test_cancel_during_the_accumulator_history_write_then_retry_pays_once(senv: SettleEnv) -> None:
    """SettleEvent(wait=true) cancelled (a client deadline) while the accumulator phase's history write is
    in flight on Cassandra, then the same request again."""
    a, b = senv.unique_id("evA"), senv.unique_id("evB")
    acc = await senv.account()
    accas = [await senv.bet(acc, [(a, "ma", "h", "2.00"), (b, "mb", "h", "3.00")], 100) for _ in range(6)]
    await senv.service.settle_event(b, res(("mb", "h", W)), "r1")
    ids = {x.bet_id for x in accas}
    ledger = Faulty(senv.ledger)
    entered = ledger.hang("append_bet_events", when=lambda args: any(ev.bet_id in ids for ev in args[0]))
    service = faulty_service(senv, ledger)
    task = asyncio.create_task(service.settle_event(a, res(("ma", "h", W)), "r1"))
    await asyncio.wait_for(entered.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    run = await service.settle_event(a, res(("ma", "h", W)), "r1")
    assert run.state == RunState.COMPLETED
    assert [await senv.settled(x) for x in accas] == [(BetState.WON, 600)] * 6
    summary = await assert_money_invariants(senv.ledger, senv.wallet, senv.accounts, deposits=senv.deposits)
    assert len(summary.payout_entry_ids()) == 6
