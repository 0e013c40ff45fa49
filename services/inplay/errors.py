"""Domain errors and their one mapping to gRPC status codes (with google.rpc error details).

Domain code raises :class:`DomainError` subclasses; servicers never build statuses themselves, they call
:func:`abort_with` (or :func:`to_rpc_status`) so that every RPC maps errors the same way. Rust core
exceptions (``inplay.core.CoreError`` and subclasses) map here too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from redis import exceptions as redis_errors

from inplay import core

log = logging.getLogger("inplay.errors")
# A store briefly out of reach (a Redis failover closes connections; a demoted primary is read-only for a
# moment; a restarted one is loading): the outcome is retriable, and every money call is idempotent by key.
_TRANSIENT: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    redis_errors.BusyLoadingError,
    ConnectionError,
    TimeoutError,
)

ERROR_DOMAIN = "inplay.dev"


@dataclass
class FieldViolation:
    field: str
    description: str


@dataclass
class DomainError(Exception):
    """Base of every error the domain reports to a caller."""

    message: str
    reason: str = "UNSPECIFIED"
    metadata: dict[str, str] = field(default_factory=dict)
    details: Sequence[Message] = ()
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass
class InvalidArgument(DomainError):
    violations: Sequence[FieldViolation] = ()
    reason: str = "INVALID_ARGUMENT"
    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT


@dataclass
class FailedPrecondition(DomainError):
    """The request is valid but the system's state rejects it (suspended market, moved odds, funds)."""

    code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION


@dataclass
class NotFound(DomainError):
    reason: str = "NOT_FOUND"
    code: grpc.StatusCode = grpc.StatusCode.NOT_FOUND


@dataclass
class Unauthenticated(DomainError):
    reason: str = "UNAUTHENTICATED"
    code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED


@dataclass
class PermissionDenied(DomainError):
    reason: str = "PERMISSION_DENIED"
    code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED


@dataclass
class Unavailable(DomainError):
    """A store did not answer; nothing was committed (the client may retry with the same key)."""

    reason: str = "UNAVAILABLE"
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE


@dataclass
class ResourceExhausted(DomainError):
    reason: str = "RESOURCE_EXHAUSTED"
    code: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED


@dataclass
class Aborted(DomainError):
    """A concurrent request holds the same idempotency key; retry later."""

    reason: str = "ABORTED"
    code: grpc.StatusCode = grpc.StatusCode.ABORTED


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def from_exception(exc: BaseException) -> DomainError:
    """Maps any exception raised under a servicer to a DomainError (unknown ones become INTERNAL)."""
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, core.CoreError):
        if isinstance(exc, core.ArithmeticOverflow):
            return InvalidArgument(str(exc), reason="ARITHMETIC_OVERFLOW")
        return InvalidArgument(str(exc), reason=type(exc).__name__.upper())
    if isinstance(exc, _TRANSIENT):
        log.warning("store unavailable under an RPC: %r", exc)
        return Unavailable("a store is unavailable; retry (with the same idempotency key)")
    log.error("unexpected error under an RPC", exc_info=exc)
    return DomainError("internal error", reason="INTERNAL", code=grpc.StatusCode.INTERNAL)


def to_rpc_status(error: DomainError) -> status_pb2.Status:
    details: list[any_pb2.Any] = [
        _pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata))
    ]
    if isinstance(error, InvalidArgument) and error.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in error.violations
                    ]
                )
            )
        )
    details.extend(_pack(d) for d in error.details)
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=details)


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    """Ends the RPC with the status that ``exc`` maps to (google.rpc.Status in the trailers)."""
    error = from_exception(exc)
    status = rpc_status.to_status(to_rpc_status(error))
    await context.abort_with_status(status)
    raise AssertionError("unreachable")  # abort_with_status always raises


def status_code_name(error: DomainError) -> str:
    return str(code_pb2.Code.Name(error.code.value[0]))
