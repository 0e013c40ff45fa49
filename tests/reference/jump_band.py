"""The price-jump band, in pure Python, written from docs/odds-pipeline.md ("Suspension"): the reference the
Rust core's ``JumpBand`` (``inplay.core``, used by the feed pipeline) is tested against
(``tests/unit/test_jump_band.py`` runs both over the same random updates).

A market update jumps when some selection's price moved beyond ``band_bp`` against any price of that
selection in its window: the committed history (applied updates, at most ``max_history``, none older than
``window_ms`` before the update) plus the market's earlier updates of the same chunk, from the chunk's last
jump on (a jump restarts the band at the new level, and then the committed history no longer counts).
Only committed updates enter the history, in commit order: a jump clears it first, an update equal to the
newest entry replaces it. ``forget`` (a suspension) drops the market's history and pending updates."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

# (selection, decimal odds numerator, denominator) of each selection of a market
Prices = Sequence[tuple[str, int, int]]


def moved_beyond(old: tuple[int, int], new: tuple[int, int], band_bp: int) -> bool:
    """|new/old - 1| > band, exactly: |n1*d0 - n0*d1| * 10000 > band * n0 * d1 (decimal odds n/d)."""
    (on, od), (nn, nd) = old, new
    return abs(nn * od - on * nd) * 10_000 > band_bp * on * nd


def _beyond_any(prices: dict[str, tuple[int, int]], window: Iterable[dict[str, tuple[int, int]]], band: int) -> bool:
    window = list(window)
    return any(
        old is not None and moved_beyond(old, new, band)
        for sid, new in prices.items()
        for old in (past.get(sid) for past in window)
    )


class JumpBandReference:
    """Same interface and results as ``inplay.core.JumpBand``."""

    def __init__(self, band_bp: int, window_ms: int, max_history: int) -> None:
        self.band_bp, self.window_ms, self.max_history = band_bp, window_ms, max(1, max_history)
        self._history: dict[str, deque[tuple[int, dict[str, tuple[int, int]]]]] = {}
        self._chunk: list[tuple[str, int, dict[str, tuple[int, int]], bool]] = []
        self._by_market: dict[str, list[int]] = {}

    def check(self, market: str, ts_ms: int, prices: Prices) -> tuple[bool, int]:
        new = {sid: (num, den) for sid, num, den in prices}
        floor = ts_ms - self.window_ms
        committed = [p for t, p in self._history.get(market, ()) if t >= floor]
        earlier = [self._chunk[i] for i in self._by_market.get(market, ())]
        jumps = [k for k, (_, _, _, jumped) in enumerate(earlier) if jumped]
        since = earlier[jumps[-1] :] if jumps else earlier
        window = [p for _, t, p, _ in since if t >= floor] + ([] if jumps else committed)
        jumped = _beyond_any(new, window, self.band_bp)
        self._chunk.append((market, ts_ms, new, jumped))
        self._by_market.setdefault(market, []).append(len(self._chunk) - 1)
        return jumped, len(self._chunk) - 1

    def commit(self, tokens: list[int]) -> None:
        if any(not 0 <= t < len(self._chunk) for t in tokens):
            raise ValueError("a token is not of the current chunk")
        for token in tokens:
            market, ts, prices, jumped = self._chunk[token]
            history = self._history.setdefault(market, deque())
            if jumped:
                history.clear()
            while history and history[0][0] < ts - self.window_ms:
                history.popleft()
            if history and history[-1][1] == prices:
                history.pop()
            history.append((ts, prices))
            if len(history) > self.max_history:
                history.popleft()

    def forget(self, market: str) -> None:
        self._history.pop(market, None)
        self._by_market.pop(market, None)

    def clear_pending(self) -> None:
        self._chunk.clear()
        self._by_market.clear()

    @property
    def markets(self) -> int:
        return len(self._history)
