"""Provider wire formats. Each adapter checks schema and types, converts odds exactly and returns a
:class:`ProviderMessage` in the provider's own ids (mapping to internal ids happens in normalization).

``alpha`` — one market per message, decimal-string odds, ISO-8601 timestamps::

    {"type": "odds", "seq": 42, "ts": "2025-03-01T15:04:05.123Z", "correction": false,
     "event": {"id": "A-EV-1", "home": "...", "away": "..."},
     "market": {"id": "A-MK-7", "prices": [{"id": "A-SE-1", "odds": "2.50"}, ...]}}
    {"type": "bet_stop", "seq": 43, "ts": "...", "event": {"id": "A-EV-1"}, "markets": ["A-MK-7"]}
    {"type": "incident", "seq": 44, "ts": "...", "event": {"id": "A-EV-1"}, "incident": "goal"}
    {"type": "heartbeat", "seq": 45, "ts": "..."}
    {"type": "end", "seq": 46, "ts": "...", "event": {"id": "A-EV-1"}}

``bravo`` — a header/body envelope, several offers per message, American (or fractional) odds, epoch-ms
timestamps, numeric match refs, offers identified by (type, line) and outcomes by code::

    {"hdr": {"seq": 17, "sent": 1740841445123, "type": "PRICE", "corrected": false},
     "match": {"ref": 99123, "participants": {"home": "...", "away": "..."}},
     "offers": [{"type": "1X2", "outcomes": [{"code": "1", "us": 150}, {"code": "X", "frac": "11/5"}]},
                {"type": "OU", "line": "2.5", "outcomes": [{"code": "O", "us": -110}, ...]}]}
    {"hdr": {"seq": 18, "sent": ..., "type": "STOP"}, "match": {"ref": 99123}, "offers": [{"type": "OU",
     "line": "2.5"}]}
    {"hdr": {..., "type": "INCIDENT"}, "match": {"ref": 99123}, "incident": {"kind": "RED"}}
    {"hdr": {..., "type": "ALIVE"}}
    {"hdr": {..., "type": "FINAL"}, "match": {"ref": 99123}}

Bravo market ref = ``"{match ref}/{type}/{line}"`` (line omitted when absent); selection ref = outcome code.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from inplay.core import Odds, read_alpha_prices
from inplay.domain.feed import fastjson
from inplay.domain.feed.messages import (
    BET_STOP,
    END,
    HEARTBEAT,
    INCIDENT,
    ODDS_INVALID,
    PRICES,
    SCHEMA,
    SNAPSHOT_COMPLETE,
    TIMESTAMP_MISSING,
    ProviderMarket,
    ProviderMessage,
    Rejected,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ProviderAdapter(Protocol):
    name: str

    def parse(self, payload: bytes) -> ProviderMessage:
        """Raises :class:`Rejected` (SCHEMA, TIMESTAMP_MISSING, ODDS_INVALID)."""
        ...

    def parse_many(self, payloads: Sequence[bytes]) -> list[ProviderMessage | Rejected]:
        """:meth:`parse` of every payload of a chunk, in order (a rejection in place of its message)."""
        ...


def parse_or_rejection(adapter: ProviderAdapter, payload: bytes) -> ProviderMessage | Rejected:
    """:meth:`ProviderAdapter.parse`, its rejection returned instead of raised."""
    try:
        return adapter.parse(payload)
    except Rejected as rej:
        return rej


def parse_each(adapter: ProviderAdapter, payloads: Sequence[bytes]) -> list[ProviderMessage | Rejected]:
    return [parse_or_rejection(adapter, payload) for payload in payloads]


def _load(payload: bytes) -> dict[str, Any]:
    try:
        doc = fastjson.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(SCHEMA, f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Rejected(SCHEMA, "not a JSON object")
    return doc


def _obj(doc: Any, key: str, required: bool = True) -> dict[str, Any]:
    value = doc.get(key) if isinstance(doc, dict) else None
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise Rejected(SCHEMA, f"{key} must be an object")
    return value


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise Rejected(SCHEMA, f"{key} must be a non-empty string")
    return value


def _seq(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Rejected(SCHEMA, "seq must be a non-negative integer")
    return value


# Decimal odds strings already converted (feeds repeat the same ladder prices all day): a dict hit instead of
# a core call per price. Bounded: cleared when full. Only valid odds are kept, so a hit needs no re-check.
def _utc_ms(value: Any) -> int:
    """Epoch ms of an ISO-8601 time with a UTC offset (any form ``datetime.fromisoformat`` reads)."""
    if value is None or value == "":
        raise Rejected(TIMESTAMP_MISSING, "ts missing")
    if not isinstance(value, str):
        raise Rejected(SCHEMA, "ts must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Rejected(SCHEMA, f"bad ts {value!r}") from None
    if parsed.tzinfo is None:
        raise Rejected(SCHEMA, "ts needs a UTC offset")
    return (parsed - _EPOCH) // timedelta(milliseconds=1)


# Epoch ms of "YYYY-MM-DDTHH:MM" minutes already read (a feed's timestamps share their minute). Bounded.
_MINUTES: dict[str, int] = {}
_MINUTES_MAX = 4_096


def utc_ms_canonical(value: Any) -> int | None:
    """Epoch ms of the canonical ``YYYY-MM-DDTHH:MM:SS.mmmZ`` form (what the providers send), its minute read
    once; None for any other form or type, which the caller reads in full (:func:`_utc_ms`): the result is
    the same (property test ``test_canonical_timestamps_read_as_datetime_reads_them``). Reading it with
    ``datetime`` was 3 % of the ingest profile."""
    if not isinstance(value, str) or len(value) != 24 or value[23] != "Z" or value[19] != "." or value[16] != ":":
        return None
    sec, milli = value[17:19], value[20:23]
    if not (sec.isascii() and sec.isdigit() and milli.isascii() and milli.isdigit()) or sec > "59":
        return None
    minute = _MINUTES.get(value[:16])
    if minute is None:
        digits = value[:4] + value[5:7] + value[8:10] + value[11:13] + value[14:16]
        if not (digits.isascii() and digits.isdigit()) or (value[4], value[7], value[10], value[13]) != tuple("--T:"):
            return None
        try:
            parsed = datetime.fromisoformat(value[:16] + ":00+00:00")
        except ValueError:
            return None
        minute = (parsed - _EPOCH) // timedelta(milliseconds=1)
        if len(_MINUTES) >= _MINUTES_MAX:
            _MINUTES.clear()
        _MINUTES[value[:16]] = minute
    return minute + int(sec) * 1000 + int(milli)


_DECIMALS: dict[str, Odds] = {}
_DECIMALS_MAX = 65_536


def _checked(odds: Odds) -> Odds:
    if odds.num <= odds.den:
        raise Rejected(ODDS_INVALID, f"odds {odds.num}/{odds.den} not above 1.0")
    return odds


class AlphaAdapter:
    name = "alpha"
    KINDS = {
        "odds": PRICES,
        "bet_stop": BET_STOP,
        "incident": INCIDENT,
        "heartbeat": HEARTBEAT,
        "end": END,
        "snapshot_complete": SNAPSHOT_COMPLETE,
    }
    INCIDENTS = {"goal": "GOAL", "red_card": "RED_CARD", "var": "VAR"}

    @staticmethod
    def _ts(value: Any) -> int:
        fast = utc_ms_canonical(value)
        if fast is not None:
            return fast
        return _utc_ms(value)

    @staticmethod
    def _odds(value: Any) -> Odds:
        if not isinstance(value, str):
            raise Rejected(SCHEMA, "odds must be a decimal string")
        hit = _DECIMALS.get(value)
        if hit is not None:
            return hit
        try:
            odds = Odds.from_decimal(value)
        except Exception as exc:  # the core rejects malformed or <= 1.0 odds
            raise Rejected(ODDS_INVALID, f"odds {value!r}: {exc}") from None
        odds = _checked(odds)
        if len(_DECIMALS) >= _DECIMALS_MAX:
            _DECIMALS.clear()
        _DECIMALS[value] = odds
        return odds

    def parse(self, payload: bytes) -> ProviderMessage:
        doc = _load(payload)
        seq = _seq(doc.get("seq"))
        try:
            return self._parse(doc, seq)
        except Rejected as rej:
            rej.seq = seq
            raise

    def parse_many(self, payloads: Sequence[bytes]) -> list[ProviderMessage | Rejected]:
        """Price messages (the firehose) by the Rust core's fast reader, one call per chunk; what it declines
        (every other type, and any price message it is not sure of) by :meth:`parse`. The reader accepts only
        what :meth:`parse` accepts, with the same fields (``tests/unit/test_feed_fast_reader.py``)."""
        fast = read_alpha_prices(payloads if isinstance(payloads, list) else list(payloads))
        out: list[ProviderMessage | Rejected] = []
        for payload, read in zip(payloads, fast, strict=True):
            if read is None:
                out.append(parse_or_rejection(self, payload))
                continue
            seq, ts, correction, event_ref, market_ref, prices = read
            sels = tuple([(ref, Odds(num, den)) for ref, num, den in prices])
            market = (ProviderMarket(market_ref, sels),)
            # positional, in field order (market_refs, incident: none for prices)
            out.append(ProviderMessage(self.name, seq, ts, PRICES, event_ref, market, (), "", correction))
        return out

    def _parse(self, doc: dict[str, Any], seq: int) -> ProviderMessage:
        kind = self.KINDS.get(doc.get("type", ""))
        if kind is None:
            raise Rejected(SCHEMA, f"unknown type {doc.get('type')!r}")
        ts = self._ts(doc.get("ts"))
        if kind == HEARTBEAT:
            return ProviderMessage(self.name, seq, ts, kind)
        if kind == SNAPSHOT_COMPLETE:
            return ProviderMessage(self.name, seq, ts, kind, request_id=_str(doc, "request_id"))
        event_ref = _str(_obj(doc, "event"), "id")
        correction = doc.get("correction", False)
        if not isinstance(correction, bool):
            raise Rejected(SCHEMA, "correction must be a boolean")
        if kind == PRICES:
            market = _obj(doc, "market")
            prices = market.get("prices")
            if not isinstance(prices, list) or not prices:
                raise Rejected(SCHEMA, "market.prices must be a non-empty list")
            sels = []
            for p in prices:
                if not isinstance(p, dict):
                    raise Rejected(SCHEMA, "price must be an object")
                sels.append((_str(p, "id"), self._odds(p.get("odds"))))
            return ProviderMessage(
                self.name,
                seq,
                ts,
                kind,
                event_ref,
                (ProviderMarket(_str(market, "id"), tuple(sels)),),
                correction=correction,
            )
        if kind == BET_STOP:
            refs = doc.get("markets", [])
            if not isinstance(refs, list) or not all(isinstance(r, str) and r for r in refs):
                raise Rejected(SCHEMA, "markets must be a list of ids")
            return ProviderMessage(self.name, seq, ts, kind, event_ref, market_refs=tuple(refs))
        if kind == INCIDENT:
            incident = self.INCIDENTS.get(str(doc.get("incident", "")).lower())
            if incident is None:
                raise Rejected(SCHEMA, f"unknown incident {doc.get('incident')!r}")
            return ProviderMessage(self.name, seq, ts, kind, event_ref, incident=incident)
        return ProviderMessage(self.name, seq, ts, kind, event_ref)


class BravoAdapter:
    name = "bravo"
    KINDS = {
        "PRICE": PRICES,
        "STOP": BET_STOP,
        "INCIDENT": INCIDENT,
        "ALIVE": HEARTBEAT,
        "FINAL": END,
        "SNAPSHOT_END": SNAPSHOT_COMPLETE,
    }
    INCIDENTS = {"GOAL": "GOAL", "RED": "RED_CARD", "VAR": "VAR"}

    @staticmethod
    def market_ref(match_ref: str, offer: dict[str, Any]) -> str:
        kind = offer.get("type")
        if not isinstance(kind, str) or not kind:
            raise Rejected(SCHEMA, "offer.type must be a non-empty string")
        line = offer.get("line")
        if line is not None and not isinstance(line, str):
            raise Rejected(SCHEMA, "offer.line must be a string")
        return f"{match_ref}/{kind}" + (f"/{line}" if line else "")

    @staticmethod
    def _odds(outcome: dict[str, Any]) -> Odds:
        try:
            if "us" in outcome:
                us = outcome["us"]
                if not isinstance(us, int) or isinstance(us, bool):
                    raise Rejected(SCHEMA, "us must be an integer")
                if -100 < us < 100:
                    raise Rejected(ODDS_INVALID, f"American odds {us}")
                return _checked(Odds.from_american(us))
            if "frac" in outcome:
                frac = outcome["frac"]
                if not isinstance(frac, str) or frac.count("/") != 1:
                    raise Rejected(SCHEMA, "frac must be 'N/D'")
                n_text, d_text = frac.split("/")
                if not (n_text.strip().isdigit() and d_text.strip().isdigit()):
                    raise Rejected(SCHEMA, f"bad fractional odds {frac!r}")
                n, d = int(n_text), int(d_text)
                if n <= 0 or d <= 0:
                    raise Rejected(ODDS_INVALID, f"fractional odds {frac}")
                return _checked(Odds.from_fractional(n, d))
        except Rejected:
            raise
        except Exception as exc:
            raise Rejected(ODDS_INVALID, str(exc)) from None
        raise Rejected(SCHEMA, "outcome needs 'us' or 'frac'")

    def parse_many(self, payloads: Sequence[bytes]) -> list[ProviderMessage | Rejected]:
        return parse_each(self, payloads)

    def parse(self, payload: bytes) -> ProviderMessage:
        doc = _load(payload)
        hdr = _obj(doc, "hdr")
        seq = _seq(hdr.get("seq"))
        try:
            return self._parse(doc, hdr, seq)
        except Rejected as rej:
            rej.seq = seq
            raise

    def _parse(self, doc: dict[str, Any], hdr: dict[str, Any], seq: int) -> ProviderMessage:
        kind = self.KINDS.get(hdr.get("type", ""))
        if kind is None:
            raise Rejected(SCHEMA, f"unknown hdr.type {hdr.get('type')!r}")
        sent = hdr.get("sent")
        if sent is None:
            raise Rejected(TIMESTAMP_MISSING, "hdr.sent missing")
        if not isinstance(sent, int) or isinstance(sent, bool) or sent <= 0:
            raise Rejected(SCHEMA, "hdr.sent must be epoch milliseconds")
        if kind == HEARTBEAT:
            return ProviderMessage(self.name, seq, sent, kind)
        if kind == SNAPSHOT_COMPLETE:
            return ProviderMessage(self.name, seq, sent, kind, request_id=_str(hdr, "request"))
        correction = hdr.get("corrected", False)
        if not isinstance(correction, bool):
            raise Rejected(SCHEMA, "hdr.corrected must be a boolean")
        ref = _obj(doc, "match").get("ref")
        if not isinstance(ref, int) or isinstance(ref, bool):
            raise Rejected(SCHEMA, "match.ref must be an integer")
        match_ref = str(ref)
        offers = doc.get("offers", [])
        if not isinstance(offers, list) or not all(isinstance(o, dict) for o in offers):
            raise Rejected(SCHEMA, "offers must be a list of objects")
        if kind == PRICES:
            if not offers:
                raise Rejected(SCHEMA, "PRICE without offers")
            markets = []
            for offer in offers:
                outcomes = offer.get("outcomes")
                if not isinstance(outcomes, list) or not outcomes:
                    raise Rejected(SCHEMA, "offer.outcomes must be a non-empty list")
                sels = []
                for o in outcomes:
                    if not isinstance(o, dict):
                        raise Rejected(SCHEMA, "outcome must be an object")
                    sels.append((_str(o, "code"), self._odds(o)))
                markets.append(ProviderMarket(self.market_ref(match_ref, offer), tuple(sels)))
            return ProviderMessage(self.name, seq, sent, kind, match_ref, tuple(markets), correction=correction)
        if kind == BET_STOP:
            refs = tuple(self.market_ref(match_ref, o) for o in offers)
            return ProviderMessage(self.name, seq, sent, kind, match_ref, market_refs=refs)
        if kind == INCIDENT:
            raw = _obj(doc, "incident").get("kind")
            incident = self.INCIDENTS.get(str(raw).upper())
            if incident is None:
                raise Rejected(SCHEMA, f"unknown incident {raw!r}")
            return ProviderMessage(self.name, seq, sent, kind, match_ref, incident=incident)
        return ProviderMessage(self.name, seq, sent, kind, match_ref)


def default_adapters() -> dict[str, ProviderAdapter]:
    return {a.name: a for a in (AlphaAdapter(), BravoAdapter())}
