"""A deterministic (seeded) live match as both providers would send it, plus the mapping table for it.

The match (90 minutes compressed into ``duration_ms``) has two markets — match result (1X2) and total
goals over/under 2.5 — priced from a small Poisson model of the remaining goals, with noise, every
``tick_ms``. Goals happen at seeded minutes: each goal produces a bet stop and a goal incident from both
providers, then, ``resume_after_ms`` later, fresh prices for the new score. Both providers send a
heartbeat every ``heartbeat_ms``; the match ends with an end message. ``alpha`` (primary) sends decimal
strings and ISO timestamps; ``bravo`` (secondary) sends American odds and epoch milliseconds.

Team names are generated from the seed (nothing about real fixtures lives in code).

Usage: ``sim = MatchSimulator(seed=7, start_ms=now)``; ``sim.mapping()`` goes to the mapping store;
``sim.messages()`` is the time-ordered list to push through FeedService (``at_ms`` = provider timestamp).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

_SYLLABLES = (
    "ar",
    "bel",
    "cor",
    "dun",
    "el",
    "fal",
    "gor",
    "hal",
    "ist",
    "jor",
    "kel",
    "lun",
    "mar",
    "nor",
    "or",
    "pel",
    "quin",
    "ros",
    "sel",
    "tor",
    "ul",
    "ven",
    "wil",
    "yor",
    "zan",
)
_SUFFIXES = ("United", "City", "Rovers", "Athletic", "Wanderers", "Albion", "Town", "Rangers")


@dataclass(frozen=True, slots=True)
class SimMessage:
    provider: str
    payload: bytes
    at_ms: int  # provider timestamp (when to send it, for a real-time replay)
    kind: str

    @property
    def received_at_ms(self) -> int:
        """What a replaying connector reports as receive time (``IngestOddsRequest.received_at``): the
        provider timestamp plus 5 ms of network. A burst replay must set it, or the server's clock makes
        early messages look lagging and later ones come from the future."""
        return self.at_ms + 5


def _team(rng: random.Random) -> str:
    word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
    return f"{word} {rng.choice(_SUFFIXES)}"


def _poisson(lam: float, k: int) -> float:
    return math.exp(-lam) * lam**k / math.factorial(k)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _decimal_text(prob: float, margin: float) -> str:
    price = Decimal(1 / max(prob * (1 + margin), 1e-6)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return str(min(max(price, Decimal("1.01")), Decimal("500.00")))


def _american(decimal_text: str) -> int:
    d = Decimal(decimal_text)
    if d >= 2:
        return int(((d - 1) * 100).quantize(Decimal("1"), rounding=ROUND_HALF_UP))
    return -int((Decimal(100) / (d - 1)).quantize(Decimal("1"), rounding=ROUND_HALF_UP))


class MatchSimulator:
    def __init__(
        self,
        seed: int = 7,
        start_ms: int = 0,
        duration_ms: int = 60_000,
        tick_ms: int = 300,
        heartbeat_ms: int = 1_000,
        resume_after_ms: int = 2_000,
        event_id: str | None = None,
        sport: str = "football",
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.start_ms = start_ms
        self.duration_ms = duration_ms
        self.tick_ms = tick_ms
        self.heartbeat_ms = heartbeat_ms
        self.resume_after_ms = resume_after_ms
        self.event_id = event_id or f"sim-{seed}"
        self.sport = sport
        self.home = _team(self.rng)
        self.away = _team(self.rng)
        while self.away == self.home:
            self.away = _team(self.rng)
        self.alpha_event = f"A-EV-{seed:04d}"
        self.bravo_match = 90_000 + seed
        self.lam_home = 1.2 + self.rng.random() * 0.8
        self.lam_away = 0.8 + self.rng.random() * 0.8
        self.goals: list[tuple[int, str]] = self._draw_goals()

    # --- ids -----------------------------------------------------------------------------------------------

    @property
    def market_result(self) -> str:
        return f"{self.event_id}:mr"

    @property
    def market_total(self) -> str:
        return f"{self.event_id}:ou25"

    def mapping(self) -> dict[str, Any]:
        e = self.event_id
        a, b = self.alpha_event, str(self.bravo_match)
        return {
            "events": [
                {
                    "event_id": e,
                    "sport": self.sport,
                    "name": f"{self.home} v {self.away}",
                    "in_play": True,
                    "primary": "alpha",
                    "secondary": "bravo",
                    "ids": {"alpha": a, "bravo": b},
                    "markets": [
                        {
                            "market_id": self.market_result,
                            "market_type": "MATCH_RESULT",
                            "name": "Match result",
                            "ids": {"alpha": f"{a}-MR", "bravo": f"{b}/1X2"},
                            "selections": [
                                {
                                    "selection_id": f"{e}:mr:home",
                                    "name": self.home,
                                    "ids": {"alpha": f"{a}-MR-H", "bravo": "1"},
                                },
                                {
                                    "selection_id": f"{e}:mr:draw",
                                    "name": "Draw",
                                    "ids": {"alpha": f"{a}-MR-D", "bravo": "X"},
                                },
                                {
                                    "selection_id": f"{e}:mr:away",
                                    "name": self.away,
                                    "ids": {"alpha": f"{a}-MR-A", "bravo": "2"},
                                },
                            ],
                        },
                        {
                            "market_id": self.market_total,
                            "market_type": "TOTAL_GOALS_2_5",
                            "name": "Total goals over/under 2.5",
                            "ids": {"alpha": f"{a}-OU25", "bravo": f"{b}/OU/2.5"},
                            "selections": [
                                {
                                    "selection_id": f"{e}:ou25:over",
                                    "name": "Over 2.5",
                                    "ids": {"alpha": f"{a}-OU25-O", "bravo": "O"},
                                },
                                {
                                    "selection_id": f"{e}:ou25:under",
                                    "name": "Under 2.5",
                                    "ids": {"alpha": f"{a}-OU25-U", "bravo": "U"},
                                },
                            ],
                        },
                    ],
                }
            ]
        }

    # --- model ---------------------------------------------------------------------------------------------

    def _draw_goals(self) -> list[tuple[int, str]]:
        goals = []
        for team, lam in (("home", self.lam_home), ("away", self.lam_away)):
            n = min(4, sum(1 for _ in range(90) if self.rng.random() < lam / 90))
            for _ in range(n):
                goals.append((int(self.rng.uniform(0.05, 0.9) * self.duration_ms), team))
        if not goals:  # every simulated match has at least one goal (the demo shows the bet stop)
            goals.append((int(self.duration_ms * 0.4), "home"))
        return sorted(goals)

    def _probabilities(self, t: float, home: int, away: int) -> tuple[float, float, float, float]:
        rest = max(0.0, 1.0 - t)
        lh, la = self.lam_home * rest, self.lam_away * rest
        p_home = p_draw = p_away = 0.0
        p_under = 0.0
        for i in range(11):
            for j in range(11):
                p = _poisson(lh, i) * _poisson(la, j)
                h, a = home + i, away + j
                if h > a:
                    p_home += p
                elif h == a:
                    p_draw += p
                else:
                    p_away += p
                if h + a <= 2:
                    p_under += p
        total = p_home + p_draw + p_away
        return p_home / total, p_draw / total, p_away / total, min(max(p_under / total, 0.0), 1.0)

    # --- messages ------------------------------------------------------------------------------------------

    def messages(self) -> list[SimMessage]:
        out: list[SimMessage] = []
        seq = {"alpha": 0, "bravo": 0}

        def nxt(provider: str) -> int:
            seq[provider] += 1
            return seq[provider]

        home = away = 0
        goal_iter = iter(self.goals)
        next_goal = next(goal_iter, None)
        stopped_until = -1
        t = 0
        next_hb = 0
        noise = random.Random(self.seed * 7919)
        while t <= self.duration_ms:
            ts = self.start_ms + t
            if t >= next_hb:
                out += self._heartbeats(ts, nxt)
                next_hb += self.heartbeat_ms
            if next_goal is not None and t >= next_goal[0]:
                if next_goal[1] == "home":
                    home += 1
                else:
                    away += 1
                out += self._stop(ts, nxt)
                stopped_until = t + self.resume_after_ms
                next_goal = next(goal_iter, None)
            elif t >= stopped_until:
                ph, pd, pa, pu = self._probabilities(t / self.duration_ms, home, away)
                jitter = [1 + noise.uniform(-0.02, 0.02) for _ in range(5)]
                probs = [min(max(p * j, 0.003), 0.997) for p, j in zip((ph, pd, pa, 1 - pu, pu), jitter, strict=True)]
                out += self._prices(ts, probs, nxt)
            t += self.tick_ms
        end = self.start_ms + self.duration_ms + self.tick_ms
        out.append(self._alpha(end, nxt("alpha"), {"type": "end", "event": {"id": self.alpha_event}}, "END"))
        out.append(self._bravo(end, nxt("bravo"), "FINAL", {}, "END"))
        return out

    def _alpha(self, ts: int, seq: int, body: dict[str, Any], kind: str) -> SimMessage:
        doc = {"seq": seq, "ts": _iso(ts), **body}
        return SimMessage("alpha", json.dumps(doc, separators=(",", ":")).encode(), ts, kind)

    def _bravo(self, ts: int, seq: int, kind_wire: str, body: dict[str, Any], kind: str) -> SimMessage:
        doc: dict[str, Any] = {"hdr": {"seq": seq, "sent": ts, "type": kind_wire}}
        if kind_wire != "ALIVE":
            doc["match"] = {"ref": self.bravo_match, "participants": {"home": self.home, "away": self.away}}
        doc.update(body)
        return SimMessage("bravo", json.dumps(doc, separators=(",", ":")).encode(), ts, kind)

    def _heartbeats(self, ts: int, nxt: Any) -> list[SimMessage]:
        return [
            self._alpha(ts, nxt("alpha"), {"type": "heartbeat"}, "HEARTBEAT"),
            self._bravo(ts, nxt("bravo"), "ALIVE", {}, "HEARTBEAT"),
        ]

    def _stop(self, ts: int, nxt: Any) -> list[SimMessage]:
        ev = {"id": self.alpha_event}
        return [
            self._alpha(ts, nxt("alpha"), {"type": "bet_stop", "event": ev}, "BET_STOP"),
            self._alpha(ts + 1, nxt("alpha"), {"type": "incident", "event": ev, "incident": "goal"}, "INCIDENT"),
            self._bravo(ts, nxt("bravo"), "STOP", {}, "BET_STOP"),
            self._bravo(ts + 1, nxt("bravo"), "INCIDENT", {"incident": {"kind": "GOAL"}}, "INCIDENT"),
        ]

    def _prices(self, ts: int, probs: list[float], nxt: Any) -> list[SimMessage]:
        ph, pd, pa, po, pu = probs
        a = self.alpha_event
        alpha_mr = [_decimal_text(p, 0.05) for p in (ph, pd, pa)]
        alpha_ou = [_decimal_text(p, 0.05) for p in (po, pu)]
        bravo_mr = [_american(_decimal_text(p, 0.06)) for p in (ph, pd, pa)]
        bravo_ou = [_american(_decimal_text(p, 0.06)) for p in (po, pu)]
        ev = {"id": a, "home": self.home, "away": self.away}
        out = [
            self._alpha(
                ts,
                nxt("alpha"),
                {
                    "type": "odds",
                    "event": ev,
                    "market": {
                        "id": f"{a}-MR",
                        "prices": [{"id": f"{a}-MR-{s}", "odds": o} for s, o in zip("HDA", alpha_mr, strict=True)],
                    },
                },
                "PRICES",
            ),
            self._alpha(
                ts,
                nxt("alpha"),
                {
                    "type": "odds",
                    "event": ev,
                    "market": {
                        "id": f"{a}-OU25",
                        "prices": [{"id": f"{a}-OU25-{s}", "odds": o} for s, o in zip("OU", alpha_ou, strict=True)],
                    },
                },
                "PRICES",
            ),
            self._bravo(
                ts,
                nxt("bravo"),
                "PRICE",
                {
                    "offers": [
                        {
                            "type": "1X2",
                            "outcomes": [{"code": c, "us": o} for c, o in zip("1X2", bravo_mr, strict=True)],
                        },
                        {
                            "type": "OU",
                            "line": "2.5",
                            "outcomes": [{"code": c, "us": o} for c, o in zip("OU", bravo_ou, strict=True)],
                        },
                    ]
                },
                "PRICES",
            ),
        ]
        return out


__all__ = ["MatchSimulator", "SimMessage"]
