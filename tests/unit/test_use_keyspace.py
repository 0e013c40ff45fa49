"""A keyspace created a moment ago may not be known yet to the node that serves ``USE`` (the CI failure of
test_settlement_crash on the 3-node cluster after a healed partition): bounded retry on that answer only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inplay.adapters.migrations import migrate, until_schema_agreed, use_keyspace


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


class ReadFailure(Exception):
    pass


class FreshTableSession(FakeSession):
    """A session whose first reads of the just-created history table fail on a replica with older schema
    (the CI chaos run's answer, verbatim)."""

    def __init__(self, failures: int, answer: str = "INCOMPATIBLE_SCHEMA from /127.0.1.3:17000") -> None:
        super().__init__(failures=0)
        self.read_failures = failures
        self.answer = answer
        self.reads = 0

    def execute(self, query: str, params: Any = None, timeout: float | None = None) -> list[Any]:
        if query.startswith("SELECT version, checksum FROM schema_migrations"):
            self.reads += 1
            if self.reads <= self.read_failures:
                raise ReadFailure(
                    'Error from server: code=1300 [Replica(s) failed to execute read] message="Operation failed - '
                    f'received 1 responses and 1 failures: {self.answer}" info={{}}'
                )
        return []

    def prepare(self, query: str) -> object:
        return object()


def test_a_history_table_not_yet_on_every_replica_is_read_again(tmp_path: Path) -> None:
    session = FreshTableSession(failures=2)
    assert migrate(session, "ks", replication="", directory=tmp_path) == []
    assert session.reads == 3
    assert session.cluster.control_connection.waits == 2


def test_a_replica_that_does_not_know_the_table_yet_is_read_again(tmp_path: Path) -> None:
    """The other form of the race (a fresh clone's chaos run, 2026-12-04): the replica logs ``Unknown CF``
    (UnknownTableException) and the coordinator reports its failure as ``UNKNOWN``."""
    session = FreshTableSession(failures=2, answer="UNKNOWN from /127.0.1.4:17000")
    assert migrate(session, "ks", replication="", directory=tmp_path) == []
    assert session.reads == 3


def test_a_read_that_keeps_failing_is_raised(tmp_path: Path) -> None:
    session = FreshTableSession(failures=10**9)
    with pytest.raises(ReadFailure, match="INCOMPATIBLE_SCHEMA"):
        until_schema_agreed(session, lambda: session.execute("SELECT version, checksum FROM schema_migrations"),
                            ("INCOMPATIBLE_SCHEMA",), "t", timeout_s=0.05, pause_s=0.01)  # fmt: skip
    assert 1 < session.reads < 100
