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


_C = grpc.StatusCode

# Every ErrorInfo reason the API answers with: stable UPPER_SNAKE codes, each with its one gRPC code.
# docs/errors.md is checked against this table (tests/unit/test_error_contract.py); a reason raised but not
# listed is recorded in UNREGISTERED_REASONS, which the test session asserts empty.
REASONS: dict[str, tuple[grpc.StatusCode, str]] = {
    # generic
    "INVALID_ARGUMENT": (_C.INVALID_ARGUMENT, "a field is malformed or out of range (BadRequest names it)"),
    "NOT_FOUND": (_C.NOT_FOUND, "no such object for this caller"),
    "UNAUTHENTICATED": (_C.UNAUTHENTICATED, "no verified identity"),
    "MISSING_IDENTITY": (_C.UNAUTHENTICATED, "the verified-identity header is missing"),
    "INVALID_TOKEN": (_C.UNAUTHENTICATED, "INPLAY_AUTH_MODE=jwt: the bearer token does not verify"),
    "PERMISSION_DENIED": (_C.PERMISSION_DENIED, "the caller's role may not do this"),
    "OPERATOR_ONLY": (_C.PERMISSION_DENIED, "operators only"),
    "FEED_ONLY": (_C.PERMISSION_DENIED, "feed connectors (or operators) only"),
    "BAD_SCOPE": (_C.INVALID_ARGUMENT, "unknown kill-switch scope"),
    "UNAVAILABLE": (_C.UNAVAILABLE, "a store did not answer or the outcome is not known yet: retry (same key)"),
    "WALLET_REPAIRING": (_C.UNAVAILABLE, "the wallet projection is being rebuilt: retry shortly"),
    "RESOURCE_EXHAUSTED": (_C.RESOURCE_EXHAUSTED, "a limit was reached"),
    "ABORTED": (_C.ABORTED, "a concurrent call holds the key: retry"),
    "INTERNAL": (_C.INTERNAL, "a bug: never expected"),
    # the input wall (servicers/guard.py, docs/limits.md)
    "UNDECODABLE": (_C.INVALID_ARGUMENT, "the request bytes are not a valid message (or not UTF-8)"),
    "MESSAGE_TOO_LARGE": (_C.INVALID_ARGUMENT, "the request is larger than the API's maximum"),
    "FIELD_TOO_LONG": (_C.INVALID_ARGUMENT, "a string field is longer than its maximum"),
    "TOO_MANY_ITEMS": (_C.INVALID_ARGUMENT, "a repeated field has more items than its maximum"),
    "OUT_OF_RANGE": (_C.INVALID_ARGUMENT, "a timestamp or number outside its range"),
    "INVALID_PAGE_TOKEN": (_C.INVALID_ARGUMENT, "a page token not issued by this API for this query"),
    # the Rust core
    "INVALID_ODDS": (_C.INVALID_ARGUMENT, "odds the core refuses"),
    "INVALID_STAKE": (_C.INVALID_ARGUMENT, "a stake the core refuses"),
    "ARITHMETIC_OVERFLOW": (_C.INVALID_ARGUMENT, "a result beyond 64-bit minor units"),
    "CORE_ERROR": (_C.INVALID_ARGUMENT, "another refusal of the core"),
    # bets (inplay.bets.v1.RejectionReason without its prefix)
    "MARKET_NOT_FOUND": (_C.NOT_FOUND, "no such market"),
    "SELECTION_NOT_FOUND": (_C.NOT_FOUND, "no such selection in the market"),
    "MARKET_SUSPENDED": (_C.FAILED_PRECONDITION, "the market is suspended"),
    "MARKET_CLOSED": (_C.FAILED_PRECONDITION, "the market is closed (settled)"),
    "ODDS_STALE": (_C.FAILED_PRECONDITION, "the cached price is older than the freshness window"),
    "ODDS_CHANGED": (_C.FAILED_PRECONDITION, "the price moved beyond the tolerance (OddsChanged detail)"),
    "STAKE_TOO_LOW": (_C.INVALID_ARGUMENT, "below the minimum stake"),
    "STAKE_TOO_HIGH": (_C.INVALID_ARGUMENT, "above the maximum stake"),
    "PAYOUT_TOO_HIGH": (_C.FAILED_PRECONDITION, "the potential return exceeds the maximum payout"),
    "LIABILITY_EXCEEDED": (_C.FAILED_PRECONDITION, "the book's liability on the selection is reached"),
    "DAILY_STAKE_LIMIT": (_C.FAILED_PRECONDITION, "the account's daily stake limit would be exceeded"),
    "SELF_EXCLUDED": (_C.FAILED_PRECONDITION, "the account is self-excluded"),
    "INSUFFICIENT_FUNDS": (_C.FAILED_PRECONDITION, "the balance does not cover the stake"),
    "CURRENCY_MISMATCH": (_C.INVALID_ARGUMENT, "the stake is not in the book's currency"),
    "IN_PROGRESS": (_C.ABORTED, "a call with the same key is in flight: retry with the same key"),
    "IDEMPOTENCY_KEY_REUSED": (_C.FAILED_PRECONDITION, "the key was used for a different slip or deposit"),
    "OVERLOADED": (_C.RESOURCE_EXHAUSTED, "the commit queue is full: retry with the same key after a backoff"),
    # odds and settlement
    "KILL_SWITCH_ENGAGED": (_C.FAILED_PRECONDITION, "a kill switch holds the market"),
    "MARKET_SETTLED": (_C.FAILED_PRECONDITION, "the market is settled"),
    "MARKET_ALREADY_SETTLED": (_C.FAILED_PRECONDITION, "another run settled the market"),
    "MARKET_RESETTLED": (_C.FAILED_PRECONDITION, "a rollback would reinstate a superseded result"),
    "NOT_SETTLED": (_C.FAILED_PRECONDITION, "nothing to roll back or resettle"),
    "RUN_ID_TAKEN": (_C.FAILED_PRECONDITION, "the run id belongs to another request"),
    "EVENT_BUSY": (_C.ABORTED, "another run holds the event: retry"),
}
UNREGISTERED_REASONS: set[str] = set()


