"""Admission control on the real stores (issue 16): one server with a small cap, overloaded on purpose.

Shed calls must answer RESOURCE_EXHAUSTED with google.rpc.RetryInfo, write nothing (the first successful
retry with the same key is not a replay, and balances/ledger count only the accepted bets), and succeed
when retried with the same key; accepted calls' latency stays bounded by the queue target plus the work
of at most ``cap`` calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from tests.support.api import as_user, assert_money_conserved, balance, caught_up, make_market, slip
from tests.support.api import deposit as fund
from tests.support.api import error_details as details

pytestmark = pytest.mark.integration

CAP = 2
QUEUE_TARGET_MS = 20
CALLS = 150
ACCOUNTS = 5
DEPOSIT = 1_000_000


@pytest.fixture
def small_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Must come before ``served`` in the test's arguments: the server reads these when it starts."""
    monkeypatch.setenv("INPLAY_ADMISSION_MAX_IN_FLIGHT", str(CAP))
    monkeypatch.setenv("INPLAY_ADMISSION_QUEUE_TARGET_MS", str(QUEUE_TARGET_MS))
    monkeypatch.setenv("INPLAY_ADMISSION_MAX_WAITING", "8")
    monkeypatch.setenv("INPLAY_ADMISSION_RETRY_AFTER_MS", "30")


def retry_delay_s(error: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    raise AssertionError("no google.rpc.RetryInfo in a shed answer")


async def place(stub: Any, request: Any, account: str) -> tuple[Any, float]:
    t0 = time.perf_counter()
    reply = await stub.PlaceBet(request, metadata=as_user(account), timeout=30)
    return reply, time.perf_counter() - t0


async def test_overload_sheds_before_any_write_and_same_key_retries_succeed(
    small_cap: None, served: tuple[Any, grpc.aio.Channel], unique_id: Callable[[str], str]
) -> None:
    runtime, channel = served
    market = await make_market(runtime, unique_id)
    accounts = [unique_id("adm") for _ in range(ACCOUNTS)]
    for account in accounts:
        await fund(channel, account, DEPOSIT)
    stub = bets_pb2_grpc.BetServiceStub(channel)
    calls = [
        (accounts[i % ACCOUNTS], bets_pb2.PlaceBetRequest(slip=slip(market, "2.00", unique_id("k"))))
        for i in range(CALLS)
    ]
    results = await asyncio.gather(*(place(stub, req, acc) for acc, req in calls), return_exceptions=True)

    accepted = [(calls[i], r) for i, r in enumerate(results) if not isinstance(r, BaseException)]
    shed = [(calls[i], r) for i, r in enumerate(results) if isinstance(r, grpc.aio.AioRpcError)]
    assert len(accepted) + len(shed) == CALLS, [r for r in results if isinstance(r, BaseException)][:3]
    assert shed, "150 concurrent calls against a cap of 2: some must be shed"
    for _, error in shed:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        info = details(error)["ErrorInfo"]
        assert info.reason == "OVERLOADED" and info.metadata["shed_by"] == "admission"
        assert 0 < retry_delay_s(error) <= 1.0
        # The same hint as a trailer, for clients that do not parse google.rpc.Status (gRPC's own retries).
        assert dict(error.trailing_metadata() or ()).get("grpc-retry-pushback-ms") == "30", error.trailing_metadata()

    # Accepted calls waited at most the queue target for a slot, then ran with at most CAP-1 others: on a
    # loaded 2-core box one call takes tens of ms, so 2 s is a bound that only an unbounded queue breaks.
    latencies = sorted(t for _, (_, t) in accepted)
    assert latencies[-1] < 2.0, f"accepted latency not bounded: max {latencies[-1]:.3f} s"

    # Nothing was written for the shed calls: the ledger and the balances count only the accepted bets.
    await caught_up(runtime)
    for account in accounts:
        mine = sum(1 for (acc, _), _ in accepted if acc == account)
        assert await balance(channel, account) == DEPOSIT - 100 * mine

    # Retried with the same key (honouring the hint), every shed call succeeds, as a first placement.
    for (account, request), error in shed:
        reply = await retry_until_accepted(stub, request, account, retry_delay_s(error))
        assert not reply.replayed, "a shed call had placed its bet"
    again = await stub.PlaceBet(shed[0][0][1], metadata=as_user(shed[0][0][0]))
    assert again.replayed
    for account in accounts:
        assert await balance(channel, account) == DEPOSIT - 100 * (CALLS // ACCOUNTS)
    await assert_money_conserved(runtime, channel, accounts)


async def retry_until_accepted(stub: Any, request: Any, account: str, delay_s: float) -> Any:
    for _ in range(50):
        await asyncio.sleep(delay_s)
        try:
            reply, _ = await place(stub, request, account)
            return reply
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            delay_s = retry_delay_s(error)
    raise AssertionError("a shed call never got in")
