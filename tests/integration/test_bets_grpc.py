"""BetService and WalletService over real gRPC, on the real stores: status codes and error details."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from google.rpc import error_details_pb2

from inplay.app import Runtime
from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from inplay.type.v1 import types_pb2
from inplay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from tests.support.api import OPERATOR, as_user, leg, make_market, slip
from tests.support.api import deposit as fund
from tests.support.api import error_details as details

pytestmark = pytest.mark.integration


async def test_identity_is_required(served: tuple[Runtime, grpc.aio.Channel], unique_id: Callable[[str], str]) -> None:
    runtime, channel = served
    market = await make_market(runtime, unique_id)
    stub = bets_pb2_grpc.BetServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PlaceBet(bets_pb2.PlaceBetRequest(slip=slip(market, "2.00", "k1")))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_error_details_and_batch(
    served: tuple[Runtime, grpc.aio.Channel], unique_id: Callable[[str], str]
) -> None:
    runtime, channel = served
    market = await make_market(runtime, unique_id)
    account = unique_id("acc")
    await fund(channel, account, 1_000)
    stub = bets_pb2_grpc.BetServiceStub(channel)
    user = as_user(account)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PlaceBet(bets_pb2.PlaceBetRequest(slip=slip(market, "2.00", "k0", stake=0)), metadata=user)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = details(err.value)
    assert isinstance(found["BadRequest"], error_details_pb2.BadRequest)
    assert found["BadRequest"].field_violations[0].field == "slip.stake.amount_minor"

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PlaceBet(bets_pb2.PlaceBetRequest(slip=slip(market, "2.50", "k1")), metadata=user)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    found = details(err.value)
    info = found["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "ODDS_CHANGED"
    changed = found["OddsChanged"]
    assert isinstance(changed, bets_pb2.OddsChanged)
    assert (changed.current.numerator, changed.current.denominator) == (2, 1)
    assert changed.current.decimal == "2.00" and changed.seen.decimal == "2.50"

    ok = await stub.PlaceBet(bets_pb2.PlaceBetRequest(slip=slip(market, "2.00", "k2", stake=300)), metadata=user)
    assert ok.bet.potential_return.amount_minor == 600 and not ok.replayed
    again = await stub.PlaceBet(bets_pb2.PlaceBetRequest(slip=slip(market, "2.00", "k2", stake=300)), metadata=user)
    assert again.replayed and again.bet.bet_id == ok.bet.bet_id

    batch = await stub.PlaceBets(
        bets_pb2.PlaceBetsRequest(
            slips=[
                slip(market, "2.00", "b1", stake=100),
                slip(market, "3.00", "b2", stake=100),
                slip(market, "2.00", "b3", stake=10_000),
                slip(market, "2.00", "", stake=100),
            ]
        ),
        metadata=user,
    )
    kinds = [r.WhichOneof("result") for r in batch.results]
    assert kinds == ["bet", "rejection", "rejection", "rejection"]
    reasons = [bets_pb2.RejectionReason.Name(r.rejection.reason) for r in batch.results[1:]]
    assert reasons == [
        "REJECTION_REASON_ODDS_CHANGED",
        "REJECTION_REASON_INSUFFICIENT_FUNDS",
        "REJECTION_REASON_INVALID_ARGUMENT",
    ]

    wallet = wallet_pb2_grpc.WalletServiceStub(channel)
    balance = await wallet.GetBalance(wallet_pb2.GetBalanceRequest(), metadata=user)
    assert balance.balance.amount_minor == 1_000 - 300 - 100


async def test_batch_rejections_name_their_item_and_leg(
    served: tuple[Runtime, grpc.aio.Channel], unique_id: Callable[[str], str]
) -> None:
    """A PlaceBets rejection carries the slip's position and the leg it is about as fields (not only inside
    the message), and the unary PlaceBet's ErrorInfo names the leg too."""
    runtime, channel = served
    first, second = await make_market(runtime, unique_id), await make_market(runtime, unique_id)
    account = unique_id("acc")
    await fund(channel, account, 1_000)
    stub = bets_pb2_grpc.BetServiceStub(channel)
    moved_second_leg = [leg(first, "home", "2.00"), leg(second, "home", "3.00")]
    batch = await stub.PlaceBets(
        bets_pb2.PlaceBetsRequest(
            slips=[
                slip(first, "2.00", "i0", stake=100),
                slip(first, "2.00", "i1", stake=100, legs=moved_second_leg),
                slip(first, "2.00", "i2", stake=0),
            ]
        ),
        metadata=as_user(account),
    )
    assert batch.results[0].WhichOneof("result") == "bet"
    moved, invalid = batch.results[1].rejection, batch.results[2].rejection
    assert bets_pb2.RejectionReason.Name(moved.reason) == "REJECTION_REASON_ODDS_CHANGED"
    assert (moved.item, moved.HasField("leg"), moved.leg, moved.field) == (1, True, 1, "slips[1].legs[1].odds")
    assert (invalid.item, invalid.HasField("leg"), invalid.field) == (2, False, "slips[2].stake.amount_minor")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PlaceBet(
            bets_pb2.PlaceBetRequest(slip=slip(first, "2.00", "u1", legs=moved_second_leg)), metadata=as_user(account)
        )
    info = details(err.value)["ErrorInfo"]
    assert info.reason == "ODDS_CHANGED" and info.metadata["leg"] == "1"


