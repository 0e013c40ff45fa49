"""A trace of one bet: the caller's trace continues through the server span, the bet batch and every
store call (Redis, Cassandra, Kafka), with the bet id on the spans. Real stores; spans captured in memory."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inplay.app import Runtime
from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from inplay.core import Odds
from inplay.model import MarketState, MarketStatus, SelectionPrice
from inplay.type.v1 import types_pb2
from inplay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from tests.support.api import caught_up

pytestmark = pytest.mark.integration

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    return EXPORTER


async def test_one_bet_is_one_trace_across_every_hop(
    spans: InMemorySpanExporter, served: tuple[Runtime, grpc.aio.Channel], unique_id: Callable[[str], str]
) -> None:
    runtime, channel = served
    market = MarketState(
        market_id=unique_id("mkt"),
        event_id=unique_id("ev"),
        sport="football",
        market_type="MATCH_RESULT",
        name="Match result",
        in_play=False,
        status=MarketStatus.ACTIVE,
        status_reason="",
        selections=(SelectionPrice("home", "Home", Odds.from_decimal("2.00")),),
        version=1,
        updated_at_ms=time.time_ns() // 1_000_000,
    )
    await runtime.odds.put_markets([market])
    account = unique_id("acc")
    await wallet_pb2_grpc.WalletServiceStub(channel).Deposit(
        wallet_pb2.DepositRequest(
            account_id=account, amount=types_pb2.Money(amount_minor=1_000, currency="EUR"), idempotency_key="t"
        ),
        metadata=(("x-inplay-subject", "ops"), ("x-inplay-roles", "operator")),
    )
    spans.clear()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    placed = await bets_pb2_grpc.BetServiceStub(channel).PlaceBet(
        bets_pb2.PlaceBetRequest(
            slip=bets_pb2.BetSlip(
                legs=[
                    bets_pb2.BetLeg(
                        market_id=market.market_id,
                        selection_id="home",
                        odds=types_pb2.Odds(numerator=2, denominator=1),
                    )
                ],
                stake=types_pb2.Money(amount_minor=100, currency="EUR"),
                acceptance_policy=bets_pb2.ACCEPTANCE_POLICY_NONE,
                idempotency_key="traced",
            )
        ),
        metadata=(("x-inplay-subject", account), ("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01")),
    )
    bet_id = placed.bet.bet_id
    await caught_up(runtime)
    every = spans.get_finished_spans()
    finished = {s.name: s for s in every if format(s.context.trace_id, "032x") == trace_id}
    for name in ("inplay.bets.v1.BetService/PlaceBet", "bets.place_batch", "journal.commit"):
        assert name in finished, f"span {name} missing from the trace; have {sorted(finished)}"
    # The commit is one batch for many requests: its span links to each request's trace and carries the
    # bet ids; the store calls are its children; the projection (views + BetPlaced) carries the bet ids too.
    [batch] = [
        s
        for s in every
        if s.name == "journal.batch" and any(format(link.context.trace_id, "032x") == trace_id for link in s.links)
    ]
    batch_trace = batch.context.trace_id
    children = {s.name: s for s in every if s.context.trace_id == batch_trace}
    finished.update({name: children[name] for name in ("redis wallet.debit_batch", "cassandra journal.write")})
    [publish] = [
        s for s in every if s.name == "kafka bus.publish" and bet_id in tuple(s.attributes.get("inplay.bet_ids", ()))
    ]
    finished["kafka bus.publish"] = publish
    server_span = finished["inplay.bets.v1.BetService/PlaceBet"]
    assert server_span.parent is not None and format(server_span.parent.span_id, "016x") == "00f067aa0ba902b7"
    for name in ("bets.place_batch", "redis wallet.debit_batch", "cassandra journal.write", "kafka bus.publish"):
        attributes = finished[name].attributes or {}
        assert bet_id in tuple(attributes["inplay.bet_ids"]), name  # type: ignore[arg-type]
