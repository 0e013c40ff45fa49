"""SettlementService over real gRPC on the real stores: operator-only, request mapping, status codes and
google.rpc error details, run fields (progress, history, negative balances)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from inplay.model import BetState, EntryKind, LedgerEntry
from inplay.ports import Credit
from inplay.servicers import settlement as settlement_servicer
from inplay.settlement.v1 import settlement_pb2 as pb
from inplay.settlement.v1 import settlement_pb2_grpc
from tests.support.settlement import OPERATOR, SettleEnv, details, now_ms, open_senv, outcome

pytestmark = pytest.mark.integration


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
) -> AsyncIterator[tuple[SettleEnv, settlement_pb2_grpc.SettlementServiceStub]]:
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


async def test_operator_only(served: tuple[SettleEnv, settlement_pb2_grpc.SettlementServiceStub]) -> None:
    _, stub = served
    request = pb.SettleEventRequest(event_id="e", request_id="r", outcomes=[outcome("m", "s", pb.SELECTION_RESULT_WIN)])
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.SettleEvent(request, metadata=(("x-inplay-subject", "punter"), ("x-inplay-roles", "user")))
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert details(exc.value)[0] == "OPERATOR_ONLY"
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GetSettlementStatus(pb.GetSettlementStatusRequest(event_id="e"))
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_settle_status_rollback_resettle(
    served: tuple[SettleEnv, settlement_pb2_grpc.SettlementServiceStub],
) -> None:
    env, stub = served
    winner = await env.account(1000)
    loser = await env.account(1000)
    ev = env.unique_id("ev")
    tie = await env.bet(winner, [(ev, "race", "a", "5.00")])
    other = await env.bet(loser, [(ev, "race", "b", "3.00")])
    response = await stub.SettleEvent(
        pb.SettleEventRequest(
            event_id=ev,
            request_id="result-1",
            outcomes=[outcome("race", "a", pb.SELECTION_RESULT_DEAD_HEAT, (1, 2))],
            reason="photo finish",
            wait=True,
        ),
        metadata=OPERATOR,
    )
    run = response.run
    assert run.state == pb.RUN_STATE_COMPLETED and run.kind == pb.RUN_KIND_SETTLE
    assert (run.bets_total, run.bets_processed, run.bets_still_open, run.payouts_minor) == (2, 2, 0, 2500)
    assert run.reason == "photo finish" and run.started_at.seconds > 0 and run.finished_at.seconds > 0
    assert run.run_id == f"{ev}.s.result-1"
    # The winner spends it; the rollback leaves the account negative and reports it.
    await env.ledger.append_entries(
        [LedgerEntry(f"wd:{winner}", winner, EntryKind.WITHDRAWAL, -2500, "EUR", "", "atm", now_ms())]
    )
    await env.wallet.credit_batch([Credit(winner, f"wd:{winner}", -2500)])
    rollback = pb.RollbackSettlementRequest(event_id=ev, run_id=run.run_id, reason="wrong photo", wait=True)
    rb = (await stub.RollbackSettlement(rollback, metadata=OPERATOR)).run
    assert rb.kind == pb.RUN_KIND_ROLLBACK and rb.target_run_id == run.run_id
    assert rb.state == pb.RUN_STATE_COMPLETED
    assert rb.payouts_minor == -2500 and list(rb.negative_balance_accounts) == [winner]
    # Nothing in effect: ResettleEvent has nothing to correct.
    b_wins = [outcome("race", "b", pb.SELECTION_RESULT_WIN)]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.ResettleEvent(
            pb.ResettleEventRequest(event_id=ev, request_id="result-2", outcomes=b_wins, wait=True),
            metadata=OPERATOR,
        )
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION and details(exc.value)[0] == "NOT_SETTLED"
    settle_b = pb.SettleEventRequest(event_id=ev, request_id="result-3", outcomes=b_wins, wait=True)
    second = (await stub.SettleEvent(settle_b, metadata=OPERATOR)).run
    assert second.payouts_minor == 3000
    # Correction: a dead heat after all.
    corrected = await stub.ResettleEvent(
        pb.ResettleEventRequest(
            event_id=ev,
            request_id="result-4",
            outcomes=[
                outcome("race", "a", pb.SELECTION_RESULT_DEAD_HEAT, (1, 2)),
                outcome("race", "b", pb.SELECTION_RESULT_DEAD_HEAT, (1, 2)),
            ],
            wait=True,
        ),
        metadata=OPERATOR,
    )
    assert corrected.rollback_run.target_run_id == second.run_id
    assert corrected.rollback_run.payouts_minor == -3000
    assert corrected.settle_run.payouts_minor == 2500 + 1500
    assert await env.settled(tie) == (BetState.WON, 2500)
    assert await env.settled(other) == (BetState.WON, 1500)
    status = await stub.GetSettlementStatus(pb.GetSettlementStatusRequest(event_id=ev), metadata=OPERATOR)
    assert [h.kind for h in status.history] == [pb.RUN_KIND_SETTLE, pb.RUN_KIND_ROLLBACK] * 2 + [pb.RUN_KIND_SETTLE]
    assert status.run.run_id == corrected.settle_run.run_id
    one = await stub.GetSettlementStatus(
        pb.GetSettlementStatusRequest(event_id=ev, run_id=run.run_id), metadata=OPERATOR
    )
    assert one.run.payouts_minor == 2500
    await env.check_conservation()


async def test_errors_map_to_status_codes(
    served: tuple[SettleEnv, settlement_pb2_grpc.SettlementServiceStub],
) -> None:
    env, stub = served
    ev = env.unique_id("ev")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.SettleEvent(
            pb.SettleEventRequest(
                event_id=ev,
                request_id="r",
                outcomes=[
                    outcome("m", "a", pb.SELECTION_RESULT_UNSPECIFIED),
                    outcome("m", "b", pb.SELECTION_RESULT_DEAD_HEAT, (3, 2)),
                ],
            ),
            metadata=OPERATOR,
        )
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(exc.value)[1] == ["outcomes[0].result", "outcomes[1].dead_heat_numerator"]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.SettleEvent(pb.SettleEventRequest(event_id=ev, request_id="r"), metadata=OPERATOR)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GetSettlementStatus(pb.GetSettlementStatusRequest(event_id=ev), metadata=OPERATOR)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    win = [outcome("m", "a", pb.SELECTION_RESULT_WIN)]
    await stub.SettleEvent(
        pb.SettleEventRequest(event_id=ev, request_id="r", outcomes=win, wait=True), metadata=OPERATOR
    )
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.SettleEvent(pb.SettleEventRequest(event_id=ev, request_id="r2", outcomes=win), metadata=OPERATOR)
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(exc.value)[0] == "MARKET_ALREADY_SETTLED"
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.RollbackSettlement(pb.RollbackSettlementRequest(event_id=ev, run_id="nope"), metadata=OPERATOR)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    await env.check_conservation()  # the shared money invariants after every settlement test