def reasons_markdown() -> str:
    """docs/errors.md: the reason table (generated; tests/unit/test_error_contract.py keeps it current)."""
    lines = [
        "# Error reasons",
        "",
        "Every error carries a `google.rpc.ErrorInfo` with one of these stable `reason` codes (domain",
        f"`{ERROR_DOMAIN}`) and always the same gRPC status code; INVALID_ARGUMENT also carries a `BadRequest`",
        "with the field path (`slip.legs[0].odds`, `slips[3].stake.amount_minor`). In PlaceBets results the",
        "same codes are the `RejectionReason` names without their `REJECTION_REASON_` prefix.",
        "Generated from `inplay.errors.REASONS`.",
        "",
        "| reason | gRPC code | meaning |",
        "| --- | --- | --- |",
    ]
    for reason, (code, meaning) in REASONS.items():
        lines.append(f"| `{reason}` | {code.name} | {meaning} |")
    return "\n".join(lines) + "\n"


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def from_exception(exc: BaseException) -> DomainError:
    """Maps any exception raised under a servicer to a DomainError (unknown ones become INTERNAL)."""
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, core.CoreError):
        return InvalidArgument(str(exc), reason=core.reason_of(exc))
    if _is_store_outage(exc) or isinstance(exc, _TRANSIENT):
        log.warning("store unavailable under an RPC: %r", exc)
        return Unavailable(f"a store did not answer ({type(exc).__name__}); retry", reason="UNAVAILABLE")
    log.error("unexpected error under an RPC", exc_info=exc)
    return DomainError("internal error", reason="INTERNAL", code=grpc.StatusCode.INTERNAL)


# Store outages are retryable (UNAVAILABLE), never INTERNAL; a store's refusal of a malformed request (a
# bug) stays INTERNAL. Driver classes matched by name, so that this module imports no Cassandra/Kafka code.
_OUTAGE_CLASS_NAMES = frozenset(
    {
        "OperationTimedOut",
        "NoHostAvailable",
        "Unavailable",
        "ReadTimeout",
        "WriteTimeout",
        "ReadFailure",
        "WriteFailure",
        "CoordinationFailure",
        "ConnectionException",
        "ConnectionShutdown",
        "KafkaException",
    }
)


def _is_store_outage(exc: BaseException) -> bool:
    from inplay.ports import LedgerError, WalletUnavailable

    if isinstance(exc, LedgerError | WalletUnavailable | TimeoutError | ConnectionError):
        return True
    return any(
        cls.__name__ in _OUTAGE_CLASS_NAMES and cls.__module__.split(".")[0] in ("cassandra", "confluent_kafka")
        for cls in type(exc).__mro__
    )


def to_rpc_status(error: DomainError) -> status_pb2.Status:
    if error.reason not in REASONS:
        UNREGISTERED_REASONS.add(error.reason)
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
