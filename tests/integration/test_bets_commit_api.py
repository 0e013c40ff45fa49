"""Regression tests of the bet commit protocol through the public gRPC API, on the real stores.

Each test names the defect of ../shared/reviews/correctness-5b1550c.md (or issue 13) it guards against. They
use only the API (and the ``served`` runtime's odds cache to create markets), so they run unchanged
against earlier commits: that is how each was seen failing before its fix (see docs/ledger.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from tests.support.api import (
    as_user,
    assert_money_conserved,
    balance,
    caught_up,
    deposit,
    error_details,
    ledger_entries,
    leg,
    make_market,
    slip,
)

pytestmark = pytest.mark.integration

Served = tuple[Any, grpc.aio.Channel]


async def test_key_reused_for_another_slip_is_refused(served: Served, unique_id: Callable[[str], str]) -> None:
    """M1: the same key with a different slip must not replay the first bet as a success."""
    runtime, channel = served
    market = await make_market(runtime, unique_id)
    account = unique_id("acc")
    await deposit(channel, account, 10_000)
    stub = bets_pb2_grpc.BetServiceStub(channel)
    first = await stub.PlaceBet(
        bets_pb2.PlaceBetRequest(slip=slip(market, "2.00", "k", stake=100)), metadata=as_user(account)
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PlaceBet(
            bets_pb2.PlaceBetRequest(slip=slip(market, "2.00", "k", stake=5_000)), metadata=as_user(account)
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(err.value)["ErrorInfo"].reason == "IDEMPOTENCY_KEY_REUSED"
    again = await stub.PlaceBet(
        bets_pb2.PlaceBetRequest(slip=slip(market, "2.00", "k", stake=100)), metadata=as_user(account)
    )
    assert again.replayed and again.bet.bet_id == first.bet.bet_id
    assert await balance(channel, account) == 9_900
    await assert_money_conserved(runtime, channel, [account])


async def test_one_overflowing_accumulator_fails_only_itself(served: Served, unique_id: Callable[[str], str]) -> None:
    """H9: a slip whose potential return overflows must be PAYOUT_TOO_HIGH alone; the other slips of the
    call (and of other callers) are placed."""
    runtime, channel = served
    markets = [await make_market(runtime, unique_id, (("home", "9.00"), ("away", "1.10"))) for _ in range(20)]
    account = unique_id("acc")
    await deposit(channel, account, 10_000_000)
    huge = slip(markets[0], "9.00", "acca", stake=1_000_000, legs=[leg(m, "home", "9.00") for m in markets])
    singles = [slip(markets[i], "9.00", f"single-{i}", stake=100) for i in range(3)]
    stub = bets_pb2_grpc.BetServiceStub(channel)
    reply = await stub.PlaceBets(
        bets_pb2.PlaceBetsRequest(slips=[singles[0], huge, *singles[1:]]), metadata=as_user(account)
    )
    outcomes = [r.WhichOneof("result") for r in reply.results]
    assert outcomes == ["bet", "rejection", "bet", "bet"], reply
    assert reply.results[1].rejection.reason == bets_pb2.REJECTION_REASON_PAYOUT_TOO_HIGH
    assert reply.results[1].rejection.field == "slips[1].stake.amount_minor"
    assert await balance(channel, account) == 10_000_000 - 300
    await assert_money_conserved(runtime, channel, [account])


async def test_deadline_on_a_large_placebets_leaves_nothing_half_done(
    served: Served, unique_id: Callable[[str], str]
) -> None:
    """H2: a client deadline cancels the RPC, never the commit: afterwards every slip is either placed (and
    replayable with its key) or not debited, no key stays IN_PROGRESS, and the wallet equals the ledger.
    Several deadlines, so that one of them lands inside the commit whatever this machine's speed."""
    runtime, channel = served
    market = await make_market(runtime, unique_id)
    account = unique_id("acc")
    await deposit(channel, account, 10_000_000)
    stub = bets_pb2_grpc.BetServiceStub(channel)
    rounds = []
    for n, deadline in enumerate((0.01, 0.03, 0.06, 0.1, 0.2, 0.4)):
        slips = [slip(market, "2.00", f"big-{n}-{i}", stake=100) for i in range(500)]
        rounds.append(slips)
        try:
            await stub.PlaceBets(bets_pb2.PlaceBetsRequest(slips=slips), metadata=as_user(account), timeout=deadline)
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.sleep(2.0)  # whatever the server was still doing finishes
    placed = 0
    for slips in rounds:
        retry = await stub.PlaceBets(bets_pb2.PlaceBetsRequest(slips=slips), metadata=as_user(account), timeout=60)
        stuck = [r.rejection for r in retry.results if r.WhichOneof("result") != "bet"]
        assert not stuck, stuck[:3]
        assert len({r.bet.bet_id for r in retry.results}) == 500
        placed += 500
    assert await balance(channel, account) == 10_000_000 - placed * 100
    await assert_money_conserved(runtime, channel, [account])


async def test_ids_with_separators_never_collide(served: Served, unique_id: Callable[[str], str]) -> None:
    """Issue 13: account ``a:b`` with key ``c`` and account ``a`` with key ``b:c`` are different records
    (bets and deposits), for every separator a key is built with."""
    runtime, channel = served
    market = await make_market(runtime, unique_id)
    stub = bets_pb2_grpc.BetServiceStub(channel)
    base = unique_id("sep")
    for sep in (":", "|", "/", "{", "}", "%3A", "%"):
        first, second = f"{base}{sep}x", base
        key_first, key_second = "c", f"x{sep}c"
        await deposit(channel, first, 1_000, key="d")
        await deposit(channel, second, 700, key=f"x{sep}d")
        assert await balance(channel, first) == 1_000 and await balance(channel, second) == 700
        a = await stub.PlaceBet(
            bets_pb2.PlaceBetRequest(slip=slip(market, "2.00", key_first, 100)), metadata=as_user(first)
        )
        b = await stub.PlaceBet(
            bets_pb2.PlaceBetRequest(slip=slip(market, "2.00", key_second, 100)), metadata=as_user(second)
        )
        assert not b.replayed and b.bet.bet_id != a.bet.bet_id and b.bet.account_id == second, sep
        assert await balance(channel, first) == 900 and await balance(channel, second) == 600, sep
        await assert_money_conserved(runtime, channel, [first, second])
        base = unique_id("sep")


async def test_deposit_retry_never_rewrites_the_ledger_row(served: Served, unique_id: Callable[[str], str]) -> None:
    """M3: a Deposit retried with another reason is a replay; the stored row is unchanged (no UPDATE)."""
    runtime, channel = served
    account = unique_id("acc")
    await deposit(channel, account, 500, key="dep-1", reason="first")
    again = await deposit(channel, account, 500, key="dep-1", reason="second")
    assert again.replayed
    [entry] = await ledger_entries(channel, account)
    assert entry.reference == "dep-1" or entry.reference == "first"
    assert entry.reference != "second"
    await caught_up(runtime)
    await assert_money_conserved(runtime, channel, [account])
