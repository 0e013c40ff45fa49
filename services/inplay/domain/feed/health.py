"""Provider health and the per-event provider routing (primary/secondary failover and fail-back)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from inplay.domain.feed.mapping import EventInfo
from inplay.domain.feed.rules import FeedRules
from inplay.ports import ProviderLiveness
from inplay.valuetype import value

HEARTBEAT_TIMEOUT = "HEARTBEAT_TIMEOUT"
LAGGING = "LAG"
GAPS = "SEQUENCE_GAP"
FAILBACK = "FAILBACK"
DUPLICATE = "DUPLICATE"
RESET = "SEQUENCE_RESET"
SEEN_WINDOW = 4096
# Producer lifecycle (Sportradar's producer up/down): UP -> DOWN (silent) -> RECOVERING (snapshot asked) -> UP.
UP, DOWN, RECOVERING = "UP", "DOWN", "RECOVERING"


@value
class Checkpoint:
    """What :meth:`ProviderHealth.rollback` restores (sequence state only: liveness was real)."""

    appended: int
    last_seq: int
    max_ts_ms: int
    gap_at_ms: int
    gaps: int


@dataclass
class ProviderHealth:
    """What one provider's connection looks like, from the messages received (times = receive times).

    Sequence tracking (:meth:`track`) sees every message with a readable sequence number; liveness
    (:meth:`alive`) only messages that passed validation, so a provider whose every message is rejected
    (clock far ahead, schema change, unmapped ids) goes silent and fails over."""

    name: str
    last_seen_ms: int = 0
    last_seq: int = -1
    # Newest provider timestamp seen (a lower seq with a newer timestamp = the provider restarted its seqs).
    max_ts_ms: int = -1
    last_lag_ms: int = 0
    last_lag_at_ms: int = 0
    lag_bad_at_ms: int = 0
    gap_at_ms: int = 0
    gaps: int = 0
    resets: int = 0
    reconnected_at_ms: int = 0
    producer: str = UP
    producer_at_ms: int = 0
    # DOWN: since when silent (the recovery snapshot starts there); RECOVERING: the request being answered.
    down_since_ms: int = 0
    recovery_id: str = ""
    # Duplicates are keyed by (seq, provider ts): a re-sent message repeats both, a new session only the seq.
    _seen: set[tuple[int, int]] = field(default_factory=set)
    _order: deque[tuple[int, int]] = field(default_factory=deque)
    _appended: int = 0

    def is_duplicate(self, seq: int, ts_ms: int = -1) -> bool:
        return (seq, ts_ms) in self._seen

    def track(self, seq: int, ts_ms: int, received_ms: int) -> str:
        """Records a message's sequence number: DUPLICATE, RESET (a new session: the window restarts), GAPS
        (a sequence gap) or ""."""
        key = (seq, ts_ms)
        if key in self._seen:
            return DUPLICATE
        verdict = ""
        if self.last_seq >= 0 and seq < self.last_seq and ts_ms >= 0 and ts_ms > self.max_ts_ms:
            self._seen.clear()
            self._order.clear()
            self.last_seq = -1
            self.resets += 1
            verdict = RESET
        if self.last_seq >= 0 and seq > self.last_seq + 1:
            self.gaps += 1
            self.gap_at_ms = received_ms
            verdict = GAPS
        self.last_seq = max(self.last_seq, seq)
        self.max_ts_ms = max(self.max_ts_ms, ts_ms)
        self._seen.add(key)
        self._order.append(key)
        self._appended += 1
        if len(self._order) > SEEN_WINDOW:
            self._seen.discard(self._order.popleft())
        return verdict

    def alive(self, received_ms: int, lag_ms: int, rules: FeedRules) -> None:
        """A valid message: the provider is alive. ``lag_ms`` = |receive time - provider time| (a clock
        running ahead is as untrustworthy as one lagging behind)."""
        if not self.last_seen_ms or received_ms - self.last_seen_ms > rules.heartbeat_timeout_ms:
            self.reconnected_at_ms = received_ms
        self.last_seen_ms = max(self.last_seen_ms, received_ms)
        self.last_lag_ms = lag_ms
        self.last_lag_at_ms = max(self.last_lag_at_ms, received_ms)
        if lag_ms > rules.failover_lag_ms:
            self.lag_bad_at_ms = received_ms

    def observe(self, seq: int, received_ms: int, lag_ms: int, rules: FeedRules, ts_ms: int = -1) -> bool:
        """``track`` + ``alive`` (a valid message); True when it shows a sequence gap."""
        gap = self.track(seq, ts_ms, received_ms) == GAPS
        self.alive(received_ms, max(0, lag_ms), rules)
        return gap

    # --- shared state (H6): the other pods' view of this provider ------------------------------------------

    def merge(self, shared: ProviderLiveness) -> None:
        """Takes in what other pods saw: the newest times, and the sequence position with the newest provider
        timestamp (a lower seq there = another pod saw the provider restart: the local window is stale)."""
        self.last_seen_ms = max(self.last_seen_ms, shared.last_seen_ms)
        if shared.lag_at_ms > self.last_lag_at_ms:
            self.last_lag_ms, self.last_lag_at_ms = shared.lag_ms, shared.lag_at_ms
        self.lag_bad_at_ms = max(self.lag_bad_at_ms, shared.lag_bad_at_ms)
        self.gap_at_ms = max(self.gap_at_ms, shared.gap_at_ms)
        self.reconnected_at_ms = max(self.reconnected_at_ms, shared.reconnected_at_ms)
        if shared.max_ts_ms > self.max_ts_ms:
            if shared.last_seq < self.last_seq:
                self._seen.clear()
                self._order.clear()
            self.last_seq, self.max_ts_ms = shared.last_seq, shared.max_ts_ms
        if shared.producer_at_ms > self.producer_at_ms:  # another pod moved the producer's lifecycle
            self.producer, self.producer_at_ms = shared.producer, shared.producer_at_ms
            self.recovery_id, self.down_since_ms = shared.recovery_id, shared.down_since_ms

    def remember(self, keys: set[tuple[int, int]]) -> None:
        """(seq, ts) keys another pod already accepted: their re-send here is a DUPLICATE."""
        for key in keys - self._seen:
            self._seen.add(key)
            self._order.append(key)
            self._appended += 1
        while len(self._order) > SEEN_WINDOW:
            self._seen.discard(self._order.popleft())

    def tracked_since(self, cp: Checkpoint | None) -> list[tuple[int, int]]:
        """The (seq, ts) keys tracked since ``cp`` (None: all in the window)."""
        n = min(self._appended - (cp.appended if cp is not None else 0), len(self._order))
        return list(self._order)[len(self._order) - n :] if n > 0 else []

    def liveness(self) -> ProviderLiveness:
        return ProviderLiveness(
            self.name,
            self.last_seen_ms,
            self.last_lag_ms,
            self.last_lag_at_ms,
            self.lag_bad_at_ms,
            self.gap_at_ms,
            self.reconnected_at_ms,
            self.last_seq,
            self.max_ts_ms,
            self.producer,
            self.producer_at_ms,
            self.recovery_id,
            self.down_since_ms,
        )

    def set_producer(self, status: str, at_ms: int, recovery_id: str = "", down_since_ms: int = 0) -> None:
        # strictly increasing change time: the newest change wins when pods merge
        self.producer, self.producer_at_ms = status, max(at_ms, self.producer_at_ms + 1)
        self.recovery_id, self.down_since_ms = recovery_id, down_since_ms

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self._appended, self.last_seq, self.max_ts_ms, self.gap_at_ms, self.gaps)

    def rollback(self, cp: Checkpoint) -> None:
        """Forgets the sequence numbers tracked since ``cp`` (their chunk was not stored: a retry must not be
        a DUPLICATE)."""
        for _ in range(min(self._appended - cp.appended, len(self._order))):
            self._seen.discard(self._order.pop())
        self._appended = cp.appended
        self.last_seq, self.max_ts_ms, self.gap_at_ms, self.gaps = cp.last_seq, cp.max_ts_ms, cp.gap_at_ms, cp.gaps

    def problem(self, now_ms: int, rules: FeedRules) -> str:
        """ "" when healthy, else the cause."""
        if not self.last_seen_ms or now_ms - self.last_seen_ms > rules.heartbeat_timeout_ms:
            return HEARTBEAT_TIMEOUT
        if self.producer != UP:  # down, or its recovery snapshot is not complete: no fail-back to it
            return self.producer
        if self.last_lag_ms > rules.failover_lag_ms:
            return LAGGING
        if self.gap_at_ms and now_ms - self.gap_at_ms < rules.gap_window_ms:
            return GAPS
        return ""

    def healthy_since(self, rules: FeedRules) -> int:
        gap_clear = self.gap_at_ms + rules.gap_window_ms if self.gap_at_ms else 0
        return max(self.reconnected_at_ms, self.lag_bad_at_ms, gap_clear)


@value
class Switch:
    event_id: str
    old: str
    new: str
    cause: str


class FeedRouter:
    """Which provider's prices are applied per event. Starts on the primary; moves to the secondary when the
    active one is unhealthy (lag, gaps, missed heartbeats) and the other one is healthy; moves back to the
    primary once it has been healthy for ``failback_after_ms`` (also when the secondary turns unhealthy,
    unless the secondary stopped altogether)."""

    def __init__(self, rules: FeedRules) -> None:
        self.rules = rules
        self.health: dict[str, ProviderHealth] = {}
        self.active: dict[str, str] = {}

    def provider(self, name: str) -> ProviderHealth:
        h = self.health.get(name)
        if h is None:
            h = self.health[name] = ProviderHealth(name)
        return h

    def active_for(self, event: EventInfo) -> str:
        return self.active.get(event.event_id, event.primary)

    def evaluate(self, event: EventInfo, now_ms: int) -> Switch | None:
        if not event.secondary:
            return None
        current = self.active_for(event)
        other = event.secondary if current == event.primary else event.primary
        cause = self.provider(current).problem(now_ms, self.rules)
        if cause and not (other_h := self.provider(other)).problem(now_ms, self.rules):
            # Back to the primary only once it has been healthy for the fail-back delay (else two providers
            # with alternating lag spikes flap a->b->a, each switch a PROVIDER row and a new price source),
            # unless the secondary is gone altogether.
            if (
                other == event.primary
                and cause != HEARTBEAT_TIMEOUT
                and now_ms - other_h.healthy_since(self.rules) < self.rules.failback_after_ms
            ):
                return None
            self.active[event.event_id] = other
            return Switch(event.event_id, current, other, cause)
        if not cause and current != event.primary:
            prim = self.provider(event.primary)
            if not prim.problem(now_ms, self.rules) and now_ms - prim.healthy_since(self.rules) >= (
                self.rules.failback_after_ms
            ):
                self.active[event.event_id] = event.primary
                return Switch(event.event_id, current, event.primary, FAILBACK)
        return None
