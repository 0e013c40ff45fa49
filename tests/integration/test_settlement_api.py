"""Settlement through the whole API (all services in-process on the real stores, conftest ``served``):
results for another event's market or an unknown selection are refused with a field path and close
nothing (M6); a bet on the known winner while a run is RUNNING is rejected, because the run closes its
markets before it reads any bet (H7). Ends with the shared money invariants."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest

from inplay.app import Runtime
from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from inplay.model import MarketStatus
from inplay.settlement.v1 import settlement_pb2 as pb
from inplay.settlement.v1 import settlement_pb2_grpc
from tests.support.api import as_user, make_market, slip
from tests.support.api import deposit as fund
from tests.support.ledger_checks import assert_money_invariants
from tests.support.settlement import OPERATOR, SlowPages, details, outcome

pytestmark = pytest.mark.integration


async def test_results_for_a_foreign_market_or_unknown_selection_are_refused(
    served: tuple[Runtime, grpc.aio.Channel], unique_id: Callable[[str], str]
) -> None:
    runtime, channel = served
    mine, foreign = await make_market(runtime, unique_id), await make_market(runtime, unique_id)
    stub = settlement_pb2_grpc.SettlementServiceStub(channel)
    cases = [
        ([outcome(foreign.market_id, "home", pb.SELECTION_RESULT_WIN)], "outcomes[0].market_id"),
        (
            [
                outcome(mine.market_id, "home", pb.SELECTION_RESULT_LOSE),
                outcome(mine.market_id, "nonexistent", pb.SELECTION_RESULT_WIN),
            ],
            "outcomes[1].selection_id",
        ),
    ]
    for outcomes, field in cases:
        request = pb.SettleEventRequest(event_id=mine.event_id, request_id="r", outcomes=outcomes, wait=True)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.SettleEvent(request, metadata=OPERATOR)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert details(exc.value)[1] == [field]
    states = await runtime.odds.get_markets([mine.market_id, foreign.market_id])
    assert [s.status for s in states if s is not None] == [MarketStatus.ACTIVE, MarketStatus.ACTIVE]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GetSettlementStatus(pb.GetSettlementStatusRequest(event_id=mine.event_id), metadata=OPERATOR)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND  # no run was created


async def test_bet_on_the_winner_while_a_run_is_running_is_rejected(
    served: tuple[Runtime, grpc.aio.Channel], unique_id: Callable[[str], str]
) -> None:
    runtime, channel = served
    market = await make_market(runtime, unique_id)
    account = unique_id("acc")
    await fund(channel, account, 10_000)
    bets = bets_pb2_grpc.BetServiceStub(channel)
    placed = await bets.PlaceBet(bets_pb2.PlaceBetRequest(slip=slip(market, "2.00", "k1")), metadata=as_user(account))
    # Keep the run RUNNING for a while after its first page (a store that pauses after each checkpoint).
    executor = runtime.components["settlement"].service.executor  # type: ignore[attr-defined]
    executor._store = SlowPages(executor._store, 3.0)
    stub = settlement_pb2_grpc.SettlementServiceStub(channel)
    request = pb.SettleEventRequest(
        event_id=market.event_id,
        request_id="ft",
        outcomes=[outcome(market.market_id, "home", pb.SELECTION_RESULT_WIN)],
        wait=False,
    )
    await stub.SettleEvent(request, metadata=OPERATOR)
    status_request = pb.GetSettlementStatusRequest(event_id=market.event_id)
    # The markets are closed before SettleEvent returns (even with wait=false): the next bet is refused.
    late = bets.PlaceBet(bets_pb2.PlaceBetRequest(slip=slip(market, "2.00", "k2")), metadata=as_user(account))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await late
    status = await stub.GetSettlementStatus(status_request, metadata=OPERATOR)
    assert status.run.state == pb.RUN_STATE_RUNNING  # rejected while the run was still running
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    for _ in range(200):
        if (await stub.GetSettlementStatus(status_request, metadata=OPERATOR)).run.state == pb.RUN_STATE_COMPLETED:
            break
        await asyncio.sleep(0.05)
    history = await runtime.ledger.bet_history(placed.bet.bet_id)
    assert [e.kind for e in history][-1] == "SETTLED"
    await assert_money_invariants(runtime.ledger, runtime.wallet_store, [account])
