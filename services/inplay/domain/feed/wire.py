"""Builders of provider wire messages (alpha / bravo), for connectors' tests, the demo and benchmarks.
See :mod:`inplay.domain.feed.providers` for the formats."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _dump(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def alpha_odds(
    seq: int, ts_ms: int, event: str, market: str, prices: Mapping[str, str], correction: bool = False
) -> bytes:
    return _dump(
        {
            "type": "odds",
            "seq": seq,
            "ts": iso_ms(ts_ms),
            "correction": correction,
            "event": {"id": event},
            "market": {"id": market, "prices": [{"id": k, "odds": v} for k, v in prices.items()]},
        }
    )


def alpha_bet_stop(seq: int, ts_ms: int, event: str, markets: Sequence[str] = ()) -> bytes:
    doc: dict[str, Any] = {"type": "bet_stop", "seq": seq, "ts": iso_ms(ts_ms), "event": {"id": event}}
    if markets:
        doc["markets"] = list(markets)
    return _dump(doc)


def alpha_incident(seq: int, ts_ms: int, event: str, incident: str) -> bytes:
    return _dump({"type": "incident", "seq": seq, "ts": iso_ms(ts_ms), "event": {"id": event}, "incident": incident})


def alpha_heartbeat(seq: int, ts_ms: int) -> bytes:
    return _dump({"type": "heartbeat", "seq": seq, "ts": iso_ms(ts_ms)})


def alpha_snapshot_complete(seq: int, ts_ms: int, request_id: str) -> bytes:
    return _dump({"type": "snapshot_complete", "seq": seq, "ts": iso_ms(ts_ms), "request_id": request_id})


def bravo_snapshot_end(seq: int, ts_ms: int, request_id: str) -> bytes:
    return _dump({"hdr": {"seq": seq, "sent": ts_ms, "type": "SNAPSHOT_END", "request": request_id}})


def alpha_end(seq: int, ts_ms: int, event: str) -> bytes:
    return _dump({"type": "end", "seq": seq, "ts": iso_ms(ts_ms), "event": {"id": event}})


def bravo_offer(kind: str, outcomes: Mapping[str, int | str], line: str | None = None) -> dict[str, Any]:
    """``outcomes``: code -> American odds (int) or fractional odds ("N/D")."""
    offer: dict[str, Any] = {
        "type": kind,
        "outcomes": [{"code": c, ("us" if isinstance(o, int) else "frac"): o} for c, o in outcomes.items()],
    }
    if line is not None:
        offer["line"] = line
    return offer


def bravo_price(
    seq: int, ts_ms: int, match: int, offers: Sequence[Mapping[str, Any]], corrected: bool = False
) -> bytes:
    return _dump(
        {
            "hdr": {"seq": seq, "sent": ts_ms, "type": "PRICE", "corrected": corrected},
            "match": {"ref": match},
            "offers": list(offers),
        }
    )


def bravo_stop(seq: int, ts_ms: int, match: int, offers: Sequence[Mapping[str, Any]] = ()) -> bytes:
    return _dump({"hdr": {"seq": seq, "sent": ts_ms, "type": "STOP"}, "match": {"ref": match}, "offers": list(offers)})


def bravo_incident(seq: int, ts_ms: int, match: int, kind: str) -> bytes:
    return _dump(
        {
            "hdr": {"seq": seq, "sent": ts_ms, "type": "INCIDENT"},
            "match": {"ref": match},
            "incident": {"kind": kind},
        }
    )


def bravo_alive(seq: int, ts_ms: int) -> bytes:
    return _dump({"hdr": {"seq": seq, "sent": ts_ms, "type": "ALIVE"}})


def bravo_final(seq: int, ts_ms: int, match: int) -> bytes:
    return _dump({"hdr": {"seq": seq, "sent": ts_ms, "type": "FINAL"}, "match": {"ref": match}})


def two_provider_mapping(
    event_id: str,
    alpha_event: str,
    bravo_match: int,
    sport: str = "football",
    in_play: bool = True,
    names: Sequence[str] = ("Home", "Draw", "Away"),
    primary: str = "alpha",
    secondary: str = "bravo",
) -> dict[str, Any]:
    """A mapping document for one event with a 1X2 and an over/under 2.5 market on both providers.
    Market ids: ``{event_id}:mr`` / ``{event_id}:ou``; alpha ids ``{alpha_event}-MR``/``-OU`` with selections
    ``-H``/``-D``/``-A``/``-O``/``-U``; bravo offers ``1X2`` (codes 1, X, 2) and ``OU`` line 2.5 (O, U)."""
    a, b, e = alpha_event, str(bravo_match), event_id
    return {
        "events": [
            {
                "event_id": e,
                "sport": sport,
                "name": f"{names[0]} v {names[2]}",
                "in_play": in_play,
                "primary": primary,
                "secondary": secondary,
                "ids": {"alpha": a, "bravo": b},
                "markets": [
                    {
                        "market_id": f"{e}:mr",
                        "market_type": "MATCH_RESULT",
                        "name": "Match result",
                        "ids": {"alpha": f"{a}-MR", "bravo": f"{b}/1X2"},
                        "selections": [
                            {
                                "selection_id": f"{e}:mr:{s}",
                                "name": n,
                                "ids": {"alpha": f"{a}-MR-{c}", "bravo": k},
                            }
                            for s, n, c, k in zip(("home", "draw", "away"), names, "HDA", "1X2", strict=True)
                        ],
                    },
                    {
                        "market_id": f"{e}:ou",
                        "market_type": "TOTAL_GOALS_2_5",
                        "name": "Total goals 2.5",
                        "ids": {"alpha": f"{a}-OU", "bravo": f"{b}/OU/2.5"},
                        "selections": [
                            {
                                "selection_id": f"{e}:ou:over",
                                "name": "Over 2.5",
                                "ids": {"alpha": f"{a}-OU-O", "bravo": "O"},
                            },
                            {
                                "selection_id": f"{e}:ou:under",
                                "name": "Under 2.5",
                                "ids": {"alpha": f"{a}-OU-U", "bravo": "U"},
                            },
                        ],
                    },
                ],
            }
        ]
    }
