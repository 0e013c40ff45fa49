"""Admission control for the bet RPCs: bound the waiting, shed the rest before any work (issue 16).

A kickoff spike offers several times what one process can commit. Without a bound, every request is taken
in and waits (in the gRPC server, in placement, in the journal queue) until the client's deadline: the
accepted bets' latency goes to seconds and the throughput falls, because the work done for requests whose
clients already gave up is wasted. :class:`Admission` keeps two bounds instead:

- **in flight**: at most ``max_in_flight`` PlaceBet/PlaceBets calls run their handler at once. By Little's
  law the time an admitted call spends inside is about ``max_in_flight / throughput``, so the cap bounds the
  accepted latency while keeping enough calls inside for the journal writer to fill its batches;
- **queue time** (CoDel's idea, on a FIFO): a call that finds the cap reached waits for a slot, but never
  longer than ``queue_target_s``; the oldest waiter is the first to pass the target, and it is shed then.
  A standing queue therefore never forms: a burst shorter than the target is absorbed, a sustained overload
  is answered at once. ``max_waiting`` bounds the memory of the queue.

A shed call is answered RESOURCE_EXHAUSTED (reason ``OVERLOADED``, google.rpc.RetryInfo with a retry delay,
and the ``grpc-retry-pushback-ms`` trailer) **before its handler runs**: nothing was read or written, no
money was touched, and a retry with the same idempotency key is safe and is the expected reaction.

:class:`AdmissionInterceptor` applies it to the bet methods only (reads and operator RPCs are never shed).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import Counter, Gauge

from inplay.config import setting_int
from inplay.errors import ResourceExhausted, to_rpc_status

BET_METHODS = frozenset({"/inplay.bets.v1.BetService/PlaceBet", "/inplay.bets.v1.BetService/PlaceBets"})

ADMISSION_SHED = Counter(
    "inplay_admission_shed_total", "Bet calls answered RESOURCE_EXHAUSTED by admission control", ["method", "why"]
)
ADMISSION_IN_FLIGHT = Gauge("inplay_admission_in_flight", "Bet calls running their handler")


@dataclass(frozen=True, slots=True)
class AdmissionSettings:
    max_in_flight: int  # 0: admission control off
    queue_target_s: float
    max_waiting: int
    retry_after_s: float

    @classmethod
    def from_env(cls) -> AdmissionSettings:
        return cls(
            max_in_flight=setting_int("INPLAY_ADMISSION_MAX_IN_FLIGHT"),
            queue_target_s=setting_int("INPLAY_ADMISSION_QUEUE_TARGET_MS") / 1000,
            max_waiting=setting_int("INPLAY_ADMISSION_MAX_WAITING"),
            retry_after_s=setting_int("INPLAY_ADMISSION_RETRY_AFTER_MS") / 1000,
        )


class _Waiter:
    __slots__ = ("future", "since", "timer")

    def __init__(self, future: asyncio.Future[bool], since: float) -> None:
        self.future = future
        self.since = since
        self.timer: asyncio.TimerHandle | None = None


class Admission:
    """A FIFO slot counter whose waiters give up after the queue-time target (one per process)."""

    def __init__(self, settings: AdmissionSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.in_flight = 0
        self._waiting: deque[_Waiter] = deque()
        self._clock = clock

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def acquire(self) -> str:
        """'' when admitted (call :meth:`release` after), else why the call is shed (``full``/``queue_time``)."""
        if not self._waiting and self.in_flight < self.settings.max_in_flight:
            self._take()
            return ""
        if len(self._waiting) >= self.settings.max_waiting or self.settings.queue_target_s <= 0:
            return "full"
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), self._clock())
        waiter.timer = loop.call_later(self.settings.queue_target_s, self._expire, waiter)
        self._waiting.append(waiter)
        try:
            admitted = await waiter.future
        except asyncio.CancelledError:  # the client went away while waiting: give back a granted slot
            self._forget(waiter)
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.result():
                self.release()
            raise
        return "" if admitted else "queue_time"

    def release(self) -> None:
        self.in_flight -= 1
        ADMISSION_IN_FLIGHT.set(self.in_flight)
        while self._waiting and self.in_flight < self.settings.max_in_flight:
            waiter = self._waiting.popleft()
            if waiter.timer is not None:
                waiter.timer.cancel()
            if not waiter.future.done():
                self._take()
                waiter.future.set_result(True)

    def _take(self) -> None:
        self.in_flight += 1
        ADMISSION_IN_FLIGHT.set(self.in_flight)

    def _expire(self, waiter: _Waiter) -> None:
        # FIFO: the waiter expiring is the oldest one still waiting (CoDel's "sojourn time above target").
        self._forget(waiter)
        if not waiter.future.done():
            waiter.future.set_result(False)

    def _forget(self, waiter: _Waiter) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()
        try:
            self._waiting.remove(waiter)
        except ValueError:
            pass

    def shed_error(self, why: str) -> ResourceExhausted:
        delay_ms = max(1, int(self.settings.retry_after_s * 1000))
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=(delay_ms % 1000) * 1_000_000))
        retry.retry_delay.seconds = delay_ms // 1000
        return ResourceExhausted(
            f"the server is at its bet admission limit ({why}); nothing was done: retry with the same "
            f"idempotency key after {delay_ms} ms",
            reason="OVERLOADED",
            metadata={"shed_by": "admission", "why": why, "retry_after_ms": str(delay_ms)},
            details=[retry],
        )


async def _shed(context: grpc.aio.ServicerContext, error: ResourceExhausted) -> None:
    """Aborts with ``error``'s google.rpc.Status plus the ``grpc-retry-pushback-ms`` trailer. (abort_with_status
    replaces trailers set before it, so the hint goes into the status' own trailing metadata.)"""
    status = rpc_status.to_status(to_rpc_status(error))
    pushback = (("grpc-retry-pushback-ms", error.metadata["retry_after_ms"]),)
    await context.abort_with_status(status._replace(trailing_metadata=(*status.trailing_metadata, *pushback)))


def _admitted(admission: Admission, method: str, inner: Any) -> Any:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
        why = await admission.acquire()
        if why:
            ADMISSION_SHED.labels(method, why).inc()
            await _shed(context, admission.shed_error(why))
        try:
            return await inner(request, context)
        finally:
            admission.release()

    return behaviour


class AdmissionInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Puts :class:`Admission` in front of the unary bet methods of the server."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method not in BET_METHODS or handler.unary_unary is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _admitted(self.admission, method, handler.unary_unary),
            handler.request_deserializer,
            handler.response_serializer,
        )


def admission_interceptors(settings: AdmissionSettings | None = None) -> list[grpc.aio.ServerInterceptor]:
    """The interceptor for this process, or none when ``INPLAY_ADMISSION_MAX_IN_FLIGHT`` is 0."""
    settings = settings or AdmissionSettings.from_env()
    if settings.max_in_flight <= 0:
        return []
    return [AdmissionInterceptor(Admission(settings))]


__all__ = ["ADMISSION_SHED", "Admission", "AdmissionInterceptor", "AdmissionSettings", "admission_interceptors"]