async def test_accounts_are_isolated(served: tuple[Runtime, grpc.aio.Channel], unique_id: Callable[[str], str]) -> None:
    runtime, channel = served
    market = await make_market(runtime, unique_id)
    alice, bob = unique_id("alice"), unique_id("bob")
    await fund(channel, alice, 1_000)
    stub = bets_pb2_grpc.BetServiceStub(channel)
    placed = await stub.PlaceBet(bets_pb2.PlaceBetRequest(slip=slip(market, "2.00", "a1")), metadata=as_user(alice))
    # Bob cannot read Alice's bet, list it, or read her balance or ledger.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetBet(bets_pb2.GetBetRequest(bet_id=placed.bet.bet_id), metadata=as_user(bob))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await stub.ListBets(bets_pb2.ListBetsRequest(), metadata=as_user(bob))
    assert list(listed.bets) == []
    mine = await stub.GetBet(bets_pb2.GetBetRequest(bet_id=placed.bet.bet_id), metadata=as_user(alice))
    assert mine.bet.account_id == alice and [h.kind for h in mine.history] == ["PLACED"]
    wallet = wallet_pb2_grpc.WalletServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await wallet.GetBalance(wallet_pb2.GetBalanceRequest(account_id=alice), metadata=as_user(bob))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await wallet.ListLedgerEntries(wallet_pb2.ListLedgerEntriesRequest(account_id=alice), metadata=as_user(bob))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A bettor cannot deposit.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await wallet.Deposit(
            wallet_pb2.DepositRequest(
                account_id=bob, amount=types_pb2.Money(amount_minor=10, currency="EUR"), idempotency_key="x"
            ),
            metadata=as_user(bob),
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_deposit_is_idempotent(served: tuple[Runtime, grpc.aio.Channel], unique_id: Callable[[str], str]) -> None:
    _, channel = served
    account = unique_id("dep")
    wallet = wallet_pb2_grpc.WalletServiceStub(channel)
    request = wallet_pb2.DepositRequest(
        account_id=account, amount=types_pb2.Money(amount_minor=500, currency="EUR"), idempotency_key="d-1"
    )
    first = await wallet.Deposit(request, metadata=OPERATOR)
    second = await wallet.Deposit(request, metadata=OPERATOR)
    assert not first.replayed and second.replayed
    assert second.balance.amount_minor == 500
    entries = await wallet.ListLedgerEntries(wallet_pb2.ListLedgerEntriesRequest(account_id=account), metadata=OPERATOR)
    assert [(e.kind, e.amount.amount_minor) for e in entries.entries] == [(wallet_pb2.ENTRY_KIND_DEPOSIT, 500)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await wallet.Deposit(
            wallet_pb2.DepositRequest(
                account_id=account, amount=types_pb2.Money(amount_minor=-5, currency="EUR"), idempotency_key="d-2"
            ),
            metadata=OPERATOR,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
