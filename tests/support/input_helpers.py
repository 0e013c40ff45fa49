"""Helpers of the hostile-input tests (test_input_*.py, test_fuzz_api.py): raw calls, error details, every
RPC of the API and a world (a funded bettor with an open bet on an active market) whose state must not move."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from inplay.admin.v1 import admin_pb2
from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from inplay.core import Odds
from inplay.feed.v1 import feed_pb2
from inplay.model import MarketState, MarketStatus, SelectionPrice
from inplay.odds.v1 import odds_pb2
from inplay.settlement.v1 import settlement_pb2
from inplay.type.v1 import types_pb2
from inplay.wallet.v1 import wallet_pb2, wallet_pb2_grpc

OPERATOR = (("x-inplay-subject", "ops-fuzz"), ("x-inplay-roles", "operator feed"))
SERVICES = [
    bets_pb2.DESCRIPTOR.services_by_name["BetService"],
    wallet_pb2.DESCRIPTOR.services_by_name["WalletService"],
    odds_pb2.DESCRIPTOR.services_by_name["OddsService"],
    feed_pb2.DESCRIPTOR.services_by_name["FeedService"],
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
    settlement_pb2.DESCRIPTOR.services_by_name["SettlementService"],
]


def as_user(account: str) -> tuple[tuple[str, str], ...]:
    return (("x-inplay-subject", account),)


def all_methods() -> list[MethodDescriptor]:
    return [m for s in SERVICES for m in s.methods]


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


async def call_raw(
    channel: grpc.aio.Channel,
    method: MethodDescriptor,
    payloads: list[bytes],
    metadata: tuple[tuple[str, str], ...] = OPERATOR,
    deadline_s: float = 10.0,
) -> None:
    """Sends raw request bytes (identity serializers) to any RPC shape; raises AioRpcError on a non-OK status."""
    path = path_of(method)
    if method.client_streaming:
        stream_call = channel.stream_unary(path)

        async def requests() -> Any:
            for p in payloads:
                yield p

        await stream_call(requests(), metadata=metadata, timeout=deadline_s)
    elif method.server_streaming:
        call = channel.unary_stream(path)(payloads[0], metadata=metadata, timeout=deadline_s)
        # A subscription that is accepted stays open: one message (or the first status) is enough.
        async for _ in call:
            call.cancel()
            break
    else:
        await channel.unary_unary(path)(payloads[0], metadata=metadata, timeout=deadline_s)


def details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    status = rpc_status.from_call(error)
    assert status is not None, f"no google.rpc.Status in the trailers of {error.code()} {error.details()}"
    found: dict[str, Any] = {}
    for any_detail in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            if any_detail.Is(cls.DESCRIPTOR):
                msg = cls()
                any_detail.Unpack(msg)
                found[cls.DESCRIPTOR.name] = msg
    return found


def field_paths(error: grpc.aio.AioRpcError) -> list[str]:
    bad = details(error).get("BadRequest")
    return [v.field for v in bad.field_violations] if bad is not None else []


def reason(error: grpc.aio.AioRpcError) -> str:
    info = details(error).get("ErrorInfo")
    return str(info.reason) if info is not None else ""


async def make_market(runtime: Any, unique_id: Callable[[str], str]) -> MarketState:
    state = MarketState(
        market_id=unique_id("mkt"),
        event_id=unique_id("ev"),
        sport="football",
        market_type="MATCH_RESULT",
        name="Match result",
        in_play=False,
        status=MarketStatus.ACTIVE,
        status_reason="",
        selections=(
            SelectionPrice("home", "Home", Odds.from_decimal("2.00")),
            SelectionPrice("away", "Away", Odds.from_decimal("2.00")),
        ),
        version=1,
        updated_at_ms=time.time_ns() // 1_000_000,
    )
    await runtime.odds.put_markets([state])
    return state


def slip(market_id: str, key: str, stake: int = 100) -> bets_pb2.BetSlip:
    return bets_pb2.BetSlip(
        legs=[
            bets_pb2.BetLeg(market_id=market_id, selection_id="home", odds=types_pb2.Odds(numerator=2, denominator=1))
        ],
        stake=types_pb2.Money(amount_minor=stake, currency="EUR"),
        acceptance_policy=bets_pb2.ACCEPTANCE_POLICY_ANY,
        idempotency_key=key,
    )


async def deposit(channel: grpc.aio.Channel, account: str, amount: int, key: str) -> None:
    await wallet_pb2_grpc.WalletServiceStub(channel).Deposit(
        wallet_pb2.DepositRequest(
            account_id=account, amount=types_pb2.Money(amount_minor=amount, currency="EUR"), idempotency_key=key
        ),
        metadata=OPERATOR,
    )


@dataclass
class Snapshot:
    balance: int
    ledger: list[tuple[str, int]]
    bets: list[str]


async def snapshot(channel: grpc.aio.Channel, account: str) -> Snapshot:
    """What a bettor can see of their money and bets (must not move under anyone else's hostile input)."""
    wallet = wallet_pb2_grpc.WalletServiceStub(channel)
    bets = bets_pb2_grpc.BetServiceStub(channel)
    who = as_user(account)
    balance = (await wallet.GetBalance(wallet_pb2.GetBalanceRequest(), metadata=who)).balance.amount_minor
    entries = await wallet.ListLedgerEntries(wallet_pb2.ListLedgerEntriesRequest(page_size=1000), metadata=who)
    listed = await bets.ListBets(bets_pb2.ListBetsRequest(page_size=100), metadata=who)
    return Snapshot(
        balance,
        [(e.entry_id, e.amount.amount_minor) for e in entries.entries],
        sorted(b.bet_id for b in listed.bets),
    )
