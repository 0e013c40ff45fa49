"""BetService: a thin gRPC adapter over :class:`inplay.domain.bets.BetPlacement`.

The account is the verified caller (``inplay.auth.principal``), never a request field.
"""

from __future__ import annotations

import re

import grpc
from google.protobuf import timestamp_pb2

from inplay import auth
from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from inplay.convert import odds_from_proto, odds_to_proto
from inplay.core import AcceptancePolicy, LegOutcome
from inplay.domain.bets import BetPlacement, PlacementResult, Reason, Rejection
from inplay.domain.journal import with_placed
from inplay.domain.settlement.model import settlement_state
from inplay.domain.settlement.reads import settlement_states
from inplay.errors import (
    Aborted,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from inplay.model import BetRequest, BetState, Leg, PlacedBet
from inplay.ports import Ledger
from inplay.servicers.rpc import rpc
from inplay.type.v1 import types_pb2

MAX_BATCH = 1000


def _money(amount: int, currency: str) -> types_pb2.Money:
    return types_pb2.Money(amount_minor=amount, currency=currency)


def _timestamp(ms: int) -> timestamp_pb2.Timestamp:
    # Direct fields: FromMilliseconds validates the range on every call (our times are always in range).
    return timestamp_pb2.Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def slip_to_request(account_id: str, slip: bets_pb2.BetSlip, index: int | None = None) -> BetRequest:
    """Parses a slip; malformed odds become an InvalidArgument naming the field."""
    prefix = "slip" if index is None else f"slips[{index}]"
    legs = []
    for i, leg in enumerate(slip.legs):
        try:
            odds = odds_from_proto(leg.odds)
        except (ValueError, ArithmeticError) as exc:
            raise InvalidArgument(
                f"invalid odds: {exc}",
                violations=[FieldViolation(f"{prefix}.legs[{i}].odds", str(exc))],
            ) from None
        legs.append(Leg(market_id=leg.market_id, selection_id=leg.selection_id, odds=odds))
    return BetRequest(
        account_id=account_id,
        legs=tuple(legs),
        stake_minor=slip.stake.amount_minor,
        currency=slip.stake.currency,
        policy=AcceptancePolicy(slip.acceptance_policy)
        if slip.acceptance_policy in AcceptancePolicy._value2member_map_
        else AcceptancePolicy.UNSPECIFIED,
        idempotency_key=slip.idempotency_key,
    )


def bet_to_proto(bet: PlacedBet, status: BetState = BetState.OPEN, settled_return: int = 0) -> bets_pb2.Bet:
    msg = bets_pb2.Bet()
    fill_bet(msg, bet, status, settled_return)
    return msg


def fill_bet(msg: bets_pb2.Bet, bet: PlacedBet, status: BetState = BetState.OPEN, settled_return: int = 0) -> None:
    """Fills ``msg`` in place (a PlaceBets response holds up to 1,000 bets: building each Bet and copying it
    into the response cost a quarter more than setting the fields where they live)."""
    msg.bet_id = bet.bet_id
    msg.account_id = bet.account_id
    for leg in bet.legs:
        out = msg.legs.add(market_id=leg.market_id, selection_id=leg.selection_id, event_id=leg.event_id)
        out.odds.CopyFrom(odds_to_proto(leg.odds))
    msg.stake.amount_minor = bet.stake_minor
    msg.stake.currency = bet.currency
    msg.potential_return.amount_minor = bet.potential_return_minor
    msg.potential_return.currency = bet.currency
    msg.acceptance_policy = int(bet.policy)  # type: ignore[assignment]
    msg.idempotency_key = bet.idempotency_key
    msg.status = int(status)  # type: ignore[assignment]
    msg.settled_return.amount_minor = settled_return
    msg.settled_return.currency = bet.currency
    msg.placed_at.seconds = bet.placed_at_ms // 1000
    msg.placed_at.nanos = (bet.placed_at_ms % 1000) * 1_000_000


def item_field(field: str, index: int) -> str:
    """One path style for the whole API: a slip's field ``slip.x`` is ``slips[i].x`` inside PlaceBets."""
    if field == "slip" or field.startswith("slip."):
        return f"slips[{index}]" + field[len("slip") :]
    return field


_LEG = re.compile(r"\.legs\[(\d+)\]")


def rejection_leg(field: str) -> int | None:
    """The leg a field path names (``slip.legs[2].odds`` -> 2), None for the slip as a whole."""
    match = _LEG.search(field)
    return int(match.group(1)) if match else None


def rejection_to_proto(rejection: Rejection, index: int | None = None) -> bets_pb2.BetRejection:
    proto = bets_pb2.BetRejection(
        reason=bets_pb2.RejectionReason.Value(f"REJECTION_REASON_{rejection.reason}"),  # type: ignore[arg-type]
        message=rejection.message,
        field=rejection.field if index is None else item_field(rejection.field, index),
        item=index or 0,
    )
    leg = rejection_leg(rejection.field)
    if leg is not None:
        proto.leg = leg
    if rejection.odds_changed is not None:
        proto.odds_changed.CopyFrom(odds_changed_to_proto(rejection))
    return proto


def odds_changed_to_proto(rejection: Rejection) -> bets_pb2.OddsChanged:
    info = rejection.odds_changed
    assert info is not None
    return bets_pb2.OddsChanged(
        market_id=info.market_id,
        selection_id=info.selection_id,
        seen=odds_to_proto(info.seen),
        current=odds_to_proto(info.current),
        acceptance_policy=int(info.policy),  # type: ignore[arg-type]
        tolerance_bp=info.tolerance_bp,
    )


def rejection_to_error(rejection: Rejection) -> DomainError:
    """The one mapping of a bet rejection to a gRPC status (used by the unary PlaceBet)."""
    metadata = {"field": rejection.field} if rejection.field else {}
    if (leg := rejection_leg(rejection.field)) is not None:
        metadata["leg"] = str(leg)
    if rejection.reason in (
        Reason.INVALID_ARGUMENT,
        Reason.STAKE_TOO_LOW,
        Reason.STAKE_TOO_HIGH,
        Reason.CURRENCY_MISMATCH,
    ):
        return InvalidArgument(
            rejection.message,
            reason=rejection.reason,
            metadata=metadata,
            violations=[FieldViolation(rejection.field, rejection.message)] if rejection.field else [],
        )
    if rejection.reason in (Reason.MARKET_NOT_FOUND, Reason.SELECTION_NOT_FOUND):
        return NotFound(rejection.message, reason=rejection.reason, metadata=metadata)
    if rejection.reason == Reason.UNAVAILABLE:
        return Unavailable(rejection.message, reason=rejection.reason)
    if rejection.reason == Reason.OVERLOADED:
        return ResourceExhausted(rejection.message, reason=rejection.reason)
    if rejection.reason == Reason.IN_PROGRESS:
        return Aborted(rejection.message, reason=rejection.reason)
    details = [odds_changed_to_proto(rejection)] if rejection.odds_changed is not None else []
    return FailedPrecondition(rejection.message, reason=rejection.reason, metadata=metadata, details=details)


class BetServicer(bets_pb2_grpc.BetServiceServicer):
    def __init__(self, placement: BetPlacement, ledger: Ledger) -> None:
        self._placement = placement
        self._ledger = ledger

    @rpc
    async def PlaceBet(
        self, request: bets_pb2.PlaceBetRequest, context: grpc.aio.ServicerContext
    ) -> bets_pb2.PlaceBetResponse:
        who = auth.principal(context)
        req = slip_to_request(who.subject, request.slip)
        result = await self._placement.place(req)
        if result.rejection is not None:
            raise rejection_to_error(result.rejection)
        assert result.bet is not None
        return bets_pb2.PlaceBetResponse(bet=bet_to_proto(result.bet), replayed=result.replayed)

    @rpc
    async def PlaceBets(
        self, request: bets_pb2.PlaceBetsRequest, context: grpc.aio.ServicerContext
    ) -> bets_pb2.PlaceBetsResponse:
        who = auth.principal(context)
        if not request.slips:
            raise InvalidArgument("no slips", violations=[FieldViolation("slips", "at least one slip")])
        if len(request.slips) > MAX_BATCH:
            raise InvalidArgument(
                f"at most {MAX_BATCH} slips per call",
                violations=[FieldViolation("slips", f"at most {MAX_BATCH}")],
            )
        reqs: list[BetRequest | None] = []
        early: dict[int, PlacementResult] = {}
        for i, slip in enumerate(request.slips):
            try:
                reqs.append(slip_to_request(who.subject, slip, i))
            except InvalidArgument as exc:
                reqs.append(None)
                field = exc.violations[0].field if exc.violations else f"slips[{i}]"
                early[i] = PlacementResult(rejection=Rejection(Reason.INVALID_ARGUMENT, exc.message, field))
        valid = [r for r in reqs if r is not None]
        results = iter(await self._placement.place_batch(valid) if valid else [])
        response = bets_pb2.PlaceBetsResponse()
        for i, maybe_req in enumerate(reqs):
            result = early[i] if maybe_req is None else next(results)
            item = response.results.add(replayed=result.replayed)
            if result.bet is not None:
                fill_bet(item.bet, result.bet)
            else:
                assert result.rejection is not None
                item.rejection.CopyFrom(rejection_to_proto(result.rejection, i))
        return response

    @rpc
    async def GetBet(
        self, request: bets_pb2.GetBetRequest, context: grpc.aio.ServicerContext
    ) -> bets_pb2.GetBetResponse:
        who = auth.principal(context)
        if not request.bet_id:
            raise InvalidArgument("bet_id is required", violations=[FieldViolation("bet_id", "required")])
        bet = await self._ledger.get_bet(request.bet_id)
        # Another account's bet is reported as not found: its existence is not the caller's business.
        if bet is None or (bet.account_id != who.subject and not who.is_operator):
            raise NotFound(f"bet {request.bet_id} not found")
        history = with_placed(bet, await self._ledger.bet_history(bet.bet_id))
        state, settled = settlement_state(history)  # the total paid, not the last row's delta (L1)
        response = bets_pb2.GetBetResponse(bet=bet_to_proto(bet, state, settled))
        for event in history:
            response.history.add(
                kind=event.kind,
                status=int(event.status),
                amount=_money(event.amount_minor, bet.currency),
                settlement_run_id=event.run_id,
                at=_timestamp(event.at_ms),
            )
        return response

    @rpc
    async def ListBets(
        self, request: bets_pb2.ListBetsRequest, context: grpc.aio.ServicerContext
    ) -> bets_pb2.ListBetsResponse:
        who = auth.principal(context)
        page_size = request.page_size or 50
        if not 0 < page_size <= 500:
            raise InvalidArgument("page_size must be 1..500", violations=[FieldViolation("page_size", "1..500")])
        bets, token = await self._ledger.list_account_bets(who.subject, page_size, request.page_token)
        states = await settlement_states(self._ledger, [b.bet_id for b in bets])  # real status (L1)
        return bets_pb2.ListBetsResponse(
            bets=[bet_to_proto(b, *states.get(b.bet_id, (BetState.OPEN, 0))) for b in bets],
            next_page_token=token,
        )


def add_to_server(server: grpc.aio.Server, placement: BetPlacement, ledger: Ledger) -> None:
    bets_pb2_grpc.add_BetServiceServicer_to_server(BetServicer(placement, ledger), server)


__all__ = ["BetServicer", "LegOutcome", "add_to_server"]
