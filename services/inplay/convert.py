"""Proto <-> model conversions shared by the servicers: odds, money, markets, market changes.

Odds travel as exact reduced fractions (``numerator/denominator``); the display fields (decimal, American,
fractional) are filled on output and ignored on input. Money is ``int`` minor units.
"""

from __future__ import annotations

import functools

from google.protobuf import timestamp_pb2

from inplay.admin.v1 import admin_pb2
from inplay.core import Odds
from inplay.model import MarketChange, MarketState, MarketStatus
from inplay.odds.v1 import odds_pb2
from inplay.type.v1 import types_pb2


def odds_to_proto(odds: Odds) -> types_pb2.Odds:
    """The proto of ``odds`` with its display fields (cached: a batch of bets repeats a few prices, and
    each display field is a core call; callers copy the message into theirs)."""
    return _odds_proto(odds.num, odds.den)


@functools.lru_cache(maxsize=8192)
def _odds_proto(num: int, den: int) -> types_pb2.Odds:
    odds = Odds(num, den)
    frac = odds.fractional()
    fractional = frac if isinstance(frac, str) else f"{frac[0]}/{frac[1]}"
    return types_pb2.Odds(
        numerator=odds.num,
        denominator=odds.den,
        decimal=odds.decimal_str(),
        american=int(odds.american()),
        fractional=fractional,
    )


def odds_from_proto(odds: types_pb2.Odds) -> Odds:
    """Exact odds from numerator/denominator (display fields ignored). Raises ValueError when invalid."""
    if odds.denominator <= 0 or odds.numerator <= 0:
        raise ValueError("odds need a positive numerator and denominator")
    if odds.numerator <= odds.denominator:
        raise ValueError("odds must be greater than 1")
    return Odds(odds.numerator, odds.denominator)


def money_to_proto(amount_minor: int, currency: str) -> types_pb2.Money:
    return types_pb2.Money(amount_minor=amount_minor, currency=currency)


def money_from_proto(money: types_pb2.Money) -> tuple[int, str]:
    return int(money.amount_minor), money.currency


def timestamp_from_ms(ms: int) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def timestamp_to_ms(ts: timestamp_pb2.Timestamp) -> int:
    return int(ts.ToMilliseconds())


def market_to_proto(market: MarketState, now_ms: int | None = None) -> odds_pb2.Market:
    """A cached market as the API shows it; ``age_ms`` is computed against ``now_ms`` when given."""
    age = max(0, now_ms - market.updated_at_ms) if now_ms is not None and market.updated_at_ms else 0
    return odds_pb2.Market(
        market_id=market.market_id,
        event_id=market.event_id,
        market_type=market.market_type,
        name=market.name,
        sport=market.sport,
        in_play=market.in_play,
        status=types_pb2.MarketStatus.Name(int(market.status)),
        status_reason=market.status_reason,
        selections=[
            odds_pb2.Selection(selection_id=s.selection_id, name=s.name, odds=odds_to_proto(s.odds))
            for s in market.selections
        ],
        version=market.version,
        updated_at=timestamp_from_ms(market.updated_at_ms),
        age_ms=age,
    )


def market_status_from_proto(status: int) -> MarketStatus:
    return MarketStatus(status) if status in MarketStatus._value2member_map_ else MarketStatus.UNSPECIFIED


def market_change_to_proto(change: MarketChange) -> admin_pb2.MarketChange:
    return admin_pb2.MarketChange(
        market_id=change.market_id,
        selection_id=change.selection_id,
        kind=change.kind,
        old_value=change.old_value,
        new_value=change.new_value,
        source=change.source,
        reason=change.reason,
        version=change.version,
        at=timestamp_from_ms(change.at_ms),
    )


__all__ = [
    "market_change_to_proto",
    "market_status_from_proto",
    "market_to_proto",
    "money_from_proto",
    "money_to_proto",
    "odds_from_proto",
    "odds_to_proto",
    "timestamp_from_ms",
    "timestamp_to_ms",
]
