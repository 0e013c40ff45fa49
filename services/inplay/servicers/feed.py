"""FeedService: provider connectors stream their messages in (IngestOdds, client streaming).

Messages are handed to the pipeline in chunks: whatever has arrived while the previous chunk was being
processed (up to ``FeedRules.chunk_size``) forms the next one, so a fast connector gets one Lua call and
one produce batch per chunk, a slow one per message. The Kafka producer is flushed before the summary is
returned (everything the response counts as accepted is on the bus).

Callers need the ``feed`` (or ``operator``) role.

Dependencies for :func:`add_to_server`: the process's :class:`inplay.domain.feed.pipeline.FeedPipeline`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import grpc

from inplay import auth
from inplay.domain.feed.pipeline import FeedPipeline, IngestSummary, RawMessage
from inplay.errors import PermissionDenied
from inplay.feed.v1 import feed_pb2, feed_pb2_grpc
from inplay.servicers.rpc import rpc

QUEUE = 2048
# Chunks handed to one pipeline call when that many are already queued: within a call the pipeline parses
# the next chunk and requests its shared view while the current one is judged and written.
CHUNKS_PER_CALL = 4
FEED_ROLE = "feed"


def require_feed(who: auth.Principal) -> None:
    """Feed connectors carry the ``feed`` role (operators may push too, e.g. the demo or a replay)."""
    if FEED_ROLE not in who.roles and not who.is_operator:
        raise PermissionDenied("feed role required", reason="FEED_ONLY")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class FeedServicer(feed_pb2_grpc.FeedServiceServicer):
    def __init__(self, pipeline: FeedPipeline) -> None:
        self._pipeline = pipeline

    @rpc
    async def IngestOdds(
        self, request_iterator: AsyncIterator[feed_pb2.IngestOddsRequest], context: grpc.aio.ServicerContext
    ) -> feed_pb2.IngestOddsResponse:
        require_feed(auth.principal(context))
        queue: asyncio.Queue[RawMessage | None] = asyncio.Queue(QUEUE)

        async def receive() -> None:
            try:
                async for req in request_iterator:
                    received = req.received_at.ToMilliseconds() if req.HasField("received_at") else _now_ms()
                    await queue.put(RawMessage(req.provider, bytes(req.payload), received, _now_ms()))
            finally:
                await queue.put(None)

        reader = asyncio.create_task(receive())
        summary = IngestSummary()
        try:
            done = False
            most = max(1, self._pipeline.rules.chunk_size) * CHUNKS_PER_CALL
            while not done:
                first = await queue.get()
                if first is None:
                    break
                chunk = [first]
                while len(chunk) < most and not queue.empty():
                    item = queue.get_nowait()
                    if item is None:
                        done = True
                        break
                    chunk.append(item)
                # what is queued, in chunks; their change log and Kafka messages ship while the next is judged
                summary.merge(await self._pipeline.ingest(chunk, drain=False))
            await reader  # surfaces a broken request stream
            await self._pipeline.drain()  # everything the response counts as accepted is stored and on the bus
            await self._pipeline.bus.flush()
            return feed_pb2.IngestOddsResponse(
                received=summary.received,
                accepted=summary.accepted,
                rejected=sum(summary.rejected.values()),
                rejected_by_reason=dict(summary.rejected),
            )
        finally:
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader


def add_to_server(server: grpc.aio.Server, pipeline: FeedPipeline) -> None:
    """Registers FeedService. Needs the feed pipeline (its watchdog is started with ``pipeline.start()``)."""
    feed_pb2_grpc.add_FeedServiceServicer_to_server(FeedServicer(pipeline), server)


__all__ = ["FeedServicer", "add_to_server"]
