"""A store that is briefly unreachable (a Redis failover: connection closed, a read-only replica, a server
still loading) is UNAVAILABLE, which clients retry with the same idempotency key; INTERNAL is not retried.
Found by the fault suite (tests/chaos, Redis primary killed and the replica promoted): PlaceBets answered
INTERNAL "internal error" for calls that hit the closed connection."""

from __future__ import annotations

import grpc
import pytest
from redis import exceptions as redis_errors

from inplay.errors import from_exception


@pytest.mark.parametrize(
    "exc",
    [
        redis_errors.ConnectionError("Connection closed by server."),
        redis_errors.TimeoutError("Timeout reading from socket"),
        redis_errors.ReadOnlyError("You can't write against a read only replica."),
        redis_errors.BusyLoadingError("Redis is loading the dataset in memory"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_briefly_unreachable_store_is_unavailable(exc: BaseException) -> None:
    error = from_exception(exc)
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert "retry" in error.message


def test_other_unknown_errors_stay_internal() -> None:
    assert from_exception(KeyError("x")).code == grpc.StatusCode.INTERNAL
    assert from_exception(redis_errors.ResponseError("ERR syntax")).code == grpc.StatusCode.INTERNAL
