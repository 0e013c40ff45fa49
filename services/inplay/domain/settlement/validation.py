"""Results checked against the markets they result (before anything is written): every market known and
of the event settled, every resulted selection one of the market's, dead-heat factors in (0, 1].

Field paths name the request's fields (``outcomes[2].selection_id``) when the caller passes them (the
gRPC servicer does), else the market and selection (``outcomes[m1/home].selection_id``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from inplay.core import LegOutcome
from inplay.domain.settlement.model import Results
from inplay.errors import FieldViolation
from inplay.model import MarketState

# (market_id, selection_id) -> the request field of that outcome; (market_id, "") -> of a voided market.
FieldPaths = Mapping[tuple[str, str], str]


def outcome_path(paths: FieldPaths | None, market_id: str, selection_id: str) -> str:
    if paths is not None and (market_id, selection_id) in paths:
        return paths[(market_id, selection_id)]
    if not selection_id:
        return f"void_market_ids[{market_id}]"
    return f"outcomes[{market_id}/{selection_id}]"


def result_violations(
    event_id: str, results: Results, markets: Mapping[str, MarketState | None], paths: FieldPaths | None = None
) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    for market_id, result in results.markets.items():
        market = markets.get(market_id)
        keys: Sequence[str] = [""] if result.void else list(result.selections)
        first = outcome_path(paths, market_id, keys[0] if keys else "")
        field_name = first if result.void else f"{first}.market_id"
        if market is None:
            out.append(FieldViolation(field_name, f"unknown market {market_id}"))
            continue
        if market.event_id != event_id:
            out.append(FieldViolation(field_name, f"market {market_id} belongs to event {market.event_id}"))
            continue
        known = {s.selection_id for s in market.selections}
        for selection_id, sel in result.selections.items():
            path = outcome_path(paths, market_id, selection_id)
            if selection_id not in known:
                out.append(FieldViolation(f"{path}.selection_id", f"not a selection of market {market_id}"))
            num, den = sel.dead_heat
            if sel.outcome == LegOutcome.DEAD_HEAT and not 0 < num <= den:
                out.append(FieldViolation(f"{path}.dead_heat_numerator", "dead heat factor must be in (0, 1]"))
    return out
