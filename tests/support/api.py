"""Helpers for tests that talk to the services over real gRPC (the ``served`` fixture of tests/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from inplay.bets.v1 import bets_pb2
from inplay.core import Odds
from inplay.model import MarketState, MarketStatus, SelectionPrice
from inplay.type.v1 import types_pb2
from inplay.wallet.v1 import wallet_pb2, wallet_pb2_grpc

OPERATOR = (("x-inplay-subject", "ops-1"), ("x-inplay-roles", "operator"))


def as_user(account: str) -> tuple[tuple[str, str], ...]:
    return (("x-inplay-subject", account),)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def market_state(
    unique_id: Callable[[str], str], prices: Sequence[tuple[str, str]] = (("home", "2.00"), ("away", "2.00"))
) -> MarketState:
    """An active pre-match market of a new event, priced now."""
    return MarketState(
        market_id=unique_id("mkt"),
        event_id=unique_id("ev"),
        sport="football",
        market_type="MATCH_RESULT",
        name="Match result",
        in_play=False,
        status=MarketStatus.ACTIVE,
        status_reason="",
        selections=tuple(SelectionPrice(sid, sid, Odds.from_decimal(p)) for sid, p in prices),
        version=1,
        updated_at_ms=now_ms(),
    )


async def make_market(
    runtime: Any,
    unique_id: Callable[[str], str],
    prices: Sequence[tuple[str, str]] = (("home", "2.00"), ("away", "2.00")),
) -> MarketState:
    """``market_state`` put into the runtime's odds cache."""
    state = market_state(unique_id, prices)
    await runtime.odds.put_markets([state])
    return state


def leg(market: MarketState, selection: str, odds: str) -> bets_pb2.BetLeg:
    o = Odds.from_decimal(odds)
    return bets_pb2.BetLeg(
        market_id=market.market_id,
        selection_id=selection,
        odds=types_pb2.Odds(numerator=o.num, denominator=o.den),
    )


def slip(
    market: MarketState, odds: str, key: str, stake: int = 100, selection: str = "home", legs: Sequence[Any] = ()
) -> bets_pb2.BetSlip:
    return bets_pb2.BetSlip(
        legs=list(legs) or [leg(market, selection, odds)],
        stake=types_pb2.Money(amount_minor=stake, currency="EUR"),
        acceptance_policy=bets_pb2.ACCEPTANCE_POLICY_NONE,
        idempotency_key=key,
    )


def error_details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in the trailers"
    found: dict[str, Any] = {}
    for any_detail in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, bets_pb2.OddsChanged):
            if any_detail.Is(cls.DESCRIPTOR):
                msg = cls()
                any_detail.Unpack(msg)
                found[cls.DESCRIPTOR.name] = msg
    return found


async def deposit(channel: grpc.aio.Channel, account: str, amount: int, key: str = "", reason: str = "") -> Any:
    wallet = wallet_pb2_grpc.WalletServiceStub(channel)
    return await wallet.Deposit(
        wallet_pb2.DepositRequest(
            account_id=account,
            amount=types_pb2.Money(amount_minor=amount, currency="EUR"),
            idempotency_key=key or f"fund-{account}",
            reason=reason,
        ),
        metadata=OPERATOR,
    )


async def balance(channel: grpc.aio.Channel, account: str) -> int:
    wallet = wallet_pb2_grpc.WalletServiceStub(channel)
    reply = await wallet.GetBalance(wallet_pb2.GetBalanceRequest(), metadata=as_user(account))
    return int(reply.balance.amount_minor)


async def ledger_entries(channel: grpc.aio.Channel, account: str) -> list[Any]:
    wallet = wallet_pb2_grpc.WalletServiceStub(channel)
    entries: list[Any] = []
    token = ""
    while True:
        reply = await wallet.ListLedgerEntries(
            wallet_pb2.ListLedgerEntriesRequest(page_size=500, page_token=token), metadata=as_user(account)
        )
        entries.extend(reply.entries)
        token = reply.next_page_token
        if not token:
            return entries


async def caught_up(runtime: Any, timeout_s: float = 10.0) -> None:
    """Waits until the bet views (and the BetPlaced outbox) cover every committed batch of the runtime's
    journal writer. (A runtime without a journal projector writes its views synchronously.)"""
    import asyncio

    writer = getattr(runtime, "writer", None)
    projector = getattr(runtime, "projector", None)
    if writer is None or projector is None:
        return
    deadline = asyncio.get_running_loop().time() + timeout_s
    while projector.checkpoint < writer.head_slot or projector.backlog:
        assert asyncio.get_running_loop().time() < deadline, "the journal projection did not catch up"
        await asyncio.sleep(0.01)


async def assert_money_conserved(runtime: Any, channel: grpc.aio.Channel, accounts: Sequence[str]) -> None:
    """From the ledger alone: every entry id at most once, and each account's balance in the wallet
    projection equals the sum of its ledger entries (deposits - stakes + payouts + refunds)."""
    await caught_up(runtime)
    for account in accounts:
        entries = await ledger_entries(channel, account)
        ids = [e.entry_id for e in entries]
        assert len(ids) == len(set(ids)), f"{account}: an entry appears twice: {sorted(ids)}"
        total = sum(int(e.amount.amount_minor) for e in entries)
        assert await balance(channel, account) == total, f"{account}: wallet != ledger ({total})"
