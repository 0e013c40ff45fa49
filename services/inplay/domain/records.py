"""Codec of the records stored under idempotency keys (the wallet's ``idem:`` keys), next to the journal's
row codec (:mod:`inplay.domain.journal`).

Formats: ``PENDING:<bet id>:<slip hash>`` while a batch is in flight, ``BET:<bet id>:<slip hash>`` for an
accepted bet (a replay reads the bet from the journal), and compact JSON ``{"rejection": ..., "h": hash}``
for a stored rejection (odds as [num, den]); ``{"bet": ...}`` records of older versions still decode.
"""

from __future__ import annotations

import json

from inplay.core import AcceptancePolicy, Odds
from inplay.domain.bets.rejections import OddsChangedInfo, PlacementResult, Rejection
from inplay.domain.commit import accepted_record
from inplay.domain.journal import bet_from_json


def result_to_json(result: PlacementResult, slip: str = "") -> str:
    """The record stored under an idempotency key; ``slip`` is the slip's hash (``journal.slip_hash``)."""
    if result.bet is not None:
        return accepted_record(result.bet, slip)
    assert result.rejection is not None
    rej = result.rejection
    payload: dict[str, object] = {"reason": rej.reason, "message": rej.message, "field": rej.field}
    if rej.odds_changed is not None:
        oc = rej.odds_changed
        payload["oc"] = [
            oc.market_id,
            oc.selection_id,
            oc.seen.num,
            oc.seen.den,
            oc.current.num,
            oc.current.den,
            int(oc.policy),
            oc.tolerance_bp,
        ]
    return json.dumps({"rejection": payload, "h": slip}, separators=(",", ":"))


def record_slip_hash(record: str) -> str:
    """The slip hash a stored record was made for ("" for records written before hashes existed)."""
    if record.startswith(("PENDING:", "BET:")):
        parts = record.split(":")
        return parts[2] if len(parts) > 2 else ""
    return str(json.loads(record).get("h", ""))


def result_from_json(text: str) -> PlacementResult:
    data = json.loads(text)
    if "bet" in data:
        return PlacementResult(bet=bet_from_json(data["bet"]), replayed=True)
    rej = data["rejection"]
    oc = rej.get("oc")
    info = None
    if oc:
        info = OddsChangedInfo(
            market_id=oc[0],
            selection_id=oc[1],
            seen=Odds(oc[2], oc[3]),
            current=Odds(oc[4], oc[5]),
            policy=AcceptancePolicy(oc[6]),
            tolerance_bp=oc[7],
        )
    return PlacementResult(
        rejection=Rejection(rej["reason"], rej["message"], rej.get("field", ""), info), replayed=True
    )
