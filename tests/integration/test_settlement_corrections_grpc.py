"""Corrections over gRPC on the real stack: the run-id collision sequence (H6), a resettle of the
half-time market after a full-time run (H4), a rollback of a rollback over a re-settled market (H5).
Every test ends with the shared money invariants."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from inplay.servicers import settlement as settlement_servicer
from inplay.settlement.v1 import settlement_pb2 as pb
from inplay.settlement.v1 import settlement_pb2_grpc
from tests.support.ledger_checks import assert_money_invariants
from tests.support.settlement import OPERATOR, SettleEnv, details, open_senv, outcome

pytestmark = pytest.mark.integration
WIN = pb.SELECTION_RESULT_WIN
Served = tuple[SettleEnv, settlement_pb2_grpc.SettlementServiceStub]


@pytest.fixture
async def served(
    ledger: Any,
    wallet: Any,
    bus: Any,
    topic_prefix: str,
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    unique_id: Callable[[str], str],
) -> AsyncIterator[Served]:
    async with open_senv(ledger, wallet, bus, topic_prefix, kafka_bootstrap, redis_url, redis_prefix, unique_id) as env:
        server = grpc.aio.server()
        settlement_servicer.add_to_server(server, env.service)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            yield env, settlement_pb2_grpc.SettlementServiceStub(channel)
        finally:
            await channel.close()
            await server.stop(1)


async def settle(stub: Any, ev: str, request_id: str, market: str, selection: str) -> Any:
    request = pb.SettleEventRequest(
        event_id=ev, request_id=request_id, outcomes=[outcome(market, selection, WIN)], wait=True
    )
    return (await stub.SettleEvent(request, metadata=OPERATOR)).run


async def check(env: SettleEnv) -> None:
    await assert_money_invariants(env.ledger, env.wallet, env.accounts, deposits=env.deposits)


async def test_run_id_collision_sequence(served: Served) -> None:
    env, stub = served
    alice, bob = await env.account(1000), await env.account(1000)
    ev = env.unique_id("ev")
    a = await env.bet(alice, [(ev, "m1", "h", "2.00")])
    b = await env.bet(bob, [(ev, "m2", "h", "3.00")])
    first = await settle(stub, ev, "a", "m1", "h")
    second = await settle(stub, ev, "a.r1", "m2", "h")
    assert first.run_id != second.run_id
    rollback = pb.RollbackSettlementRequest(event_id=ev, run_id=first.run_id, wait=True)
    rb = (await stub.RollbackSettlement(rollback, metadata=OPERATOR)).run
    assert rb.run_id not in (first.run_id, second.run_id) and rb.state == pb.RUN_STATE_COMPLETED
    assert (await env.settled(a))[1] == 0  # alice's payout reversed
    assert (await env.settled(b))[1] == 3000
    status = await stub.GetSettlementStatus(pb.GetSettlementStatusRequest(event_id=ev), metadata=OPERATOR)
    kinds = {r.run_id: r.kind for r in status.history}
    assert kinds == {
        first.run_id: pb.RUN_KIND_SETTLE,
        second.run_id: pb.RUN_KIND_SETTLE,
        rb.run_id: pb.RUN_KIND_ROLLBACK,
    }
    assert await env.wallet.balances([alice, bob]) == [0, 3000]
    await check(env)


async def test_resettle_of_half_time_after_full_time_fails_with_no_effect(served: Served) -> None:
    env, stub = served
    alice, bob = await env.account(1000), await env.account(1000)
    ev = env.unique_id("ev")
    await env.bet(alice, [(ev, "ht", "h", "2.00")])
    await env.bet(bob, [(ev, "ft", "h", "3.00")])
    await settle(stub, ev, "half-time", "ht", "h")
    await settle(stub, ev, "full-time", "ft", "h")
    before = await env.wallet.balances([alice, bob])
    request = pb.ResettleEventRequest(event_id=ev, request_id="fix-ht", outcomes=[outcome("ht", "a", WIN)], wait=True)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.ResettleEvent(request, metadata=OPERATOR)
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(exc.value)[0] == "MARKET_ALREADY_SETTLED"
    assert await env.wallet.balances([alice, bob]) == before == [2000, 3000]
    status = await stub.GetSettlementStatus(pb.GetSettlementStatusRequest(event_id=ev), metadata=OPERATOR)
    assert [r.kind for r in status.history] == [pb.RUN_KIND_SETTLE, pb.RUN_KIND_SETTLE]
    await check(env)


async def test_rollback_of_a_rollback_over_a_resettled_market_is_refused(served: Served) -> None:
    env, stub = served
    alice, bob = await env.account(1000), await env.account(1000)
    ev = env.unique_id("ev")
    await env.bet(alice, [(ev, "m", "A", "2.00")])
    await env.bet(bob, [(ev, "m", "B", "3.00")])
    s1 = await settle(stub, ev, "r1", "m", "A")
    r1 = (
        await stub.RollbackSettlement(
            pb.RollbackSettlementRequest(event_id=ev, run_id=s1.run_id, wait=True), metadata=OPERATOR
        )
    ).run
    await settle(stub, ev, "r2", "m", "B")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.RollbackSettlement(
            pb.RollbackSettlementRequest(event_id=ev, run_id=r1.run_id, wait=True), metadata=OPERATOR
        )
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(exc.value)[0] == "MARKET_RESETTLED"
    assert await env.wallet.balances([alice, bob]) == [0, 3000]
    await check(env)
