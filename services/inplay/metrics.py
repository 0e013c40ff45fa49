"""Prometheus metrics and the gRPC server interceptor that records RPC rate, latency and status."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram

RPC_LATENCY = Histogram(
    "inplay_rpc_duration_seconds",
    "Server-side RPC latency by method",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10),
)
RPC_TOTAL = Counter("inplay_rpc_total", "RPCs handled by method and status code", ["method", "code"])
BETS_ACCEPTED = Counter("inplay_bets_accepted_total", "Bets accepted")
BETS_REPLAYED = Counter("inplay_bets_replayed_total", "Idempotent replays of an earlier result")
BETS_REJECTED = Counter("inplay_bets_rejected_total", "Bets rejected by reason", ["reason"])
BET_BATCH_SIZE = Histogram(
    "inplay_bet_batch_size", "Slips per group-committed batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
)
ODDS_AGE = Histogram(
    "inplay_odds_age_seconds",
    "Age of the cached price when a bet was checked",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 30),
)
# The journal commit (inplay.domain.commit).
COMMIT_BATCH_SIZE = Histogram(
    "inplay_journal_batch_size",
    "Slips per journal batch (one atomic write)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
COMMIT_SECONDS = Histogram(
    "inplay_journal_commit_seconds",
    "Debit + journal write + finish of one batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
COMMIT_QUEUE = Gauge("inplay_journal_queue_slips", "Slips waiting for the journal writer")
BETS_SHED = Counter("inplay_bets_shed_total", "Slips refused with OVERLOADED (commit queue full)")
INTENTS_RECOVERED = Counter("inplay_journal_intents_recovered_total", "Bets rolled forward from an intent")
PROJECTION_LAG = Histogram(
    "inplay_projection_lag_seconds",
    "Journal commit to views + outbox written, per batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SETTLEMENT_BETS = Counter("inplay_settlement_bets_total", "Bets processed by settlement runs", ["kind"])


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps unary-unary and unary-stream handlers to time them and count status codes."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            inner = handler.unary_unary
            latency, ok = _children(method)

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                start = time.perf_counter()
                total = ok
                try:
                    return await inner(request, context)
                except BaseException:
                    status = context.code()
                    total = RPC_TOTAL.labels(method, status.name if status is not None else "UNKNOWN")
                    raise
                finally:
                    latency.observe(time.perf_counter() - start)
                    total.inc()

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


# Per method: the latency histogram and OK counter children (``labels()`` takes a lock and builds the label
# tuple on every call: a few µs per RPC, measured with perf/bench_odds.py --reads).
_CHILDREN: dict[str, tuple[Any, Any]] = {}


def _children(method: str) -> tuple[Any, Any]:
    found = _CHILDREN.get(method)
    if found is None:
        found = _CHILDREN[method] = (RPC_LATENCY.labels(method), RPC_TOTAL.labels(method, "OK"))
    return found
