"""The one bridge from cassandra-driver's ResponseFuture to asyncio, shared by every Cassandra adapter.

The driver completes requests on its I/O thread; an asyncio future must be resolved on its loop's thread.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Any

from cassandra.cluster import ResponseFuture


class _LoopRelay:
    """Hands driver completions to one event loop, coalescing wake-ups.

    The driver completes requests on its I/O thread. One ``call_soon_threadsafe`` per completion costs a
    self-pipe write and a loop wake-up per request; under load that is a large share of a request's CPU.
    Completions are queued instead, and the loop is woken only when the queue goes from empty to non-empty;
    it then settles every queued future in one pass.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._queue: list[tuple[asyncio.Future[ResponseFuture], ResponseFuture, BaseException | None]] = []

    def push(self, future: asyncio.Future[ResponseFuture], response: ResponseFuture, exc: BaseException | None) -> None:
        with self._lock:
            self._queue.append((future, response, exc))
            if len(self._queue) > 1:  # a wake-up is already on its way
                return
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop was closed while requests were in flight: nobody is waiting
            pass

    def _drain(self) -> None:
        with self._lock:
            queue, self._queue = self._queue, []
        for future, response, exc in queue:
            if future.done():  # cancelled by its awaiting task meanwhile
                continue
            if exc is None:
                future.set_result(response)
            else:
                future.set_exception(exc)


_relays: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopRelay] = weakref.WeakKeyDictionary()


def bridge(response: ResponseFuture) -> asyncio.Future[ResponseFuture]:
    """An asyncio future resolved on the running loop's thread when the driver's future completes. It
    resolves to the ResponseFuture itself, so that callers can read ``current_rows`` and ``paging_state``."""
    loop = asyncio.get_running_loop()
    relay = _relays.get(loop)
    if relay is None:
        relay = _relays[loop] = _LoopRelay(loop)
    done: asyncio.Future[ResponseFuture] = loop.create_future()
    push = relay.push
    response.add_callbacks(lambda _rows: push(done, response, None), lambda exc: push(done, response, exc))
    return done


def idempotent_preparer(session: Any) -> Callable[[str], Any]:
    """``session.prepare`` for adapters whose every statement is a read or an INSERT of deterministic rows
    (same key, same values on every attempt: the ledger, the journal, settlement). Their prepared statements
    are marked idempotent, so the driver's speculative execution may send a copy to another replica when a
    coordinator stalls (docs/reliability.md, the partition fault). Never use it for LWTs or counters."""

    def prepare(query: str) -> Any:
        statement = session.prepare(query)
        statement.is_idempotent = True
        return statement

    return prepare
