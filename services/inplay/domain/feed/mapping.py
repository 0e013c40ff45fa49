"""The mapping table: provider ids -> internal ids, with the event/market/selection metadata (names, sport,
market type, in-play flag) and the provider assignment per event (primary + secondary). Nothing about
teams or fixtures lives in code: it is a JSON document loaded by ``python -m inplay.cli mapping
load FILE`` (or :meth:`FeedMappingService.load`) into the store (Redis ``{prefix}feed:mapping``)::

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

from dataclasses import dataclass
from typing import Any, Protocol

from inplay.errors import FieldViolation, InvalidArgument


@dataclass(frozen=True, slots=True)
class SelectionInfo:
    selection_id: str
    name: str


@dataclass(frozen=True, slots=True)
class MarketInfo:
    market_id: str
    event_id: str
    market_type: str
    name: str
    # provider -> {provider selection ref -> selection}
    selections: dict[str, dict[str, SelectionInfo]]
    ordered: tuple[SelectionInfo, ...]


@dataclass(frozen=True, slots=True)
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

    def __post_init__(self) -> None:
        if not self.providers:
            object.__setattr__(self, "providers", tuple(p for p in (self.primary, self.secondary) if p))


class FeedMappingStore(Protocol):
    async def save(self, document: dict[str, Any]) -> None:
        """Stores the document and bumps :meth:`version`."""
        ...

    async def load(self) -> dict[str, Any] | None: ...

    async def version(self) -> int:
        """A counter bumped by every save (cheap to poll: running processes reload only when it moved)."""
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
                    ordered = []
                    for k, sel in enumerate(mk.get("selections", [])):
                        info = SelectionInfo(str(sel["selection_id"]), str(sel.get("name", sel["selection_id"])))
                        ordered.append(info)
                        for provider, ref in dict(sel.get("ids", {})).items():
                            by_provider.setdefault(str(provider), {})[str(ref)] = info
                        if not sel.get("ids"):
                            raise bad(f"{mpath}.selections[{k}].ids", "at least one provider id")
                    self.markets[market_id] = MarketInfo(
                        market_id,
                        event_id,
                        str(mk.get("market_type", "")),
                        str(mk.get("name", market_id)),
                        by_provider,
                        tuple(ordered),
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

    @staticmethod
    def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        """``extra``'s events replace ``base``'s with the same event id; others are kept."""
        events = {str(e["event_id"]): e for e in base.get("events", [])}
        for e in extra.get("events", []):
            events[str(e["event_id"])] = e
        return {"events": list(events.values())}


class FeedMappingService:
    """Loads/saves the mapping document and keeps the in-process table current."""

    def __init__(self, store: FeedMappingStore) -> None:
        self.store = store
        self.table = MappingTable()
        self._version: int | None = None

    async def refresh(self) -> MappingTable:
        version = await self.store.version()  # read before the document: a save in between is seen next time
        doc = await self.store.load()
        self.table = MappingTable(doc)
        self._version = version
        return self.table

    async def refresh_if_changed(self) -> bool:
        """Reloads the table when another process (the mapping CLI) stored a new one; True if it did."""
        if await self.store.version() == self._version:
            return False
        await self.refresh()
        return True

    async def load(self, document: dict[str, Any], replace: bool = False) -> MappingTable:
        """Validates and stores ``document`` (merged into the stored one unless ``replace``)."""
        MappingTable(document)  # validate before storing
        if not replace:
            current = await self.store.load() or {"events": []}
            document = MappingTable.merged(current, document)
        table = MappingTable(document)
        await self.store.save(document)
        self.table = table
        self._version = await self.store.version()
        return table
