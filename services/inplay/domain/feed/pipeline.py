"""The feed pipeline: reception -> validation -> normalization -> enrichment -> cache + Kafka.

Work is done per chunk of messages (``FeedRules.chunk_size``): every message of the chunk is parsed and
judged in order (sequence/duplicate tracking, routing and price-jump history are sequential state). The
resulting cache operations run as few Lua calls as possible, in message order: each 100 messages' price
writes in one call, sent while the rest is judged and several in flight at once (``send_prices``:
:class:`_ChunkWrites`), status changes (bet stop, incidents) in one ``write_status`` call. Then the chunk's
Kafka records (one odds record per update, carrying its change entries, and one
reception-log record per provider) and change-log rows go to the outbox, shipped in the background while the
next chunk is judged.

- reception: every message, valid or not, goes to ``inplay.feed.raw.v1`` (key = provider; one record per
  provider per chunk) with its sequence (-1 when unreadable) and receive time — append-only;
- validation: schema/types, timestamps (missing, too far in the future), odds > 1.0, duplicates,
  sequence gaps (an anomaly: counted, feeds failover, the message is still applied when valid);
- normalization: provider ids -> internal ids through the mapping table (UNMAPPED otherwise), exact odds;
- enrichment: market metadata, active-provider routing (STANDBY for the other provider), feed lag and
  price-jump checks (-> the write keeps the market SUSPENDED with FEED_LAG / PRICE_JUMP);
- cache: versioned write in Redis (older provider timestamps -> STALE_VERSION, settled -> MARKET_SETTLED),
  publish to the event channel in the same script; odds to ``inplay.odds.v1`` (key = market id); changes to
  the market change log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge

from inplay.core import JumpBand, Odds
from inplay.domain.feed import fastjson
from inplay.domain.feed.health import (
    DOWN,
    GAPS,
    HEARTBEAT_TIMEOUT,
    RECOVERING,
    RESET,
    UP,
    Checkpoint,
    FeedRouter,
    ProviderHealth,
    Switch,
)
from inplay.domain.feed.mapping import EventInfo, FeedMappingService, MappingTable, MarketInfo
from inplay.domain.feed.messages import (
    BET_STOP,
    DUPLICATE,
    END,
    HEARTBEAT,
    INCIDENT,
    MARKET_SETTLED,
    ODDS_INVALID,
    PRICES,
    SCHEMA,
    SEQUENCE_GAP,
    SNAPSHOT_COMPLETE,
    STALE_VERSION,
    STANDBY,
    TIMESTAMP_FUTURE,
    UNKNOWN_PROVIDER,
    UNMAPPED,
    ProviderMessage,
    Rejected,
)
from inplay.domain.feed.providers import ProviderAdapter, default_adapters
from inplay.domain.feed.rules import FeedRules
from inplay.domain.markets import (
    FEED_LAG,
    MATCH_END,
    PRICE_JUMP,
    PROVIDER_DISCONNECT,
    PROVIDER_DOWN,
    MarketControl,
    changes_between,
)
from inplay.model import MarketChange, MarketState, SelectionPrice
from inplay.ports import (
    TOPIC_FEED_RAW,
    TOPIC_ODDS,
    BusMessage,
    EventBus,
    FeedStateStore,
    FeedStateView,
    LiveOddsCache,
    PriceWrite,
    SentPrices,
    WriteResult,
)

log = logging.getLogger("inplay.feed")

FEED_MESSAGES = PromCounter("inplay_feed_messages_total", "Feed messages by provider and outcome", ["outcome"])
FEED_REJECTED = PromCounter("inplay_feed_rejected_total", "Feed messages rejected by reason", ["reason"])
FEED_ANOMALIES = PromCounter("inplay_feed_anomalies_total", "Feed anomalies (not rejections)", ["reason"])
FEED_SWITCHES = PromCounter("inplay_feed_provider_switches_total", "Provider failovers/fail-backs", ["cause"])
FEED_CLOCK_AHEAD = Gauge(
    "inplay_feed_clock_ahead_ms",
    "How far the last accepted message's provider timestamp was ahead of its receive time (0 = not ahead)",
    ["provider"],
)
FEED_PRODUCER = Gauge("inplay_feed_producer_up", "Producer status: 1 up, 0.5 recovering, 0 down", ["provider"])
_PRODUCER_GAUGE = {UP: 1.0, RECOVERING: 0.5, DOWN: 0.0}
# Recovery requests to the provider adapters (connectors), key = provider:
# {"provider", "since_ms", "request_id"}; the connector replays from since_ms, then sends its snapshot-complete
# message with request_id.
TOPIC_FEED_RECOVERY = "inplay.feed.recovery.v1"
FEED_OUTBOX = Gauge("inplay_feed_outbox_pending", "Change-log rows and Kafka messages waiting for a retry", ["kind"])

# Anomalies (counted, logged; the message is still applied).
SEQUENCE_RESET = RESET  # a provider restarted its sequence numbers (new session): duplicate window cleared
TIMESTAMP_AHEAD = "TIMESTAMP_AHEAD"  # provider time ahead of receive time by more than the tolerance
# Messages kept for a retry when the change log or Kafka fails after the cache write (beyond: oldest dropped).
OUTBOX_MAX = 200_000
# Entries queued but not yet shipped beyond which a chunk waits for the stores (about 4 chunks of 500 updates:
# bounds memory and how far Kafka and the change log trail the cache).
SHIP_BACKLOG = 5_000
# Messages judged between two sends of a chunk's cache writes (_ChunkWrites): Redis runs a part while the next
# is judged. Measured (docs/odds-pipeline.md, sixth round): the pipeline is on CPU 81 % of the wall time, not 75 %.
SEND_EVERY = 100
# Largest reception-log record (the producer's message.max.bytes is 1 000 000).
RAW_RECORD_BYTES = 512 * 1024


# Price-jump memory per market: the updates of the last window, at most this many (a live market moves every
# few hundred ms, 8 distinct price sets cover a 2 s window; a burstier feed compares against the latest 8).
JUMP_HISTORY = 8


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class RawMessage:
    provider: str
    payload: bytes
    # When the connector received it (its clock): feed lag and the timestamp clamp are measured against it.
    received_at_ms: int
    # When this server got it (server clock; 0 = received_at_ms): liveness and routing are on the clock of the
    # watchdog, so a connector clock behind or ahead of the server's neither flaps nor delays disconnects.
    arrived_ms: int = 0


@dataclass
class IngestSummary:
    received: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    anomalies: Counter[str] = field(default_factory=Counter)

    def merge(self, other: IngestSummary) -> None:
        self.received += other.received
        self.accepted += other.accepted
        self.rejected.update(other.rejected)
        self.anomalies.update(other.anomalies)


@dataclass
class _PriceOp:
    write: PriceWrite
    index: int
    band_token: int  # the update in the jump band (committed with the chunk when its write was applied)


@dataclass
class _StatusOp:
    market_ids: tuple[str, ...]
    reason: str
    source: str
    source_ts_ms: int
    index: int
    provider_ts_ms: int = 0


@dataclass
class _ResumeOp:
    market_ids: tuple[str, ...]
    reason: str
    source: str


@dataclass
class _SwitchOp:
    switch: Switch
    event: EventInfo
    suspend: bool


_Op = _PriceOp | _StatusOp | _SwitchOp | _ResumeOp


# A placeholder of _parse_chunk's list (every slot is filled before it is returned).
_UNPARSED = Rejected(SCHEMA, "not parsed")

# Cache outcomes of a price write that reject its message (else STALE_VERSION).
_REJECTED_WRITE = {"SETTLED": MARKET_SETTLED, "STANDBY": STANDBY}

# One encoder for every message: json.dumps with keyword arguments builds a new encoder per call.
_compact = fastjson.dumps


def raw_entry(raw: RawMessage, seq: int) -> dict[str, object]:
    """One received message as logged: sequence (-1 if unreadable), receive time, payload as received."""
    try:
        return {"sequence": seq, "received_at_ms": raw.received_at_ms, "payload": raw.payload.decode("utf-8")}
    except UnicodeDecodeError:
        return {
            "sequence": seq,
            "received_at_ms": raw.received_at_ms,
            "payload_b64": base64.b64encode(raw.payload).decode(),
        }


def raw_records(topic: str, received: Sequence[tuple[RawMessage, int]]) -> list[BusMessage]:
    """The reception log of a chunk: one ``inplay.feed.raw.v1`` record per provider (key provider), its
    messages in arrival order: ``{"source", "messages": [{"sequence", "received_at_ms", "payload"}, ...]}``.
    One record per chunk instead of one per message; a record above ``RAW_RECORD_BYTES`` is split in two
    (payloads are at most 128 KiB each, so a record of one message always fits the producer's 1 MB)."""
    by_provider: dict[str, list[dict[str, object]]] = {}
    for raw, seq in received:
        by_provider.setdefault(raw.provider, []).append(raw_entry(raw, seq))
    out: list[BusMessage] = []
    for provider, entries in by_provider.items():
        out += _raw_parts(topic, provider, entries)
    return out


def _raw_parts(topic: str, provider: str, entries: list[dict[str, object]]) -> list[BusMessage]:
    value = _compact({"source": provider, "messages": entries})
    if len(value) <= RAW_RECORD_BYTES or len(entries) == 1:
        return [BusMessage(topic, provider, value)]
    half = len(entries) // 2
    return _raw_parts(topic, provider, entries[:half]) + _raw_parts(topic, provider, entries[half:])


class _ChunkWrites:
    """The cache writes of one chunk, in op order.

    - A run of price writes is sent as soon as it is decided (:meth:`LiveOddsCache.send_prices`), without
      waiting for the answer of the run before: Redis runs each run while the pipeline judges the next,
      and the runs still run in the order sent.
    - Any other op (a status change, a resume, a provider switch) runs when :meth:`wait` reaches it, after
      every earlier answer was read; price writes decided after it are sent after it. An op that changes
      this pod's routing (a provider switch) is never sent before the whole chunk is judged.
    - Results (states, change entries, outcomes) are taken in op order, in :meth:`wait`. The price-jump
      history commits are collected for the end of the chunk (``commits``), so the history a message is
      judged against is the same however the chunk was split.
    - A failure: nothing not yet sent is sent after it; a run already sent is still read, and its results
      are taken (it ran); :meth:`wait` raises the first failure.
    """

    def __init__(self, pipeline: FeedPipeline, outcome: list[str] | None) -> None:
        self._pipeline = pipeline
        self.outcome = outcome
        self.at = pipeline.clock()
        self.states: list[MarketState] = []
        self.changes: list[MarketChange] = []
        self.commits: list[int] = []  # jump-band tokens of the applied price writes, in op order
        self.sent = 0  # ops[:sent] are handed over (sent, or queued behind an op that runs in wait)
        self._steps: list[tuple[list[_PriceOp], SentPrices | None] | _Op] = []
        self._held_back = False  # an op waits for wait(): the price writes after it wait too
        self._failure: BaseException | None = None

    async def send_ready(self, ops: Sequence[_Op]) -> bool:
        """Sends the ops decided since the last send, up to the first provider switch; whether it sent."""
        end = self.sent
        while end < len(ops) and not isinstance(ops[end], _SwitchOp):
            end += 1
        if end == self.sent:
            return False
        await self.send(ops[self.sent : end])
        return True

    async def send(self, ops: Sequence[_Op]) -> None:
        self.sent += len(ops)
        i = 0
        while i < len(ops):
            op = ops[i]
            if not isinstance(op, _PriceOp):
                self._held_back = True
                self._steps.append(op)
                i += 1
                continue
            j = i
            while j < len(ops) and isinstance(ops[j], _PriceOp):
                j += 1
            run = cast(list[_PriceOp], list(ops[i:j]))
            self._steps.append((run, None if self._held_back else await self._send_prices(run)))
            i = j

    async def _send_prices(self, run: list[_PriceOp]) -> SentPrices | None:
        if self._failure is not None:
            return None
        try:
            return await self._pipeline.cache.send_prices([o.write for o in run])
        except Exception as exc:
            self._failure = exc
            return None

    async def wait(self) -> None:
        """Runs what waited, reads every answer and takes the results, in op order; raises the first failure.
        After an op that waited, the price writes up to the next such op are sent together."""
        steps, self._steps, self._held_back = self._steps, [], False
        pipeline = self._pipeline
        for k, step in enumerate(steps):
            if not isinstance(step, tuple):
                if self._failure is None:
                    try:
                        await pipeline._apply_op(step, self)
                    except Exception as exc:
                        self._failure = exc
                later = k + 1
                while later < len(steps) and isinstance(queued := steps[later], tuple):
                    steps[later] = (queued[0], await self._send_prices(queued[0]))
                    later += 1
                continue
            run, sent = step
            if sent is None:  # not sent: a failure came first
                continue
            try:
                results = await sent.results()
            except Exception as exc:
                if self._failure is None:
                    self._failure = exc
                continue
            self._take(run, results)
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _take(self, run: list[_PriceOp], results: Sequence[WriteResult]) -> None:
        """The results of a run of price writes: a message is accepted when at least one of its markets was
        written."""
        at = self.at
        written: dict[int, str] = {}
        for o, res in zip(run, results, strict=True):
            if res.applied and res.after is not None:
                written[o.index] = ""
                self.commits.append(o.band_token)
                self.states.append(res.after)
                self.changes += changes_between(res.before, res.after, o.write.source, "", at)
            elif o.index not in written:
                # STANDBY: another pod switched the event (this pod adopts it on its next chunk)
                written[o.index] = _REJECTED_WRITE.get(res.outcome, STALE_VERSION)
        if self.outcome is not None:
            for idx, reason in written.items():
                self.outcome[idx] = reason


@dataclass(slots=True)
class _Prepared:
    """A chunk parsed ahead, with the shared-state view it needs requested ahead (``load``, already running
    in Redis while the previous chunk is judged). ``routes`` and ``table``: this pod's route-change count and
    mapping table when it was requested (:meth:`FeedPipeline._sync` asks again if either moved)."""

    parsed: list[ProviderMessage | Rejected]
    request: tuple[list[str], dict[str, list[tuple[int, int]]], list[str]] | None
    load: asyncio.Task[FeedStateView] | None
    routes: int
    table: MappingTable


def _discard(task: asyncio.Task[Any]) -> None:
    """A task whose result nobody will read: cancelled, and its failure (if it ended with one) retrieved so
    it is not reported as never retrieved. A prepared chunk's view request is cancelled with it."""

    def retrieve(t: asyncio.Task[Any]) -> None:
        if t.cancelled():
            return
        result = t.result() if t.exception() is None else None
        if isinstance(result, _Prepared) and result.load is not None:
            _discard(result.load)

    task.cancel()
    task.add_done_callback(retrieve)


class FeedPipeline:
    """Stateful ingestion (one instance per ingest process; chunks are processed one at a time)."""

    def __init__(
        self,
        cache: LiveOddsCache,
        bus: EventBus,
        mappings: FeedMappingService,
        control: MarketControl,
        rules: FeedRules | None = None,
        topic_prefix: str = "",
        clock: Callable[[], int] = now_ms,
        adapters: dict[str, ProviderAdapter] | None = None,
    ) -> None:
        self.cache = cache
        self.bus = bus
        self.mappings = mappings
        self.control = control
        self.rules = rules or FeedRules()
        self.router = FeedRouter(self.rules)
        # Routing, provider health and duplicate windows shared with every other ingest pod (H6).
        self.state: FeedStateStore = cache
        # Providers whose sequence numbers restarted in this chunk (the shared window restarts too).
        self._resets: set[str] = set()
        # Providers whose producer status changed (saved to the shared state with the next save).
        self._dirty: set[str] = set()
        # Route changes made by this pod (switches, rollbacks): a view requested before one is asked again.
        self._route_changes = 0
        self.clock = clock
        self.adapters = adapters if adapters is not None else default_adapters()
        self._topic_raw = topic_prefix + TOPIC_FEED_RAW
        self._topic_odds = topic_prefix + TOPIC_ODDS
        self._topic_recovery = topic_prefix + TOPIC_FEED_RECOVERY
        # Recovery requests decided while judging a chunk (sent with its Kafka messages, through the outbox).
        self._requests: list[BusMessage] = []
        self._lock = asyncio.Lock()
        # Per market: the applied prices of the jump window, and this chunk's updates (the Rust core's band;
        # tests/reference/jump_band.py is its pure-Python reference).
        self._band = JumpBand(self.rules.jump_band_bp, self.rules.jump_window_ms, JUMP_HISTORY)
        # Events whose markets were suspended for PROVIDER_DISCONNECT (once per episode).
        self._disconnected: set[str] = set()
        # Change-log rows and Kafka messages of stored chunks not yet confirmed (retried on the next chunk or
        # watchdog tick): a change-log or Kafka failure after the cache write loses nothing.
        self._out_changes: list[MarketChange] = []
        self._out_bus: list[BusMessage] = []
        self.totals = IngestSummary()
        self._ahead_gauges: dict[str, Gauge] = {}
        self._ahead_last: dict[str, int] = {}
        # The outbox is shipped by one background task at a time (the lock keeps a drain from sending the
        # same entries twice).
        self._shipper: asyncio.Task[None] | None = None
        self._saving: asyncio.Task[None] | None = None
        self._ship_lock = asyncio.Lock()
        self._watchdog: asyncio.Task[None] | None = None

    # --- entry points --------------------------------------------------------------------------------------

    async def ingest(self, raws: Sequence[RawMessage], *, drain: bool = True) -> IngestSummary:
        """Judges and caches ``raws`` chunk by chunk. Their change-log rows and Kafka messages are shipped in the
        background while the next chunk is judged; ``drain`` (default) waits until they are all stored and
        acknowledged, and the shared feed state saved (raises if the change log or Kafka failed: they stay in
        the outbox for a retry)."""
        summary = IngestSummary()
        size = max(1, self.rules.chunk_size)
        chunks = [raws[start : start + size] for start in range(0, len(raws), size)]
        ahead = self._prepare_soon(chunks[0]) if chunks else None
        try:
            for k, chunk in enumerate(chunks):
                assert ahead is not None
                prepared = await ahead
                # The next chunk is parsed (pure: no state) and its shared view requested while this one is
                # judged and written (_Prepared).
                ahead = self._prepare_soon(chunks[k + 1]) if k + 1 < len(chunks) else None
                async with self._lock:
                    await self._process(chunk, summary, prepared)
        finally:
            if ahead is not None:  # a chunk failed: the rest is the connector's to send again
                _discard(ahead)
        self.totals.merge(summary)
        if drain:
            await self.drain()
        return summary

    def _prepare_soon(self, chunk: Sequence[RawMessage]) -> asyncio.Task[_Prepared]:
        async def prepare() -> _Prepared:
            parsed = self._parse_chunk(chunk)
            request = self._view_request(parsed)
            load = asyncio.create_task(self.state.load_feed_state(*request)) if request is not None else None
            return _Prepared(parsed, request, load, self._route_changes, self.mappings.table)

        return asyncio.create_task(prepare())

    async def tick(self, now: int | None = None) -> None:
        """Watchdog step: failover/fail-back on health, PROVIDER_DISCONNECT suspension on heartbeat loss."""
        async with self._lock:
            t = self.clock() if now is None else now
            ops: list[_Op] = []
            watched = [
                event
                for event in self.mappings.table.events.values()
                if any(self.router.provider(p).last_seen_ms for p in event.providers)  # never fed: not watched
            ]
            if watched:
                await self._load_shared(set(self.router.health), {}, {e.event_id for e in watched})
            cp = self._checkpoint()
            for event in watched:
                self._route_health(event, t, ops)
            self._producers_down(t, ops)
            self._recoveries_overdue(t)
            await self._execute(ops, self._take_requests(), None, cp)
            await self._save(cp)

    async def run_watchdog(self) -> None:
        interval = self.rules.watchdog_interval_ms / 1000
        refreshed = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                if (time.monotonic() - refreshed) * 1000 >= self.rules.mapping_refresh_ms:
                    refreshed = time.monotonic()
                    if await self.mappings.refresh_if_changed():
                        log.info("feed mapping reloaded", extra={"events": len(self.mappings.table.events)})
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("feed watchdog step failed")

    def start(self) -> None:
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self.run_watchdog(), name="feed-watchdog")
        self.mappings.start()  # fixture and mapping changes of other processes, as they are written (H7)

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        await self.mappings.stop()
        try:
            await self.drain()
        except Exception:  # kept in memory only: logged (the cache holds the states; see docs)
            log.exception("feed outbox not shipped at stop", extra={"pending": len(self._out_bus)})

    # --- per chunk -----------------------------------------------------------------------------------------

    async def _process(self, chunk: Sequence[RawMessage], summary: IngestSummary, prepared: _Prepared) -> None:
        parsed = prepared.parsed
        received: list[tuple[RawMessage, int]] = []
        ops: list[_Op] = []
        self._band.clear_pending()
        self._resets.clear()
        await self._sync(prepared)
        cp = self._checkpoint()
        outcome: list[str] = [""] * len(chunk)  # "" = accepted, else the rejection reason
        writes = _ChunkWrites(self, outcome)
        try:
            await self._judge(chunk, parsed, received, ops, outcome, summary, writes)
        except BaseException:  # not a rejection: the chunk fails whole, as a cache error does
            await self._execute(ops[: writes.sent], [], outcome, cp, writes)
            self._rollback(cp)
            raise
        bus_out = raw_records(self._topic_raw, received) + self._take_requests()
        await self._execute(ops, bus_out, outcome, cp, writes)
        self._save_soon(cp)
        summary.received += len(chunk)
        for reason in outcome:
            if reason:
                summary.rejected[reason] += 1
                FEED_REJECTED.labels(reason).inc()
            else:
                summary.accepted += 1
        FEED_MESSAGES.labels("accepted").inc(sum(1 for r in outcome if not r))
        FEED_MESSAGES.labels("rejected").inc(sum(1 for r in outcome if r))
        self._publish_ahead()

    async def _judge(
        self,
        chunk: Sequence[RawMessage],
        parsed: list[ProviderMessage | Rejected],
        received: list[tuple[RawMessage, int]],
        ops: list[_Op],
        outcome: list[str],
        summary: IngestSummary,
        writes: _ChunkWrites,
    ) -> None:
        """Judges the chunk's messages in order; every ``SEND_EVERY`` messages the cache writes decided so
        far are sent (:class:`_ChunkWrites`), so Redis runs them while the next ones are judged."""
        for i, (raw, item) in enumerate(zip(chunk, parsed, strict=True)):
            if i and i % SEND_EVERY == 0 and await writes.send_ready(ops):
                await asyncio.sleep(0)  # the answers' reader, the outbox and the next chunk's parse run
            seq = -1
            try:
                if isinstance(item, Rejected):
                    raise item
                seq = item.seq
                received.append((raw, seq))
                self._accept(item, raw, i, ops, summary)
            except Rejected as rej:
                if seq < 0:
                    seq = rej.seq
                    received.append((raw, seq))
                    if seq >= 0 and raw.provider in self.adapters:  # unreadable past its seq: still tracked
                        arrived = raw.arrived_ms or raw.received_at_ms
                        self._track(self.router.provider(raw.provider), seq, -1, arrived, summary)
                outcome[i] = rej.reason
                log.info(
                    "feed message rejected",
                    extra={"provider": raw.provider, "reason": rej.reason, "detail": rej.detail, "seq": seq},
                )

    def _parse_chunk(self, chunk: Sequence[RawMessage]) -> list[ProviderMessage | Rejected]:
        """Every message of the chunk parsed, in order: each provider's messages in one adapter call."""
        by_provider: dict[str, list[int]] = {}
        for i, raw in enumerate(chunk):
            by_provider.setdefault(raw.provider, []).append(i)
        parsed: list[ProviderMessage | Rejected] = [_UNPARSED] * len(chunk)
        for provider, indexes in by_provider.items():
            adapter = self.adapters.get(provider)
            if adapter is None:
                for i in indexes:
                    parsed[i] = Rejected(UNKNOWN_PROVIDER, provider)
                continue
            for i, item in zip(indexes, adapter.parse_many([chunk[i].payload for i in indexes]), strict=True):
                parsed[i] = item
        return parsed

    def _view_request(
        self, parsed: Sequence[ProviderMessage | Rejected]
    ) -> tuple[list[str], dict[str, list[tuple[int, int]]], list[str]] | None:
        """What :meth:`_sync` asks the shared state for: the providers (every one known here: the other
        provider's health decides failover too), the chunk's (seq, ts) probes, its events; None: no probe."""
        probes: dict[str, list[tuple[int, int]]] = {}
        events: set[str] = set()
        providers: set[str] = set(self.router.health)
        refs: set[tuple[str, str]] = set()  # a chunk names each event many times: looked up once
        for item in parsed:
            if isinstance(item, Rejected):
                continue
            probe = probes.get(item.provider)
            if probe is None:
                probe = probes[item.provider] = []
            probe.append((item.seq, item.ts_ms))
            if item.kind != HEARTBEAT:
                refs.add((item.provider, item.event_ref))
        providers.update(probes)
        table = self.mappings.table
        for provider, ref in refs:
            if (event := table.event(provider, ref)) is not None:
                events.add(event.event_id)
                providers.update(event.providers)
        return (sorted(providers), probes, sorted(events)) if probes else None

    async def _sync(self, prepared: _Prepared) -> None:
        """One view before the chunk is judged: the providers' health and duplicate windows and the events'
        routes as every pod left them (H6), merged into this pod's view. The view requested ahead (while the
        previous chunk was judged) is used unless this pod changed a route or reloaded the mapping since it
        was requested: then it is asked again (a stale route would undo this pod's own switch). A view of
        the other pods a chunk older is as good as today's: the merge only moves times forward, and the
        Lua price write checks the route and the provider's order itself."""
        if prepared.request is None:
            return
        load = prepared.load
        if load is None or prepared.routes != self._route_changes or prepared.table is not self.mappings.table:
            if load is not None:
                _discard(load)
            request = self._view_request(prepared.parsed)
            if request is None:
                return
            load = asyncio.create_task(self.state.load_feed_state(*request))
        self._apply_view(await load)

    async def _load_shared(
        self, providers: set[str], probes: dict[str, list[tuple[int, int]]], events: set[str]
    ) -> None:
        self._apply_view(await self.state.load_feed_state(sorted(providers), probes, sorted(events)))

    def _apply_view(self, view: FeedStateView) -> None:
        for name, shared in view.providers.items():
            health = self.router.provider(name)
            health.merge(shared)
            if view.seen.get(name):
                health.remember(view.seen[name])
        for event_id, active in view.active.items():
            if active:
                self.router.active[event_id] = active
            else:  # never switched: the primary
                self.router.active.pop(event_id, None)

    async def _save(self, cp: tuple[dict[str, Checkpoint], dict[str, str], set[str]]) -> None:
        self._save_soon(cp)
        await self._saved()

    def _save_soon(self, cp: tuple[dict[str, Checkpoint], dict[str, str], set[str]]) -> None:
        """After the chunk's cache writes: this pod's view of the providers it heard from, for the others,
        taken now and sent in the background (after the previous save: one at a time, in order) while the
        next chunk is judged. A failure is logged, not raised: the cache holds the chunk (a retry would be a
        DUPLICATE here), and the next chunk saves the newer view. ``drain`` (so ``ingest`` by default, and
        IngestOdds before it answers) and ``tick`` wait for the saves, so another pod reads them right after."""
        health, _, _ = cp
        seen = {name: h.tracked_since(health.get(name)) for name, h in self.router.health.items()}
        touched = [self.router.health[name] for name, keys in seen.items() if keys or name in self._dirty]
        self._dirty.clear()
        if not touched:
            return
        view = ([h.liveness() for h in touched], seen, set(self._resets))
        previous = self._saving

        async def save() -> None:
            if previous is not None:
                await previous
            try:
                await self.state.save_feed_state(*view)
            except Exception:
                log.warning("shared feed state not saved", exc_info=True)

        self._saving = asyncio.create_task(save())

    async def _saved(self) -> None:
        if self._saving is not None:
            await self._saving
            self._saving = None

    def _accept(
        self, msg: ProviderMessage, raw: RawMessage, index: int, ops: list[_Op], summary: IngestSummary
    ) -> None:
        """Validation, normalization and enrichment of one parsed message; appends its cache operations."""
        received = raw.received_at_ms
        arrived = raw.arrived_ms or received
        health = self.router.provider(msg.provider)
        if (verdict := health.track(msg.seq, msg.ts_ms, arrived)) and self._verdict(health, msg.seq, verdict, summary):
            raise Rejected(DUPLICATE, f"seq {msg.seq}")
        ahead = msg.ts_ms - received
        rules = self.rules
        if ahead > rules.max_future_ms:
            raise Rejected(TIMESTAMP_FUTURE, f"ts {msg.ts_ms} is {ahead} ms ahead")
        self._ahead_last[msg.provider] = ahead  # the gauge takes the chunk's last value (_publish_ahead)
        if ahead > rules.clock_ahead_tolerance_ms:
            summary.anomalies[TIMESTAMP_AHEAD] += 1
            FEED_ANOMALIES.labels(TIMESTAMP_AHEAD).inc()
        # The provider time, clamped to the receive time: a clock running ahead neither pushes the market
        # watermark into the future nor makes a price look younger than it is (age = now - updated_at).
        ts = min(msg.ts_ms, received, arrived)  # nor a connector clock running ahead of the server's
        lag = max(0, received - ts)
        if msg.kind in (HEARTBEAT, SNAPSHOT_COMPLETE):
            health.alive(arrived, abs(ahead), self.rules)
            self._recover(health, arrived)
            if msg.kind == SNAPSHOT_COMPLETE:
                self._snapshot_complete(health, msg.request_id, arrived, ops)
            return
        table = self.mappings.table
        event = table.event(msg.provider, msg.event_ref)
        if event is None or msg.provider not in event.providers:
            raise Rejected(UNMAPPED, f"event {msg.event_ref!r} of {msg.provider}")
        if msg.kind == PRICES:
            priced = self._normalize_prices(msg, event, summary)
        elif msg.kind == BET_STOP and msg.market_refs:
            stop_ids = self._normalize_refs(msg, event, summary)
        health.alive(arrived, abs(ahead), self.rules)  # only a valid message is a sign of life
        if health.producer == DOWN:
            self._recover(health, arrived)
        if self._route_health(event, arrived, ops) != msg.provider:
            if msg.kind in (BET_STOP, INCIDENT):
                # Any provider's stop or incident suspends (the first to report a goal closes the past-posting
                # window); only the active provider's fresh prices reopen.
                self._suspend_op(
                    stop_ids if msg.market_refs else list(event.market_ids),
                    msg.incident or BET_STOP,
                    msg,
                    ts,
                    index,
                    ops,
                )
                return
            raise Rejected(STANDBY, f"{msg.provider} is standby for {event.event_id}")
        self._disconnected.discard(event.event_id)
        if msg.kind == PRICES:
            self._prices(msg, health, event, priced, ts, lag, index, ops)
        elif msg.kind == BET_STOP:
            self._suspend_op(stop_ids if msg.market_refs else list(event.market_ids), BET_STOP, msg, ts, index, ops)
        elif msg.kind == INCIDENT:
            self._suspend_op(list(event.market_ids), msg.incident, msg, ts, index, ops)
        elif msg.kind == END:
            self._suspend_op(list(event.market_ids), MATCH_END, msg, ts, index, ops)

    def _publish_ahead(self) -> None:
        """Sets the clock-ahead gauge once per chunk and provider (a gauge set per message costs a lock)."""
        for provider, ahead in self._ahead_last.items():
            gauge = self._ahead_gauges.get(provider)
            if gauge is None:  # labels() costs a lock and a tuple per call: one child per provider, kept
                gauge = self._ahead_gauges[provider] = FEED_CLOCK_AHEAD.labels(provider)
            gauge.set(max(0, ahead))
        self._ahead_last.clear()

    def _partial(self, msg: ProviderMessage, skipped: list[Rejected], summary: IngestSummary) -> None:
        """Parts of a message that could not be used (the rest is applied): counted as anomalies."""
        for rej in skipped:
            summary.anomalies[rej.reason] += 1
            FEED_ANOMALIES.labels(rej.reason).inc()
            log.warning(
                "feed message partly unusable",
                extra={"provider": msg.provider, "seq": msg.seq, "reason": rej.reason, "detail": rej.detail},
            )

    def _normalize_refs(self, msg: ProviderMessage, event: EventInfo, summary: IngestSummary) -> list[str]:
        """The mapped markets a bet stop names. Unmapped refs (markets the book does not offer) are anomalies:
        the mapped ones are still suspended; only a stop naming no mapped market is UNMAPPED."""
        ids: list[str] = []
        skipped: list[Rejected] = []
        for ref in msg.market_refs:
            market = self.mappings.table.market(msg.provider, ref)
            if market is None or market.event_id != event.event_id:
                skipped.append(Rejected(UNMAPPED, f"market {ref!r} of {msg.provider}"))
            else:
                ids.append(market.market_id)
        if not ids:
            raise skipped[0]
        self._partial(msg, skipped, summary)
        return ids

    def _normalize_prices(
        self, msg: ProviderMessage, event: EventInfo, summary: IngestSummary
    ) -> list[tuple[MarketInfo, tuple[SelectionPrice, ...]]]:
        """Mapped markets with their selections in mapping order. An unusable market (unmapped, incomplete)
        is an anomaly and the others are applied; a message with no usable market is rejected for it."""
        out: list[tuple[MarketInfo, tuple[SelectionPrice, ...]]] = []
        skipped: list[Rejected] = []
        table = self.mappings.table
        for pm in msg.markets:
            try:
                market = table.market(msg.provider, pm.ref)
                if market is None or market.event_id != event.event_id:
                    raise Rejected(UNMAPPED, f"market {pm.ref!r} of {msg.provider}")
                out.append((market, self._selections(msg.provider, market, pm.prices)))
            except Rejected as rej:
                skipped.append(rej)
        if not out:
            raise skipped[0] if skipped else Rejected(SCHEMA, "no market")
        if skipped:
            self._partial(msg, skipped, summary)
        return out

    def _track(self, health: ProviderHealth, seq: int, ts: int, received: int, summary: IngestSummary) -> str:
        """Sequence tracking (duplicates, gaps, restarts); returns the verdict of :meth:`ProviderHealth.track`."""
        verdict = health.track(seq, ts, received)
        if verdict:
            self._verdict(health, seq, verdict, summary)
        return verdict

    def _verdict(self, health: ProviderHealth, seq: int, verdict: str, summary: IngestSummary) -> bool:
        """Counts a sequence verdict other than "in order"; True for a duplicate (the message is rejected)."""
        if verdict == GAPS:
            summary.anomalies[SEQUENCE_GAP] += 1
            FEED_ANOMALIES.labels(SEQUENCE_GAP).inc()
            log.warning("feed sequence gap", extra={"provider": health.name, "seq": seq})
        elif verdict == RESET:
            self._resets.add(health.name)
            summary.anomalies[SEQUENCE_RESET] += 1
            FEED_ANOMALIES.labels(SEQUENCE_RESET).inc()
            log.warning("feed sequence restarted (new provider session)", extra={"provider": health.name, "seq": seq})
        return verdict == DUPLICATE

    def _suspend_op(
        self, ids: list[str], reason: str, msg: ProviderMessage, ts: int, index: int, ops: list[_Op]
    ) -> None:
        for mid in ids:  # the next prices start a new band
            self._band.forget(mid)
        ops.append(_StatusOp(tuple(ids), reason, msg.provider, ts, index, msg.ts_ms))

    def _prices(
        self,
        msg: ProviderMessage,
        health: ProviderHealth,
        event: EventInfo,
        priced: list[tuple[MarketInfo, tuple[SelectionPrice, ...]]],
        ts: int,
        lag: int,
        index: int,
        ops: list[_Op],
    ) -> None:
        """``ts``: the clamped provider time (watermark and ``updated_at``); the provider's own time still
        orders this provider's messages (``provider_ts_ms``) and the jump window."""
        threshold = self.rules.lag_inplay_ms if event.in_play else self.rules.lag_prematch_ms
        # A producer down or recovering: its prices are stored, its markets stay suspended until the snapshot
        # is complete.
        held = PROVIDER_DOWN if health.producer != UP else ""
        route = event.primary if event.secondary else ""
        for market, selections in priced:
            reason = held or (FEED_LAG if lag > threshold else "")
            jumped, token = self._band.check(
                market.market_id, msg.ts_ms, [(p.selection_id, p.odds.num, p.odds.den) for p in selections]
            )
            if jumped and not reason:
                reason = PRICE_JUMP
            write = PriceWrite(  # positional (keywords cost ~30 % more per call), in field order
                market.market_id,
                event.event_id,
                event.sport,
                market.market_type,
                market.name,
                event.in_play,
                selections,
                ts,  # source_ts_ms
                ts,  # updated_at_ms
                msg.provider,  # source
                reason,  # suspend_reason
                msg.correction,
                msg.ts_ms,  # provider_ts_ms
                route,  # route_primary
            )
            ops.append(_PriceOp(write, index, token))

    def _selections(
        self, provider: str, market: MarketInfo, prices: tuple[tuple[str, Odds], ...]
    ) -> tuple[SelectionPrice, ...]:
        """The market's selections in mapping order, each with its price: every ref mapped (else UNMAPPED, the
        first unmapped one), every selection priced (else SCHEMA; a ref given twice: the last price), and no
        odds above ``max_odds`` (L5: a feed error, e.g. a misplaced decimal point, is never offered)."""
        slots = market.slots.get(provider, {})
        n = len(market.ordered)
        priced: list[SelectionPrice | None] = [None] * n
        filled = 0
        for ref, odds in prices:
            slot = slots.get(ref)
            if slot is None:
                raise Rejected(UNMAPPED, f"selection {ref!r} of market {market.market_id}")
            position, info = slot
            if priced[position] is None:
                filled += 1
            priced[position] = SelectionPrice(info.selection_id, info.name, odds)
        if filled != n:
            raise Rejected(SCHEMA, f"market {market.market_id}: {filled} of {n} selections")
        limit = self.rules.max_odds
        for s in priced:
            if s is not None and s.odds.num > limit * s.odds.den:
                raise Rejected(ODDS_INVALID, f"market {market.market_id}: {s.odds.decimal_str()} > {limit}")
        return tuple(cast(list[SelectionPrice], priced))

    # --- producer lifecycle -----------------------------------------------------------------------------------

    def producers(self) -> dict[str, dict[str, object]]:
        """Producer status per provider (AdminService, metrics)."""
        return {
            name: {
                "status": h.producer,
                "last_seen_ms": h.last_seen_ms,
                "down_since_ms": h.down_since_ms,
                "recovery_id": h.recovery_id,
            }
            for name, h in sorted(self.router.health.items())
        }

    def _active_markets(self, provider: str) -> tuple[str, ...]:
        """The markets for which ``provider`` is the active source (the events it is routed for)."""
        return tuple(
            mid
            for event in self.mappings.table.events.values()
            if provider in event.providers and self.router.active_for(event) == provider
            for mid in event.market_ids
        )

    def _producers_down(self, now: int, ops: list[_Op]) -> None:
        for h in self.router.health.values():
            if h.producer == UP and h.last_seen_ms and now - h.last_seen_ms > self.rules.producer_down_ms:
                h.set_producer(DOWN, now, down_since_ms=h.last_seen_ms)
                self._dirty.add(h.name)
                FEED_PRODUCER.labels(h.name).set(_PRODUCER_GAUGE[DOWN])
                markets = self._active_markets(h.name)
                log.warning("producer down", extra={"provider": h.name, "markets": len(markets)})
                if markets:
                    ops.append(_StatusOp(markets, PROVIDER_DOWN, "watchdog", 0, -1))

    def _recover(self, health: ProviderHealth, now: int) -> None:
        """The first valid message of a producer that was down: ask it for a recovery snapshot."""
        if health.producer != DOWN:
            return
        self._request_snapshot(health, now, "producer back: recovery snapshot requested")

    def _request_snapshot(self, health: ProviderHealth, now: int, why: str) -> None:
        """RECOVERING with a new request id, and the request to the provider adapter (through the outbox)."""
        health.set_producer(RECOVERING, now, uuid.uuid4().hex, health.down_since_ms)
        self._dirty.add(health.name)
        FEED_PRODUCER.labels(health.name).set(_PRODUCER_GAUGE[RECOVERING])
        request = {"provider": health.name, "since_ms": health.down_since_ms, "request_id": health.recovery_id}
        self._requests.append(BusMessage(self._topic_recovery, health.name, _compact(request)))
        log.warning(why, extra=request)

    def _recoveries_overdue(self, now: int) -> None:
        """A snapshot still not complete ``recovery_resend_ms`` after it was asked for is asked for again,
        from the same time, under a new request id (the old one's completion no longer reopens anything:
        only the newest request counts). Its markets stay PROVIDER_DOWN meanwhile."""
        for h in self.router.health.values():
            if h.producer == RECOVERING and now - h.producer_at_ms >= self.rules.recovery_resend_ms:
                self._request_snapshot(h, now, "recovery snapshot not complete: requested again")

    def _snapshot_complete(self, health: ProviderHealth, request_id: str, now: int, ops: list[_Op]) -> None:
        if health.producer != RECOVERING or request_id != health.recovery_id:
            log.info("snapshot complete ignored", extra={"provider": health.name, "request_id": request_id})
            return
        health.set_producer(UP, now)
        self._dirty.add(health.name)
        FEED_PRODUCER.labels(health.name).set(_PRODUCER_GAUGE[UP])
        markets = self._active_markets(health.name)
        log.warning("producer up: recovery complete", extra={"provider": health.name, "markets": len(markets)})
        if markets:
            ops.append(_ResumeOp(markets, PROVIDER_DOWN, f"{health.name}:recovery"))

    def _take_requests(self) -> list[BusMessage]:
        out, self._requests = self._requests, []
        return out

    def _route_health(self, event: EventInfo, now: int, ops: list[_Op]) -> str:
        """Failover and the active provider's silence for ``event`` at ``now``; returns the event's active
        provider after that."""
        switch = self.router.evaluate(event, now)
        if switch is not None:
            ops.append(_SwitchOp(switch, event, switch.cause == HEARTBEAT_TIMEOUT))
            if switch.cause == HEARTBEAT_TIMEOUT:
                self._disconnected.add(event.event_id)
            return switch.new
        name = self.router.active_for(event)
        active = self.router.provider(name)
        seen = active.last_seen_ms
        if not seen:
            return name
        if now - seen <= self.rules.heartbeat_timeout_ms:
            self._disconnected.discard(event.event_id)  # alive again (maybe seen by another pod)
        elif event.event_id not in self._disconnected:
            self._disconnected.add(event.event_id)
            ops.append(_StatusOp(event.market_ids, PROVIDER_DISCONNECT, "watchdog", 0, -1))
            log.warning(
                "active provider silent: event suspended",
                extra={"event_id": event.event_id, "provider": active.name},
            )
        return name

    # --- cache + bus ---------------------------------------------------------------------------------------

    def _checkpoint(self) -> tuple[dict[str, Checkpoint], dict[str, str], set[str]]:
        health = {name: h.checkpoint() for name, h in self.router.health.items()}
        return health, dict(self.router.active), set(self._disconnected)

    def _rollback(self, cp: tuple[dict[str, Checkpoint], dict[str, str], set[str]]) -> None:
        """The chunk's cache writes failed: forget its sequence numbers (the connector's retry must be applied,
        not rejected as DUPLICATE) and its routing decisions (a failover suspension is decided again)."""
        health, active, disconnected = cp
        self._route_changes += 1
        for name in list(self.router.health):
            if name in health:
                self.router.health[name].rollback(health[name])
            else:
                del self.router.health[name]
        self.router.active = active
        self._disconnected = disconnected

    async def _execute(
        self,
        ops: list[_Op],
        bus_out: list[BusMessage],
        outcome: list[str] | None,
        cp: tuple[dict[str, Checkpoint], dict[str, str], set[str]],
        writes: _ChunkWrites | None = None,
    ) -> None:
        """Cache writes in op order (the ones ``writes`` has not sent yet), then the change log and Kafka
        (through the outbox). A cache error rolls the chunk's sequence state back and is raised (the connector
        retries); whatever was already stored, and every raw message, still goes to the change log and Kafka.
        The price-jump history takes the applied writes after the whole chunk was judged, in op order."""
        writes = writes if writes is not None else _ChunkWrites(self, outcome)
        await writes.send(ops[writes.sent :])
        try:
            await writes.wait()
        except BaseException:
            self._rollback(cp)
            raise
        finally:
            self._band.commit(writes.commits)
            changes, states = writes.changes, writes.states
            self._queue_out(changes, bus_out + self.control.recorder.odds_messages(states, changes))
        if len(self._out_bus) + len(self._out_changes) > SHIP_BACKLOG:
            await self.drain()  # the stores fell behind: wait for them (bounded memory and lag)
        else:
            self._ship()

    def _queue_out(self, changes: list[MarketChange], bus_out: list[BusMessage]) -> None:
        if self.control.recorder.feed_logs_inline:  # else the change-log writer derives them from bus_out
            self._out_changes += changes
        self._out_bus += bus_out
        for name, box in (("changes", self._out_changes), ("bus", self._out_bus)):
            if len(box) > OUTBOX_MAX:
                log.error(
                    "feed outbox full: oldest entries dropped", extra={"kind": name, "dropped": len(box) - OUTBOX_MAX}
                )
                del box[: len(box) - OUTBOX_MAX]

    def _ship(self) -> None:
        """Starts shipping the outbox in the background (one task: entries leave in order)."""
        if self._shipper is None or self._shipper.done():
            self._shipper = asyncio.create_task(self._ship_all(), name="feed-outbox")

    async def _ship_all(self) -> None:
        while self._out_changes or self._out_bus:
            try:
                await self.flush_outbox()
            except Exception:  # kept: retried by the next chunk or watchdog tick, raised by drain()
                log.warning("feed outbox not shipped; retried with the next chunk", exc_info=True)
                return

    async def drain(self) -> None:
        """Waits until every queued change-log row and Kafka message is stored and acknowledged; raises
        the failure when one cannot be (the entries stay in the outbox)."""
        await self._saved()  # the shared feed state of the chunks judged so far, for the other pods
        if self._shipper is not None:
            await asyncio.shield(self._shipper)
        await self.flush_outbox()

    async def flush_outbox(self) -> None:
        """Change-log rows (grouped: every chunk queued since the last call in one append), then Kafka
        messages (one acknowledgement wait per call), of every stored chunk not yet confirmed. Raises on
        failure (the entries stay, ahead of newer ones, for the next attempt)."""
        async with self._ship_lock:
            try:
                changes, self._out_changes = self._out_changes, []
                try:
                    if changes:
                        await self.control.recorder.store.append(changes)
                except BaseException:
                    self._out_changes = changes + self._out_changes
                    raise
                messages, self._out_bus = self._out_bus, []
                try:
                    if messages:
                        await self.bus.deliver(messages)
                except BaseException:
                    self._out_bus = messages + self._out_bus
                    raise
            finally:
                FEED_OUTBOX.labels("changes").set(len(self._out_changes))
                FEED_OUTBOX.labels("bus").set(len(self._out_bus))

    async def _apply_op(self, op: _Op, writes: _ChunkWrites) -> None:
        """An op other than a price write (a resume, a status change, a provider switch)."""
        states, changes = writes.states, writes.changes
        if isinstance(op, _ResumeOp):
            results = await self.control.resume(op.market_ids, op.source, op.reason, (op.reason,))
            self._odds_out(results, states)
        elif isinstance(op, _StatusOp):
            results = await self.control.suspend(
                op.market_ids, op.reason, op.source, op.reason, op.source_ts_ms, op.provider_ts_ms, changes
            )
            self._odds_out(results, states)
        elif isinstance(op, _SwitchOp):
            await self._switch(op, writes.at, changes, states)

    @staticmethod
    def _odds_out(results: Sequence[WriteResult], states: list[MarketState]) -> None:
        """Status-only changes go to the odds topic too (it carries every applied state)."""
        for res in results:
            if res.applied and res.after is not None:
                states.append(res.after)

    async def _switch(self, op: _SwitchOp, at: int, changes: list[MarketChange], states: list[MarketState]) -> None:
        sw = op.switch
        won, active = await self.state.switch_provider(sw.event_id, sw.old, sw.new, op.event.primary)
        self.router.active[sw.event_id] = active
        self._route_changes += 1
        if not won:  # another pod switched first (it logs the switch and suspends): adopt its decision
            log.info("feed provider switch lost to another pod", extra={"event_id": sw.event_id, "active": active})
            return
        FEED_SWITCHES.labels(sw.cause).inc()
        log.warning(
            "feed provider switch",
            extra={"event_id": sw.event_id, "from": sw.old, "to": sw.new, "cause": sw.cause},
        )
        current = await self.cache.get_markets(list(op.event.market_ids))
        changes.extend(
            [
                MarketChange(
                    mid,
                    "",
                    "PROVIDER",
                    sw.old,
                    sw.new,
                    "feed-router",
                    sw.cause,
                    st.version if st is not None else 0,
                    at,
                )
                for mid, st in zip(op.event.market_ids, current, strict=True)
            ]
        )
        if op.suspend:
            results = await self.control.suspend(
                op.event.market_ids, PROVIDER_DISCONNECT, "watchdog", sw.cause, collect=changes
            )
            self._odds_out(results, states)


__all__ = ["FeedPipeline", "IngestSummary", "RawMessage"]
