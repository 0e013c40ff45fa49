"""Provider health and the per-event provider routing (primary/secondary failover and fail-back)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from inplay.domain.feed.mapping import EventInfo
from inplay.domain.feed.rules import FeedRules

HEARTBEAT_TIMEOUT = "HEARTBEAT_TIMEOUT"
LAGGING = "LAG"
GAPS = "SEQUENCE_GAP"
FAILBACK = "FAILBACK"
SEEN_WINDOW = 4096


@dataclass
class ProviderHealth:
    """What one provider's connection looks like, from the messages received (times = receive times)."""

    name: str
    last_seen_ms: int = 0
    last_seq: int = -1
    last_lag_ms: int = 0
    lag_bad_at_ms: int = 0
    gap_at_ms: int = 0
    gaps: int = 0
    reconnected_at_ms: int = 0
    _seen: set[int] = field(default_factory=set)
    _order: deque[int] = field(default_factory=deque)

    def is_duplicate(self, seq: int) -> bool:
        return seq in self._seen

    def observe(self, seq: int, received_ms: int, lag_ms: int, rules: FeedRules) -> bool:
        """Records a (non-duplicate) message; returns True when it shows a sequence gap."""
        if self.last_seen_ms and received_ms - self.last_seen_ms > rules.heartbeat_timeout_ms:
            self.reconnected_at_ms = received_ms
        elif not self.last_seen_ms:
            self.reconnected_at_ms = received_ms
        self.last_seen_ms = max(self.last_seen_ms, received_ms)
        if lag_ms >= 0:  # -1: unknown (a message rejected before its timestamp could be read)
            self.last_lag_ms = lag_ms
            if lag_ms > rules.failover_lag_ms:
                self.lag_bad_at_ms = received_ms
        gap = self.last_seq >= 0 and seq > self.last_seq + 1
        if gap:
            self.gaps += 1
            self.gap_at_ms = received_ms
        self.last_seq = max(self.last_seq, seq)
        self._seen.add(seq)
        self._order.append(seq)
        if len(self._order) > SEEN_WINDOW:
            self._seen.discard(self._order.popleft())
        return gap

    def problem(self, now_ms: int, rules: FeedRules) -> str:
        """ "" when healthy, else the cause."""
        if not self.last_seen_ms or now_ms - self.last_seen_ms > rules.heartbeat_timeout_ms:
            return HEARTBEAT_TIMEOUT
        if self.last_lag_ms > rules.failover_lag_ms:
            return LAGGING
        if self.gap_at_ms and now_ms - self.gap_at_ms < rules.gap_window_ms:
            return GAPS
        return ""

    def healthy_since(self, rules: FeedRules) -> int:
        gap_clear = self.gap_at_ms + rules.gap_window_ms if self.gap_at_ms else 0
        return max(self.reconnected_at_ms, self.lag_bad_at_ms, gap_clear)


@dataclass(frozen=True, slots=True)
class Switch:
    event_id: str
    old: str
    new: str
    cause: str


class FeedRouter:
    """Which provider's prices are applied per event. Starts on the primary; moves to the secondary when the
    active one is unhealthy (lag, gaps, missed heartbeats) and the other one is healthy; moves back to the
    primary once it has been healthy for ``failback_after_ms``."""

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
        cur_h, other_h = self.provider(current), self.provider(other)
        cause = cur_h.problem(now_ms, self.rules)
        if cause and not other_h.problem(now_ms, self.rules):
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
