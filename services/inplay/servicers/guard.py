"""The input wall in front of every RPC: undecodable and oversized requests never reach a handler.

:class:`InputGuard` is a server interceptor that rewraps each method handler:

- its request deserializer turns bytes that are not a valid message (bad wire format, a string field that is
  not UTF-8), a message above ``limits.MAX_MESSAGE_BYTES`` or a message breaking a field limit of
  :mod:`inplay.limits` into a :class:`Rejected` marker instead of raising (gRPC would answer UNKNOWN
  "Unexpected DecodeError");
- its behaviour answers a marker with INVALID_ARGUMENT (google.rpc.ErrorInfo + BadRequest with the field
  path) and counts it in ``inplay_input_rejected_total``, before the handler (and so any store) runs.

For a client stream the first bad message ends the request stream seen by the handler (which finishes
with what it received before) and the call then fails with INVALID_ARGUMENT for that message.

It must be the innermost interceptor (last in the server's list) so the metrics and tracing interceptors
see the guarded handler and record the INVALID_ARGUMENT.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client import Counter

from inplay import limits
from inplay.errors import FieldViolation, InvalidArgument, abort_with

INPUT_REJECTED = Counter(
    "inplay_input_rejected_total",
    "Requests refused by the input wall before any handler ran, by method and reason",
    ["method", "reason"],
)

Deserializer = Callable[[bytes], Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    """What the guarded deserializer returns for a request the handler must never see."""

    reason: str  # UNDECODABLE | MESSAGE_TOO_LARGE | FIELD_TOO_LONG | TOO_MANY_ITEMS | OUT_OF_RANGE
    message: str
    violations: tuple[limits.Violation, ...] = field(default=())

    def error(self, index: int | None = None) -> InvalidArgument:
        where = "" if index is None else f" (stream message {index})"
        return InvalidArgument(
            self.message + where,
            reason=self.reason,
            violations=[FieldViolation(v.field, v.description) for v in self.violations],
        )


def guarded_deserializer(inner: Deserializer | None) -> Deserializer:
    def decode(raw: bytes) -> Any:
        too_large = len(raw) > limits.MAX_MESSAGE_BYTES
        if inner is None:
            return _too_large(len(raw)) if too_large else raw
        try:
            message = inner(raw)  # at most TRANSPORT_MAX_MESSAGE_BYTES: parsing it is cheap (C)
        except Exception as exc:  # DecodeError and anything else the parser raises: the caller's bytes
            return Rejected("UNDECODABLE", f"request is not a valid message: {type(exc).__name__}")
        # Fields first: a message too big because of one field names that field.
        violations = limits.check(message)
        if violations:
            first = violations[0]
            return Rejected(first.reason, f"{first.field}: {first.description}", tuple(violations[:20]))
        return _too_large(len(raw)) if too_large else message

    return decode


def _too_large(size: int) -> Rejected:
    return Rejected("MESSAGE_TOO_LARGE", f"request of {size} bytes; at most {limits.MAX_MESSAGE_BYTES}")


async def _reject(context: grpc.aio.ServicerContext, method: str, rejected: Rejected, index: int | None = None) -> None:
    INPUT_REJECTED.labels(method, rejected.reason).inc()
    await abort_with(context, rejected.error(index))


class _StreamCheck:
    """Passes a request stream through until its first rejected message (kept for the answer)."""

    def __init__(self, requests: AsyncIterator[Any]) -> None:
        self._requests = requests
        self.rejected: Rejected | None = None
        self.index = 0

    async def messages(self) -> AsyncIterator[Any]:
        async for request in self._requests:
            if isinstance(request, Rejected):
                self.rejected = request
                return
            self.index += 1
            yield request


def _unary_unary(method: str, inner: Any) -> Any:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Rejected):
            await _reject(context, method, request)
        return await inner(request, context)

    return behaviour


def _unary_stream(method: str, inner: Any) -> Any:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, Rejected):
            await _reject(context, method, request)
        result = inner(request, context)
        if inspect.isasyncgen(result):
            async for response in result:
                yield response
        else:  # a coroutine handler that writes with context.write
            await result

    return behaviour


def _stream_unary(method: str, inner: Any) -> Any:
    async def behaviour(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        stream = _StreamCheck(requests)
        response = await inner(stream.messages(), context)
        if stream.rejected is not None:
            await _reject(context, method, stream.rejected, stream.index)
        return response

    return behaviour


def _stream_stream(method: str, inner: Any) -> Any:
    async def behaviour(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        stream = _StreamCheck(requests)
        result = inner(stream.messages(), context)
        if inspect.isasyncgen(result):
            async for response in result:
                yield response
        else:
            await result
        if stream.rejected is not None:
            await _reject(context, method, stream.rejected, stream.index)

    return behaviour


def guard_handler(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` with the guarded deserializer and a behaviour that answers rejected requests."""
    decode = guarded_deserializer(handler.request_deserializer)
    serialize = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_unary_unary(method, handler.unary_unary), decode, serialize)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_unary_stream(method, handler.unary_stream), decode, serialize)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_stream_unary(method, handler.stream_unary), decode, serialize)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(_stream_stream(method, handler.stream_stream), decode, serialize)
    return handler


class InputGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Applies :func:`guard_handler` to every method of the server (health and reflection included)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return guard_handler(handler_call_details.method, handler)


__all__ = ["INPUT_REJECTED", "InputGuard", "Rejected", "guard_handler", "guarded_deserializer"]
