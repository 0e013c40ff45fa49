"""A generic group committer: gathers concurrent single requests into batches for a batch handler.

Not betting domain: any use case with a batch entry point can put one in front of it (today the unary
``PlaceBet`` path of :class:`inplay.domain.bets.BetPlacement`).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

# The running batch's "I am only waiting now" callback (set in the batch's own task context).
_RELEASE: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("group_release", default=None)


def only_waiting() -> None:
    """Called by a batch handler once the rest of its work is only waiting (e.g. its items sit in a store
    writer's own group commit): the batch gives up its in-flight slot, so the next batch starts now instead
    of after the wait. A no-op outside a GroupCommitter batch."""
    release = _RELEASE.get()
    if release is not None:
        release()


class GroupCommitter(Generic[In, Out]):
    """Gathers concurrent single requests into batches for a batch handler.

    At most ``max_in_flight`` batches run at once (a batch that calls :func:`only_waiting` stops counting).
    While they run, new requests wait and form the next batch, which goes as soon as one finishes (or at
    once when it is full): under load the batch size
    follows the load times the handler's duration, so the per-item cost of the store round trips is divided
    by it instead of every caller paying its own. When nothing is in flight, the first request of a batch
    waits at most ``window_ms`` for company. (A fixed window alone made ~1 request per batch at 800
    calls/s: each batch then paid its own store round trips, and many ran in parallel.)
    """

    def __init__(
        self,
        handler: Callable[[Sequence[In]], Awaitable[list[Out]]],
        *,
        window_ms: float,
        max_batch: int,
        max_in_flight: int = 2,
    ) -> None:
        self._handler = handler
        self._window = window_ms / 1000
        self._max = max_batch
        self._max_in_flight = max(1, max_in_flight)
        self._in_flight = 0
        self._items: list[tuple[In, asyncio.Future[Out]]] = []
        self._timer: asyncio.TimerHandle | None = None

    async def submit(self, item: In) -> Out:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Out] = loop.create_future()
        self._items.append((item, future))
        if self._in_flight < self._max_in_flight:
            if len(self._items) >= self._max:
                self._flush()
            elif self._timer is None:
                self._timer = loop.call_later(self._window, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # With every slot taken, a running batch flushes the waiting requests when it finishes.
        while self._items and self._in_flight < self._max_in_flight:
            items, self._items = self._items[: self._max], self._items[self._max :]
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._run(items))

    async def _run(self, items: list[tuple[In, asyncio.Future[Out]]]) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._in_flight -= 1
                self._flush()  # the requests that came meanwhile have waited long enough: they go now

        _RELEASE.set(release)  # this task's own context: seen by only_waiting() inside the handler
        try:
            results = await self._handler([item for item, _ in items])
        except BaseException as exc:  # every waiter learns of the failure
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            release()
        for (_, future), result in zip(items, results, strict=True):
            if not future.done():
                future.set_result(result)
