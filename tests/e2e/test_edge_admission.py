"""Admission control at the edge (issue 16): a second Envoy in front of the session's server, with a bet
circuit breaker of 1 call in flight. Calls above it are answered by Envoy itself as RESOURCE_EXHAUSTED with
ErrorInfo(OVERLOADED) + RetryInfo + grpc-retry-pushback-ms (not Envoy's default 503 = UNAVAILABLE), and
reads are not limited by it."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import grpc
import pytest
from edge_helpers import Edge, free_port, unique
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from inplay.type.v1 import types_pb2
from inplay_edge import start_envoy, validate, wait_ready, write_rendered

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def capped(edge: Edge, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("edge-capped")
    settings = replace(
        edge.settings,
        listen_port=free_port(),
        admin_port=free_port(),
        access_log=str(tmp / "access.log"),
        bet_max_in_flight=1,
        bet_retry_after_ms=250,
        bet_user_rate=10_000,
        bet_user_burst=10_000,
    )
    config = write_rendered(settings, tmp / "envoy.yaml")
    validate(config)
    envoy = start_envoy(config, tmp / "envoy.log")
    try:
        wait_ready(settings, envoy, timeout_s=30, require_upstream=True)
        yield replace(edge, settings=settings)
    finally:
        envoy.terminate()
        envoy.wait(10)


def _request(key: str) -> bets_pb2.PlaceBetRequest:
    leg = bets_pb2.BetLeg(market_id="no-such-market", selection_id="x", odds=types_pb2.Odds(numerator=2, denominator=1))
    stake = types_pb2.Money(amount_minor=100, currency="EUR")
    return bets_pb2.PlaceBetRequest(slip=bets_pb2.BetSlip(legs=[leg], stake=stake, idempotency_key=key))


def test_calls_above_the_bet_circuit_breaker_get_resource_exhausted_with_retry_info(capped: Edge) -> None:
    channel = grpc.insecure_channel(capped.target)
    bets = bets_pb2_grpc.BetServiceStub(channel)
    md = capped.md(unique("kickoff"))

    def place(i: int) -> grpc.RpcError | None:
        try:
            bets.PlaceBet(_request(unique(f"k{i}")), metadata=md, timeout=10)
        except grpc.RpcError as err:
            return err
        return None

    with ThreadPoolExecutor(48) as pool:
        errors = [e for e in pool.map(place, range(400)) if e is not None]
    shed = [e for e in errors if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert shed, "400 calls from 48 threads through a cap of 1: some must be shed"
    # The others reached the service, which refuses the slip; none became UNAVAILABLE (Envoy's 503).
    reached = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
    assert {e.code() for e in errors} - {grpc.StatusCode.RESOURCE_EXHAUSTED} <= reached, {e.code() for e in errors}
    err = shed[0]
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None and status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    found = {}
    for detail in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            if detail.Is(cls.DESCRIPTOR):
                msg = cls()
                detail.Unpack(msg)
                found[cls.DESCRIPTOR.name] = msg
    assert found["ErrorInfo"].reason == "OVERLOADED" and found["ErrorInfo"].metadata["shed_by"] == "edge"
    assert found["RetryInfo"].retry_delay.nanos == 250_000_000
    assert dict(err.trailing_metadata() or ()).get("grpc-retry-pushback-ms") == "250"
    # Reads do not go through the bet pool.
    for _ in range(20):
        bets.ListBets(bets_pb2.ListBetsRequest(), metadata=md, timeout=5)
    channel.close()
