"""The mapping table: provider ids -> internal ids, with the event/market/selection metadata (names, sport,
market type, in-play flag) and the provider assignment per event (primary + secondary). Nothing about
teams or fixtures lives in code: it is a JSON document loaded by ``python -m inplay.cli mapping
load FILE`` (or :meth:`FeedMappingService.load`) into the store, which keeps it **per event** with a revision
each (Redis ``{prefix}feed:mapping:events``, written by compare-and-set: M7). Fixture fields (``in_play``,
``status``, ``starts_at_ms``) change with ``python -m inplay.cli mapping fixture``; every running process
follows the store's change feed (H7)::

    {"events": [{
        "event_id": "ev-1", "sport": "football", "name": "Home v Away", "in_play": true,
        "primary": "alpha", "secondary": "bravo",
        "ids": {"alpha": "A-EV-1", "bravo": "99123"},
        "markets": [{
            "market_id": "ev-1:mr", "market_type": "MATCH_RESULT", "name": "Match result",
            "ids": {"alpha": "A-MK-7", "bravo": "99123/1X2"},
            "selections": [{"selection_id": "ev-1:mr:home", "name": "Home",
                            "ids": {"alpha": "A-SE-1", "bravo": "1"}}, ...]}]}]}

Selection refs are looked up within their market, so a provider may reuse outcome codes across markets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from inplay.errors import Aborted, FieldViolation, InvalidArgument, NotFound
from inplay.valuetype import value

log = logging.getLogger("inplay.feed.mapping")


@value
class SelectionInfo:
    selection_id: str
    name: str


@value
class MarketInfo:
    market_id: str
    event_id: str
    market_type: str
    name: str
    # provider -> {provider selection ref -> selection}
    selections: dict[str, dict[str, SelectionInfo]]
    ordered: tuple[SelectionInfo, ...]
    # provider -> {provider selection ref -> (position in ``ordered``, selection)}: a price lands in its slot
    slots: dict[str, dict[str, tuple[int, SelectionInfo]]]


@value
class EventInfo:
    event_id: str
    sport: str
    name: str
    in_play: bool
    primary: str
    secondary: str
    market_ids: tuple[str, ...]
    # (primary, secondary) without the empty one: read on every message, so computed once
    providers: tuple[str, ...] = ()
    # Fixture: kick-off time (epoch ms, 0 = unknown) and status as the fixture source states it
    # ("NOT_STARTED", "LIVE", "POSTPONED", ...; free text); revision of the stored entry (M7).
    starts_at_ms: int = 0
    status: str = ""
    rev: int = 0

    def __post_init__(self) -> None:
        if not self.providers:
            object.__setattr__(self, "providers", tuple(p for p in (self.primary, self.secondary) if p))


class FeedMappingStore(Protocol):
    """The mapping table stored per event, with a revision per event (M7)."""

    async def put_events(
        self, events: Sequence[dict[str, Any]], expected: Mapping[str, int], removed: Sequence[str] = ()
    ) -> tuple[bool, list[tuple[str, int]]]:
        """Compare-and-set: writes ``events`` (and deletes ``removed``) only if every one's revision still is
        ``expected`` (0 = absent). Returns (True, [(event id, new revision)]) or (False, [(conflict, -1)])."""
        ...

    async def snapshot(self) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
        """Every stored entry by event id, and every revision (deleted events keep theirs)."""
        ...

    async def events(self, event_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]: ...

    async def load(self) -> dict[str, Any] | None:
        """The whole table as one document (``{"events": [...]}``), None when nothing was ever stored."""
        ...

    async def version(self) -> int:
        """A counter bumped by every write (cheap to poll: the fallback when a change notice was missed)."""
        ...

    def changes(self) -> AsyncIterator[tuple[int, list[tuple[str, int]]]]:
        """Every write from now on: (table version, [(event id, revision), ...])."""
        ...


class MappingTable:
    """In-process index of the mapping document (lookups on the hot path are dict gets)."""

    def __init__(self, document: dict[str, Any] | None = None) -> None:
        self.document: dict[str, Any] = document or {"events": []}
        self.events: dict[str, EventInfo] = {}
        self.markets: dict[str, MarketInfo] = {}
        self._event_refs: dict[tuple[str, str], str] = {}
        self._market_refs: dict[tuple[str, str], str] = {}
        self._build(self.document)

    def _build(self, doc: dict[str, Any]) -> None:
        def bad(path: str, why: str) -> InvalidArgument:
            return InvalidArgument(f"mapping: {path}: {why}", violations=[FieldViolation(path, why)])

        events = doc.get("events")
        if not isinstance(events, list):
            raise bad("events", "must be a list")
        for i, ev in enumerate(events):
            path = f"events[{i}]"
            try:
                event_id = str(ev["event_id"])
                market_ids = []
                for j, mk in enumerate(ev.get("markets", [])):
                    mpath = f"{path}.markets[{j}]"
                    market_id = str(mk["market_id"])
                    by_provider: dict[str, dict[str, SelectionInfo]] = {}
                    slots: dict[str, dict[str, tuple[int, SelectionInfo]]] = {}
                    ordered = []
                    first: dict[str, int] = {}  # a selection id named twice has one slot (never all priced)
                    for k, sel in enumerate(mk.get("selections", [])):
                        info = SelectionInfo(str(sel["selection_id"]), str(sel.get("name", sel["selection_id"])))
                        ordered.append(info)
                        position = first.setdefault(info.selection_id, k)
                        for provider, ref in dict(sel.get("ids", {})).items():
                            by_provider.setdefault(str(provider), {})[str(ref)] = info
                            slots.setdefault(str(provider), {})[str(ref)] = (position, info)
                        if not sel.get("ids"):
                            raise bad(f"{mpath}.selections[{k}].ids", "at least one provider id")
                    self.markets[market_id] = MarketInfo(
                        market_id,
                        event_id,
                        str(mk.get("market_type", "")),
                        str(mk.get("name", market_id)),
                        by_provider,
                        tuple(ordered),
                        slots,
                    )
                    for provider, ref in dict(mk.get("ids", {})).items():
                        self._market_refs[(str(provider), str(ref))] = market_id
                    market_ids.append(market_id)
                self.events[event_id] = EventInfo(
                    event_id,
                    str(ev.get("sport", "")),
                    str(ev.get("name", event_id)),
                    bool(ev.get("in_play", True)),
                    str(ev.get("primary", "")),
                    str(ev.get("secondary", "")),
                    tuple(market_ids),
                    starts_at_ms=int(ev.get("starts_at_ms", 0)),
                    status=str(ev.get("status", "")),
                    rev=int(ev.get("rev", 0)),
                )
                for provider, ref in dict(ev.get("ids", {})).items():
                    self._event_refs[(str(provider), str(ref))] = event_id
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise bad(path, f"malformed entry ({exc!r})") from None

    def event(self, provider: str, ref: str) -> EventInfo | None:
        event_id = self._event_refs.get((provider, ref))
        return self.events.get(event_id) if event_id is not None else None

    def market(self, provider: str, ref: str) -> MarketInfo | None:
        market_id = self._market_refs.get((provider, ref))
        return self.markets.get(market_id) if market_id is not None else None


class MappingConflict(Aborted):
    """Another writer kept changing the same events: the caller may retry."""

    reason: str = "ABORTED"


# Compare-and-set attempts before a write gives up (each conflict re-reads the events it writes).
CAS_ATTEMPTS = 20


class FeedMappingService:
    """Keeps the in-process table current and writes entries by compare-and-set.

    Running processes follow the store's change feed (:meth:`start`): a notice names the events written and
    their revisions; an event is re-read and applied only when its revision is newer than the one held
    (version-checked: a late or repeated notice changes nothing). The version poll of the watchdog
    (:meth:`refresh_if_changed`) stays as the fallback for a notice lost while disconnected."""

    def __init__(self, store: FeedMappingStore) -> None:
        self.store = store
        self.table = MappingTable()
        self._version: int | None = None
        self._entries: dict[str, dict[str, Any]] = {}
        self._revs: dict[str, int] = {}
        self._follower: asyncio.Task[None] | None = None

    async def refresh(self) -> MappingTable:
        version = await self.store.version()  # read before the entries: a write in between is seen next time
        entries, revs = await self.store.snapshot()
        self._install(entries, revs)
        self._version = version
        return self.table

    def _install(self, entries: dict[str, dict[str, Any]], revs: dict[str, int]) -> None:
        table = MappingTable({"events": [entries[k] for k in sorted(entries)]})
        self._entries, self._revs, self.table = entries, revs, table

    async def refresh_if_changed(self) -> bool:
        """Reloads the table when another process stored a change this one has not applied; True if it did."""
        if await self.store.version() == self._version:
            return False
        await self.refresh()
        return True

    async def apply_notice(self, changed: Sequence[tuple[str, int]]) -> bool:
        """Applies the events of one change notice whose revision is newer than held; True if any was."""
        newer = [eid for eid, rev in changed if rev > self._revs.get(eid, 0)]
        if not newer:
            return False
        fresh = await self.store.events(newer)
        entries, revs = dict(self._entries), dict(self._revs)
        for eid, rev in changed:
            if eid not in fresh:
                continue
            doc = fresh[eid]
            if doc is None:
                entries.pop(eid, None)
                revs[eid] = max(rev, revs.get(eid, 0))
            elif int(doc.get("rev", 0)) > revs.get(eid, 0):  # the entry read may be newer than the notice
                entries[eid] = doc
                revs[eid] = int(doc.get("rev", 0))
        self._install(entries, revs)
        return True

    async def load(self, document: dict[str, Any], replace: bool = False) -> MappingTable:
        """Validates and stores ``document``'s events (each replaces the stored entry of its event id;
        ``replace``: events not in it are deleted). Compare-and-set per event: a concurrent write of another
        event is kept, one of the same event makes this write re-read and try again."""
        incoming = {str(e["event_id"]): e for e in MappingTable(document).document.get("events", [])}
        for _ in range(CAS_ATTEMPTS):
            entries, revs = await self.store.snapshot()
            removed = sorted(set(entries) - set(incoming)) if replace else []
            merged = {k: v for k, v in entries.items() if k not in removed} | incoming
            MappingTable({"events": list(merged.values())})  # the table as it will be, validated first
            expected = {eid: revs.get(eid, 0) for eid in (*incoming, *removed)}
            ok, _ = await self.store.put_events(list(incoming.values()), expected, removed)
            if ok:
                return await self.refresh()
        raise MappingConflict(f"mapping events changed concurrently {CAS_ATTEMPTS} times; retry")

    async def update_event(self, event_id: str, changes: Mapping[str, Any]) -> EventInfo:
        """A fixture change (``in_play``, ``status``, ``starts_at_ms``, ...) merged into one stored event by
        compare-and-set: two processes changing different fields of one event both keep their change."""
        for _ in range(CAS_ATTEMPTS):
            current = (await self.store.events([event_id])).get(event_id)
            if current is None:
                raise NotFound(f"event {event_id} is not in the mapping")
            updated = {**current, **changes, "event_id": event_id}
            MappingTable({"events": [updated]})  # validated before it is stored
            ok, _ = await self.store.put_events([updated], {event_id: int(current.get("rev", 0))})
            if ok:
                await self.refresh()
                return self.table.events[event_id]
        raise MappingConflict(f"event {event_id} changed concurrently {CAS_ATTEMPTS} times; retry")

    def start(self) -> None:
        """Follows the change feed in the background (every running process does: H7)."""
        if self._follower is None or self._follower.done():
            self._follower = asyncio.create_task(self._follow(), name="feed-mapping-follow")

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None

    async def _follow(self) -> None:
        while True:
            try:
                async for _version, changed in self.store.changes():
                    await self.apply_notice(changed)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("mapping change feed lost; following again", exc_info=True)
            await asyncio.sleep(0.5)
            with contextlib.suppress(Exception):
                await self.refresh_if_changed()  # what was written while the feed was down
