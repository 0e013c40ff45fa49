"""The one wrapper of every unary RPC: the handler body raises domain errors; this maps any exception to
the gRPC status of ``inplay.errors`` (google.rpc details) in one place. Identity stays one explicit line in
each handler (``auth.principal`` / ``auth.require_operator``), so that who may call what reads at the top."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from inplay.errors import abort_with

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")

Handler = Callable[[S, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def rpc(handler: Handler[S, Req, Resp]) -> Handler[S, Req, Resp]:
    @functools.wraps(handler)
    async def wrapped(self: S, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await handler(self, request, context)
        except Exception as exc:
            await abort_with(context, exc)

    return wrapped


__all__ = ["rpc"]
