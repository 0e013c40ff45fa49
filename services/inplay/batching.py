"""A generic group committer: gathers concurrent single requests into batches for a batch handler.

Not betting domain: any use case with a batch entry point can put one in front of it (today the unary
``PlaceBet`` path of :class:`inplay.domain.bets.BetPlacement`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class GroupCommitter(Generic[In, Out]):
    """Gathers concurrent single requests into batches for a batch handler.

    The first request of a batch waits at most ``window_ms`` for company; a full batch goes at once.
    Under light load a request pays at most the window; under heavy load batches fill up and the per-item
    cost of the store round trips is divided by the batch size.
    """

    def __init__(
        self,
        handler: Callable[[Sequence[In]], Awaitable[list[Out]]],
        *,
        window_ms: float,
        max_batch: int,
    ) -> None:
        self._handler = handler
        self._window = window_ms / 1000
        self._max = max_batch
        self._items: list[tuple[In, asyncio.Future[Out]]] = []
        self._timer: asyncio.TimerHandle | None = None

    async def submit(self, item: In) -> Out:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Out] = loop.create_future()
        self._items.append((item, future))
        if len(self._items) >= self._max:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._window, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._items = self._items, []
        if items:
            asyncio.get_running_loop().create_task(self._run(items))

    async def _run(self, items: list[tuple[In, asyncio.Future[Out]]]) -> None:
        try:
            results = await self._handler([item for item, _ in items])
        except BaseException as exc:  # every waiter learns of the failure
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(items, results, strict=True):
            if not future.done():
                future.set_result(result)
