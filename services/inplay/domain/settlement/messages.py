"""Result messages of ``inplay.results.v1`` (JSON, key ``event_id``): parsing and building (pure)::

  {"event_id": "...", "request_id": "...", "correction": false, "reason": "...",
   "outcomes": [{"market_id": "...", "selection_id": "...", "result": "WIN", "dead_heat": [1, 2],
                 "void_factor": "0.5"}],     # optional, Sportradar's: 1 = full refund, 0.5 = half
   "void_market_ids": ["..."]}

``correction: true`` resettles (docs/settlement.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from inplay.core import LegOutcome
from inplay.domain.settlement.model import Results, apply_void_factor, make_results, outcome_from_name
from inplay.errors import InvalidArgument


@dataclass(frozen=True)
class ResultMessage:
    event_id: str
    request_id: str
    results: Results
    correction: bool = False
    reason: str = ""


def _outcome(o: dict[str, Any]) -> tuple[str, str, LegOutcome, tuple[int, int]]:
    dead_heat = o.get("dead_heat") or [1, 1]
    outcome = outcome_from_name(str(o["result"]).upper())
    if o.get("void_factor") not in (None, "", 0):
        outcome = apply_void_factor(outcome, Fraction(str(o["void_factor"])))
    return str(o["market_id"]), str(o["selection_id"]), outcome, (int(dead_heat[0]), int(dead_heat[1]))


def parse_result_message(raw: bytes, fallback_request_id: str) -> ResultMessage:
    """The message, or InvalidArgument (the consumer parks it) for anything malformed."""
    try:
        data = json.loads(raw)
        outcomes = [_outcome(o) for o in data.get("outcomes", [])]
        results = make_results(outcomes, [str(m) for m in data.get("void_market_ids", [])])
        return ResultMessage(
            event_id=str(data["event_id"]),
            request_id=str(data.get("request_id") or fallback_request_id),
            results=results,
            correction=bool(data.get("correction", False)),
            reason=str(data.get("reason", "")),
        )
    # AttributeError: valid JSON that is not a result object (an array, a string, outcomes not objects):
    # it must be parked like any malformed message, not escape and restart the consumer forever.
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise InvalidArgument(f"bad result message: {exc}") from None


def result_message(
    event_id: str,
    request_id: str,
    outcomes: Sequence[tuple[str, str, str] | tuple[str, str, str, tuple[int, int]]],
    void_market_ids: Sequence[str] = (),
    *,
    correction: bool = False,
    reason: str = "",
) -> bytes:
    """Builds a result message (for producers and tests)."""
    items = []
    for o in outcomes:
        item: dict[str, object] = {"market_id": o[0], "selection_id": o[1], "result": o[2]}
        if len(o) > 3:
            item["dead_heat"] = list(o[3])
        items.append(item)
    body = {
        "event_id": event_id,
        "request_id": request_id,
        "outcomes": items,
        "void_market_ids": list(void_market_ids),
        "correction": correction,
        "reason": reason,
    }
    return json.dumps(body, separators=(",", ":")).encode()
