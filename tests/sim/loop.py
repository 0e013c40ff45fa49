"""A seeded asyncio event loop with virtual time (the TigerBeetle VOPR idea on asyncio).

Every step runs ONE ready callback, chosen by the seed's RNG among all ready callbacks, so one seed is one
interleaving of the tasks and different seeds explore different ones. Time is virtual: when nothing is
ready, the clock jumps to the next timer (no real sleep), so a 20 s commit timeout costs nothing. The same
seed gives the same schedule, provided the code under test takes no input from outside the loop (the
simulation pins ``time``, hash seeds and randomness; see ``tests/sim/world.py``).
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time as _real_time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")

# Virtual time starts at a fixed wall-clock instant (2026-01-01T00:00:00Z) so ids and days are stable.
EPOCH_S = 1_767_225_600.0


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is pending, but the main coroutine has not finished."""


class StepLimit(RuntimeError):
    """The seed ran more steps than allowed (a livelock, or a retry loop that never ends)."""


class SimLoop(asyncio.BaseEventLoop):
    """Runs one ready handle per step, picked by ``rng``; the clock is virtual (``time()``)."""

    def __init__(self, seed: int, *, max_steps: int = 200_000) -> None:
        super().__init__()
        self.rng = random.Random(seed)
        self._now = 0.0
        self.steps = 0
        self.max_steps = max_steps
        self.set_exception_handler(self._swallow)
        self.errors: list[dict[str, Any]] = []

    def time(self) -> float:
        return self._now

    def _swallow(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # A task of a killed process is abandoned while pending: expected, not a failure. Anything else is
        # kept for the report (never printed: the output must not depend on garbage collection timing).
        message = str(context.get("message", ""))
        if "was destroyed but it is pending" not in message and "never retrieved" not in message:
            self.errors.append(context)

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        """Runs ``func`` at once, in the loop's thread (``asyncio.to_thread`` too): a real thread would finish
        at a moment the seed does not decide."""
        future: asyncio.Future[_T] = self.create_future()
        try:
            future.set_result(func(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def _write_to_self(self) -> None:  # no other thread ever wakes this loop
        pass

    def _process_events(self, event_list: Any) -> None:
        pass

    def _run_once(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise StepLimit(f"more than {self.max_steps} steps")
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        ready: deque[asyncio.Handle] = self._ready  # type: ignore[attr-defined]
        while scheduled and scheduled[0]._cancelled:
            self._timer_cancelled_count -= 1  # type: ignore[attr-defined]
            heapq.heappop(scheduled)._scheduled = False  # type: ignore[attr-defined]
        if not ready:
            if not scheduled:
                raise Deadlock("no callback is ready and no timer is pending")
            self._now = max(self._now, scheduled[0].when())
        while scheduled and scheduled[0].when() <= self._now:
            handle = heapq.heappop(scheduled)
            handle._scheduled = False  # type: ignore[attr-defined]
            if handle.cancelled():
                self._timer_cancelled_count -= 1  # type: ignore[attr-defined]
            else:
                ready.append(handle)
        if not ready:
            return
        index = self.rng.randrange(len(ready))
        chosen = ready[index]
        del ready[index]
        if not chosen.cancelled():
            chosen._run()


class VirtualTime:
    """Stands in for the ``time`` module inside the modules under test: every clock reads the loop's."""

    def __init__(self, loop: SimLoop) -> None:
        self._loop = loop

    def monotonic(self) -> float:
        return self._loop.time()

    def perf_counter(self) -> float:
        return self._loop.time()

    def time(self) -> float:
        return EPOCH_S + self._loop.time()

    def time_ns(self) -> int:
        return round(self.time() * 1000) * 1_000_000

    def __getattr__(self, name: str) -> Any:
        return getattr(_real_time, name)


def run(seed: int, main: Coroutine[Any, Any, _T], *, max_steps: int = 200_000) -> tuple[_T, SimLoop]:
    loop = SimLoop(seed, max_steps=max_steps)
    try:
        return loop.run_until_complete(main), loop
    finally:
        asyncio.set_event_loop(None)
        loop.close()
