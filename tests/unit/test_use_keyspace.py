"""A keyspace created a moment ago may not be known yet to the node that serves ``USE`` (the CI failure of
test_settlement_crash on the 3-node cluster after a healed partition): bounded retry on that answer only."""

from __future__ import annotations

from typing import Any

import pytest

from inplay.adapters.migrations import use_keyspace


class InvalidRequest(Exception):
    pass


class FakeControl:
    def __init__(self) -> None:
        self.waits = 0

    def wait_for_schema_agreement(self, wait_time: float) -> bool:
        self.waits += 1
        return True


class FakeSession:
    def __init__(self, failures: int, message: str = "Keyspace 't_600c5aa9db4a' does not exist") -> None:
        self.failures = failures
        self.message = message
        self.calls = 0
        self.keyspace: str | None = None
        self.cluster: Any = type("Cluster", (), {"control_connection": FakeControl()})()

    def set_keyspace(self, keyspace: str) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise InvalidRequest(f'Error from server: code=2200 [Invalid query] message="{self.message}"')
        self.keyspace = keyspace


def test_unknown_keyspace_is_retried_after_waiting_for_agreement() -> None:
    session = FakeSession(failures=2)
    use_keyspace(session, "t_600c5aa9db4a", pause_s=0.0)
    assert session.keyspace == "t_600c5aa9db4a"
    assert session.calls == 3
    assert session.cluster.control_connection.waits == 2


def test_other_errors_are_not_retried() -> None:
    session = FakeSession(failures=1, message="unauthorized")
    with pytest.raises(InvalidRequest):
        use_keyspace(session, "ks", pause_s=0.0)
    assert session.calls == 1


def test_retry_is_bounded() -> None:
    session = FakeSession(failures=10**9)
    with pytest.raises(InvalidRequest, match="does not exist"):
        use_keyspace(session, "ks", timeout_s=0.05, pause_s=0.01)
    assert 1 < session.calls < 100
