"""Size limits of every request of every service: the first wall, checked before any handler runs.

One table for the whole API (documented in docs/limits.md and in the proto comments; a test keeps the three
in agreement). A request breaking one of them gets INVALID_ARGUMENT with a google.rpc.BadRequest field path
(``slips[3].legs[0].market_id``) before any store is touched; the per-domain validation (required fields,
formats, the configurable ``INPLAY_MAX_LEGS``) still runs after it.

- Strings and bytes: at most ``FIELD_MAX_BYTES[full field name]``, else ``NAME_MAX_BYTES[field name]``, else
  ``DEFAULT_MAX_BYTES`` (UTF-8 bytes for strings). Map keys and values count as strings of the map field.
- Repeated fields and maps: at most ``REPEATED_MAX[full field name]``, else ``DEFAULT_REPEATED_MAX`` items.
- ``google.protobuf.Timestamp`` values: within 0001-01-01..9999-12-31 and ``0 <= nanos < 1e9`` (what
  the protobuf spec allows; conversions such as ``ToMilliseconds`` fail outside it).
- A whole message: at most ``MAX_MESSAGE_BYTES`` on the wire (checked after the fields, so that a message too
  big because of one field names that field); the transport (gRPC core) drops anything
  above ``TRANSPORT_MAX_MESSAGE_BYTES`` with RESOURCE_EXHAUSTED before it is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from inplay import core

KIB = 1024
MIB = 1024 * KIB

# Far above any real request (a 1000-slip PlaceBets is ~60 KB, a 10 000-outcome SettleEvent ~600 KB).
MAX_MESSAGE_BYTES = 1 * MIB
# gRPC's receive limit (its default, stated) sits above MAX_MESSAGE_BYTES so that a message between the two
# reaches the guard, which answers INVALID_ARGUMENT and counts it; above it gRPC answers RESOURCE_EXHAUSTED
# (uncounted). Not higher: it bounds what one stream may make the server buffer.
TRANSPORT_MAX_MESSAGE_BYTES = 4 * MIB
MAX_SEND_MESSAGE_BYTES = 16 * MIB

DEFAULT_MAX_BYTES = 200
DEFAULT_REPEATED_MAX = 1000

# By field name, wherever it appears.
NAME_MAX_BYTES: dict[str, int] = {
    "idempotency_key": 128,
    "request_id": 128,
    # Run ids are composed: event_id + ".s." + request_id (+ ".rN" per rollback); room for escaping too.
    "run_id": 1024,
    "reason": 500,
    "page_token": 1024,
    "currency": 8,
    "decimal": 32,
    "fractional": 32,
    "provider": 64,
}

# By full field name (overrides NAME_MAX_BYTES).
FIELD_MAX_BYTES: dict[str, int] = {
    # The bet domain's own id limit (domain/bets/validation.py MAX_ID_LENGTH): one number for both walls.
    "inplay.bets.v1.BetLeg.market_id": 128,
    "inplay.bets.v1.BetLeg.selection_id": 128,
    # A provider message, stored raw and republished on Kafka (JSON-escaped: up to 6x for control bytes): it
    # stays below the producer's message.max.bytes (adapters/kafka_bus.py) so no feed message is too big.
    "inplay.feed.v1.IngestOddsRequest.payload": 128 * KIB,
}

REPEATED_MAX: dict[str, int] = {
    "inplay.bets.v1.PlaceBetsRequest.slips": 1000,
    # The core's hard cap; the configurable INPLAY_MAX_LEGS (default 20) rejects per slip below it.
    "inplay.bets.v1.BetSlip.legs": core.MAX_LEGS,
    "inplay.odds.v1.StreamOddsRequest.event_ids": 1000,
    "inplay.odds.v1.StreamOddsRequest.market_ids": 1000,
    "inplay.odds.v1.StreamOddsRequest.known_versions": 1000,
    "inplay.settlement.v1.SettleEventRequest.outcomes": 10_000,
    "inplay.settlement.v1.SettleEventRequest.void_market_ids": 10_000,
    "inplay.settlement.v1.ResettleEventRequest.outcomes": 10_000,
    "inplay.settlement.v1.ResettleEventRequest.void_market_ids": 10_000,
}


@dataclass(frozen=True, slots=True)
class Violation:
    field: str  # AIP-193 path: slips[1].legs[0].market_id
    description: str
    reason: str  # FIELD_TOO_LONG | TOO_MANY_ITEMS | OUT_OF_RANGE


def max_bytes(field: FieldDescriptor) -> int:
    """The maximum length of a string/bytes field (for a map field: of its keys and values)."""
    return FIELD_MAX_BYTES.get(field.full_name, NAME_MAX_BYTES.get(field.name, DEFAULT_MAX_BYTES))


def max_items(field: FieldDescriptor) -> int:
    return REPEATED_MAX.get(field.full_name, DEFAULT_REPEATED_MAX)


_TEXT = (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES)


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and entry.GetOptions().map_entry


def _too_long(value: str | bytes, limit: int) -> int:
    """The size of ``value`` if it is above ``limit``, else 0 (most strings are decided without encoding)."""
    if isinstance(value, bytes):
        return len(value) if len(value) > limit else 0
    if len(value) * 4 <= limit:  # UTF-8 is at most 4 bytes per code point
        return 0
    size = len(value.encode("utf-8", "surrogatepass"))
    return size if size > limit else 0


# google.protobuf.Timestamp's valid range (timestamp.proto).
TIMESTAMP_MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
TIMESTAMP_MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z


def _check_timestamp(message: Message, path: str, out: list[Violation]) -> None:
    seconds: int = message.seconds  # type: ignore[attr-defined]
    nanos: int = message.nanos  # type: ignore[attr-defined]
    if not TIMESTAMP_MIN_SECONDS <= seconds <= TIMESTAMP_MAX_SECONDS or not 0 <= nanos < 1_000_000_000:
        out.append(
            Violation(path, "timestamp outside 0001-01-01..9999-12-31 or nanos outside 0..999999999", "OUT_OF_RANGE")
        )


@dataclass(frozen=True, slots=True)
class _Plan:
    """What to look at in a message type (only fields that can break a limit), compiled once per type."""

    texts: tuple[tuple[str, int], ...] = ()  # singular string/bytes: (name, max bytes)
    text_lists: tuple[tuple[str, int, int], ...] = ()  # repeated string/bytes: (name, max items, max bytes)
    messages: tuple[tuple[str, _Plan], ...] = ()
    message_lists: tuple[tuple[str, int, _Plan | None], ...] = ()
    maps: tuple[str, ...] = ()
    timestamp: bool = False

    def empty(self) -> bool:
        return not (self.texts or self.text_lists or self.messages or self.message_lists or self.maps or self.timestamp)


_PLANS: dict[str, _Plan] = {}


def _plan(descriptor: Descriptor) -> _Plan:
    cached = _PLANS.get(descriptor.full_name)
    if cached is not None:
        return cached
    if descriptor.full_name == "google.protobuf.Timestamp":
        plan = _Plan(timestamp=True)
    else:
        texts, text_lists, messages, message_lists, maps = [], [], [], [], []
        for f in descriptor.fields:
            if _is_map(f):
                maps.append(f.name)
            elif f.type in _TEXT:
                (
                    text_lists.append((f.name, max_items(f), max_bytes(f)))
                    if f.is_repeated
                    else texts.append((f.name, max_bytes(f)))
                )
            elif f.message_type is not None:
                sub = _plan(f.message_type)
                if f.is_repeated:
                    message_lists.append((f.name, max_items(f), None if sub.empty() else sub))
                elif not sub.empty():
                    messages.append((f.name, sub))
            elif f.is_repeated:
                text_lists.append((f.name, max_items(f), 1 << 62))  # repeated scalars: only the count
        plan = _Plan(tuple(texts), tuple(text_lists), tuple(messages), tuple(message_lists), tuple(maps))
    _PLANS[descriptor.full_name] = plan
    return plan


def _within(message: Any, plan: _Plan) -> bool:
    """True when ``message`` certainly breaks no limit (the fast path: no paths, no allocations)."""
    if plan.timestamp:
        seconds: int = message.seconds
        nanos: int = message.nanos
        return TIMESTAMP_MIN_SECONDS <= seconds <= TIMESTAMP_MAX_SECONDS and 0 <= nanos < 1_000_000_000
    for name, limit in plan.texts:
        value = getattr(message, name)
        if len(value) * 4 > limit and _too_long(value, limit):  # inlined first test: the common case
            return False
    for name, items, limit in plan.text_lists:
        values = getattr(message, name)
        if len(values) > items or (limit < 1 << 62 and any(_too_long(v, limit) for v in values)):
            return False
    for name, sub in plan.messages:
        if message.HasField(name) and not _within(getattr(message, name), sub):
            return False
    for name, items, maybe in plan.message_lists:
        values = getattr(message, name)
        if len(values) > items or (maybe is not None and not all(_within(v, maybe) for v in values)):
            return False
    # Maps are rare in requests: any entry sends the message to the exact check.
    return not any(len(getattr(message, name)) for name in plan.maps)


def check(message: Message) -> list[Violation]:
    """Every limit a request breaks (recursively), with field paths relative to the request."""
    if _within(message, _plan(message.DESCRIPTOR)):  # type: ignore[arg-type]
        return []
    return walk(message)


def walk(message: Message, prefix: str = "") -> list[Violation]:
    """The exact (slow) check: every violation with its path. ``check`` calls it only when needed."""
    out: list[Violation] = []
    if message.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
        _check_timestamp(message, prefix.rstrip("."), out)
        return out
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.is_repeated:
            _check_repeated(field, value, path, out)
        elif field.type in _TEXT:
            _check_text(field, value, path, out)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            out += walk(value, f"{path}.")
    return out


def _check_text(field: FieldDescriptor, value: str | bytes, path: str, out: list[Violation]) -> None:
    limit = max_bytes(field)
    size = _too_long(value, limit)
    if size:
        out.append(Violation(path, f"{size} bytes; at most {limit}", "FIELD_TOO_LONG"))


def _check_repeated(field: FieldDescriptor, value: Any, path: str, out: list[Violation]) -> None:
    items = len(value)
    limit = max_items(field)
    if items > limit:
        out.append(Violation(path, f"{items} items; at most {limit}", "TOO_MANY_ITEMS"))
        return
    if _is_map(field):
        _check_map(field, value, path, out)
    elif field.type in _TEXT:
        limit_bytes = max_bytes(field)
        for i, item in enumerate(value):
            size = _too_long(item, limit_bytes)
            if size:
                out.append(Violation(f"{path}[{i}]", f"{size} bytes; at most {limit_bytes}", "FIELD_TOO_LONG"))
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        for i, item in enumerate(value):
            out += walk(item, f"{path}[{i}].")


def _check_map(field: FieldDescriptor, value: Any, path: str, out: list[Violation]) -> None:
    limit = max_bytes(field)
    entry = field.message_type
    assert entry is not None  # a map field always has its entry type
    value_field = entry.fields_by_name["value"]
    for key in value:
        if isinstance(key, str | bytes) and _too_long(key, limit):
            # The key itself may be huge: the path names the map, not the key.
            out.append(Violation(path, f"a key is longer than {limit} bytes", "FIELD_TOO_LONG"))
            continue
        item = value[key]
        if value_field.type == FieldDescriptor.TYPE_MESSAGE:
            out += walk(item, f"{path}[{key!r}].")
        elif value_field.type in _TEXT:
            size = _too_long(item, limit)
            if size:
                out.append(Violation(f"{path}[{key!r}]", f"{size} bytes; at most {limit}", "FIELD_TOO_LONG"))


def request_fields(descriptor: Descriptor, seen: frozenset[str] = frozenset()) -> list[str]:
    """Full names of every string/bytes/repeated field reachable from a request type (for docs and tests)."""
    out: list[str] = []
    for field in descriptor.fields:
        if field.type in _TEXT or field.is_repeated:
            out.append(field.full_name)
        sub = field.message_type
        if (
            sub is not None
            and not _is_map(field)
            and sub.full_name not in seen
            and not sub.full_name.startswith("google.protobuf.")
        ):
            out += request_fields(sub, seen | {descriptor.full_name})
    return out


__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_REPEATED_MAX",
    "FIELD_MAX_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_SEND_MESSAGE_BYTES",
    "NAME_MAX_BYTES",
    "REPEATED_MAX",
    "TRANSPORT_MAX_MESSAGE_BYTES",
    "Violation",
    "check",
    "max_bytes",
    "max_items",
    "request_fields",
    "walk",
]
