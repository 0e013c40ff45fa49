"""Issue 13, the input wall: size limits and undecodable requests, through the real gRPC server on the real
stores. Every case is answered INVALID_ARGUMENT with details before any handler (or store) runs."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from inplay import limits
from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from inplay.feed.v1 import feed_pb2, feed_pb2_grpc
from inplay.odds.v1 import odds_pb2, odds_pb2_grpc
from inplay.servicers.guard import INPUT_REJECTED
from inplay.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from inplay.type.v1 import types_pb2
from inplay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from tests.support.input_helpers import (
    OPERATOR,
    all_methods,
    as_user,
    call_raw,
    deposit,
    field_paths,
    make_market,
    reason,
    slip,
    snapshot,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
Served = tuple[Any, grpc.aio.Channel]


def rejected_count(method: str, why: str) -> float:
    return INPUT_REJECTED.labels(method, why)._value.get()  # type: ignore[no-any-return]


async def test_huge_bet_id_and_account_id_are_invalid_argument(served: Served, unique_id: Callable[[str], str]) -> None:
    """Issue: GetBet with a 100 KB bet id and Deposit with a 100 KB account id answered INTERNAL."""
    _, channel = served
    bets = bets_pb2_grpc.BetServiceStub(channel)
    wallet = wallet_pb2_grpc.WalletServiceStub(channel)
    huge = "b" * 100_000
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await bets.GetBet(bets_pb2.GetBetRequest(bet_id=huge), metadata=as_user(unique_id("acc")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_paths(err.value) == ["bet_id"] and reason(err.value) == "FIELD_TOO_LONG"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await wallet.Deposit(
            wallet_pb2.DepositRequest(
                account_id=huge, amount=types_pb2.Money(amount_minor=700, currency="EUR"), idempotency_key="k"
            ),
            metadata=OPERATOR,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_paths(err.value) == ["account_id"]


async def test_nested_field_paths_and_limits_at_the_edge(served: Served, unique_id: Callable[[str], str]) -> None:
    """The path names the nested field in the one style of the API (slips[i].legs[j]...); the limit is inclusive."""
    runtime, channel = served
    bets = bets_pb2_grpc.BetServiceStub(channel)
    market = await make_market(runtime, unique_id)
    account = unique_id("acc")
    await deposit(channel, account, 1_000, unique_id("dep"))
    ok = slip(market.market_id, "k" * 128)  # exactly at the limit: goes through to the domain
    long_market = slip("m" * 129, unique_id("k"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await bets.PlaceBets(bets_pb2.PlaceBetsRequest(slips=[ok, long_market]), metadata=as_user(account))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_paths(err.value) == ["slips[1].legs[0].market_id"]
    assert (await snapshot(channel, account)).balance == 1_000  # the valid slip was not placed either
    placed = await bets.PlaceBet(bets_pb2.PlaceBetRequest(slip=ok), metadata=as_user(account))
    assert placed.bet.bet_id
    too_many = bets_pb2.BetSlip(
        legs=[bets_pb2.BetLeg(market_id="m")] * (limits.REPEATED_MAX["inplay.bets.v1.BetSlip.legs"] + 1)
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await bets.PlaceBet(bets_pb2.PlaceBetRequest(slip=too_many), metadata=as_user(account))
    assert field_paths(err.value) == ["slip.legs"] and reason(err.value) == "TOO_MANY_ITEMS"


def _bad_utf8(descriptor: Any) -> bytes:
    """A message of ``descriptor`` whose first string field (nested if need be) holds the bytes FF FE."""
    for field in descriptor.fields:
        if field.type == field.TYPE_STRING:
            return bytes([(field.number << 3) | 2, 2, 0xFF, 0xFE])
    for field in descriptor.fields:
        if field.message_type is not None:
            inner = _bad_utf8(field.message_type)
            return bytes([(field.number << 3) | 2, len(inner)]) + inner
    raise AssertionError(f"{descriptor.full_name} has no string field")


async def test_non_utf8_string_is_invalid_argument_for_every_rpc(served: Served) -> None:
    """Issue: a request whose string field is not UTF-8 answered UNKNOWN ("Unexpected DecodeError")."""
    _, channel = served
    for method in all_methods():
        raw = _bad_utf8(method.input_type)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call_raw(channel, method, [raw])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method.full_name, err.value.details())
        assert reason(err.value) == "UNDECODABLE", method.full_name


async def test_truncated_wire_bytes_are_invalid_argument(served: Served) -> None:
    _, channel = served
    before = rejected_count("/inplay.bets.v1.BetService/GetBet", "UNDECODABLE")
    for raw in (b"\x0a\x05ab", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x0b"):
        method = bets_pb2.DESCRIPTOR.services_by_name["BetService"].methods_by_name["GetBet"]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call_raw(channel, method, [raw])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raw
    assert rejected_count("/inplay.bets.v1.BetService/GetBet", "UNDECODABLE") == before + 3


async def test_message_size_walls(served: Served, unique_id: Callable[[str], str]) -> None:
    """Above MAX_MESSAGE_BYTES the guard answers INVALID_ARGUMENT (counted); above the transport limit gRPC
    itself answers RESOURCE_EXHAUSTED. Either way nothing is read into a handler."""
    _, channel = served
    method = wallet_pb2.DESCRIPTOR.services_by_name["WalletService"].methods_by_name["GetBalance"]

    # Unknown field 15 (bytes) makes the message big without touching a known field's limit.
    def padded(size: int) -> bytes:
        body = b"x" * size
        length = bytearray()
        n = len(body)
        while True:
            byte, n = n & 0x7F, n >> 7
            length.append(byte | (0x80 if n else 0))
            if not n:
                break
        return bytes([(15 << 3) | 2]) + bytes(length) + body

    path = "/inplay.wallet.v1.WalletService/GetBalance"
    before = rejected_count(path, "MESSAGE_TOO_LARGE")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call_raw(channel, method, [padded(limits.MAX_MESSAGE_BYTES + 1)], metadata=as_user(unique_id("a")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and reason(err.value) == "MESSAGE_TOO_LARGE"
    assert rejected_count(path, "MESSAGE_TOO_LARGE") == before + 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call_raw(channel, method, [padded(limits.TRANSPORT_MAX_MESSAGE_BYTES + 1)])
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_oversized_feed_message_is_rejected_counted_and_harms_no_one(
    served: Served, unique_id: Callable[[str], str]
) -> None:
    """Issue: one 1.1 MB IngestOdds payload answered INTERNAL and then the odds cache, PlaceBet and a
    SettleEvent (Kafka deliveries not acknowledged) failed for everyone. Now: INVALID_ARGUMENT, counted, and the
    next calls of other users behave normally and quickly."""
    runtime, channel = served
    feed = feed_pb2_grpc.FeedServiceStub(channel)
    method = "/inplay.feed.v1.FeedService/IngestOdds"
    before = rejected_count(method, "FIELD_TOO_LONG")

    async def stream() -> Any:
        yield feed_pb2.IngestOddsRequest(provider="alpha", payload=b"{" + b" " * 1_100_000 + b"}")

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await feed.IngestOdds(stream(), metadata=OPERATOR, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_paths(err.value) == ["payload"]
    assert rejected_count(method, "FIELD_TOO_LONG") == before + 1

    market = await make_market(runtime, unique_id)
    account = unique_id("acc")
    await deposit(channel, account, 1_000, unique_id("dep"))
    t0 = time.perf_counter()
    got = await odds_pb2_grpc.OddsServiceStub(channel).GetMarket(
        odds_pb2.GetMarketRequest(market_id=market.market_id), metadata=as_user(account), timeout=5
    )
    assert got.market.market_id == market.market_id
    placed = await bets_pb2_grpc.BetServiceStub(channel).PlaceBet(
        bets_pb2.PlaceBetRequest(slip=slip(market.market_id, unique_id("k"))), metadata=as_user(account), timeout=5
    )
    assert placed.bet.bet_id
    settled = await settlement_pb2_grpc.SettlementServiceStub(channel).SettleEvent(
        settlement_pb2.SettleEventRequest(
            event_id=market.event_id,
            request_id=unique_id("r"),
            outcomes=[
                settlement_pb2.SelectionOutcome(
                    market_id=market.market_id, selection_id="home", result=settlement_pb2.SELECTION_RESULT_WIN
                )
            ],
            wait=True,
        ),
        metadata=OPERATOR,
        timeout=15,
    )
    assert settled.run.state == settlement_pb2.RUN_STATE_COMPLETED
    assert time.perf_counter() - t0 < 5.0
    assert (await snapshot(channel, account)).balance == 1_000 - 100 + 200


async def test_largest_real_batch_passes_the_wall(served: Served, unique_id: Callable[[str], str]) -> None:
    """1000 slips with ids and keys at their maximum fit in MAX_MESSAGE_BYTES: the wall refuses only what no
    real client sends (here the unfunded caller gets one rejection per slip, not a failed call)."""
    _, channel = served
    slips = [slip("m" * 128, f"{i:04d}" + "k" * 124) for i in range(1000)]
    request = bets_pb2.PlaceBetsRequest(slips=slips)
    assert request.ByteSize() < limits.MAX_MESSAGE_BYTES
    got = await bets_pb2_grpc.BetServiceStub(channel).PlaceBets(request, metadata=as_user(unique_id("a")), timeout=30)
    assert len(got.results) == 1000 and all(r.HasField("rejection") for r in got.results)


def _doc_table() -> dict[str, str]:
    text = (ROOT / "docs" / "limits.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([\w.]+)` \| ([^|]+) \|", text, flags=re.MULTILINE)
    return {name: value.strip() for name, value in rows}


def _proto_comments() -> dict[str, str]:
    """Full field name -> the ``// Limit: ...`` comment line right above the field in proto/."""
    found: dict[str, str] = {}
    for path in (ROOT / "proto").rglob("*.proto"):
        lines = path.read_text(encoding="utf-8").splitlines()
        package = next(line.split()[1].rstrip(";") for line in lines if line.startswith("package "))
        message = ""
        for prev, line in zip(["", *lines], lines, strict=False):
            if m := re.match(r"^message (\w+) \{", line):
                message = m.group(1)
            field = re.match(r"^\s+(?:repeated )?(?:map<[^>]+>|[\w.]+) (\w+) = \d+;", line)
            if field and prev.strip().startswith("// Limit: "):
                found[f"{package}.{message}.{field.group(1)}"] = prev.strip()
    return found


def test_every_request_field_has_a_documented_limit() -> None:
    """docs/limits.md and the proto comments state the enforced limit of every string, bytes and repeated
    field of every request, and the table of limits.py names only real fields (a renamed field cannot
    silently lose its limit)."""
    table = _doc_table()
    comments = _proto_comments()
    seen: set[str] = set()
    for method in all_methods():
        for name in limits.request_fields(method.input_type):
            seen.add(name)
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    for name in seen:
        field = pool.FindFieldByName(name)
        if field.is_repeated:
            want = str(limits.max_items(field))
            if field.type in (field.TYPE_STRING, field.TYPE_BYTES) or (
                field.message_type is not None and field.message_type.GetOptions().map_entry
            ):
                want += f" items, {limits.max_bytes(field)} bytes each"
            else:
                want += " items"
        else:
            want = f"{limits.max_bytes(field)} bytes"
        assert table.get(name, "").replace("_", "").replace(",", "") == want.replace(",", ""), name
        stated = want.replace(" items, ", " items, each at most ").replace(" bytes each", " bytes")
        assert comments.get(name, "").startswith(f"// Limit: at most {stated}"), (name, comments.get(name))
    for name in [*limits.FIELD_MAX_BYTES, *limits.REPEATED_MAX]:
        assert name in seen, f"limits.py names {name}, which no request has"


async def test_out_of_range_timestamp_is_invalid_argument(served: Served) -> None:
    """Found by the fuzz suite: IngestOdds with received_at.seconds near 2**63 answered INTERNAL (the
    servicer's ToMilliseconds overflowed). Timestamps outside the protobuf range are refused at the wall."""
    _, channel = served
    feed = feed_pb2_grpc.FeedServiceStub(channel)

    async def stream() -> Any:
        req = feed_pb2.IngestOddsRequest(provider="alpha", payload=b"{}")
        req.received_at.seconds = 2**62
        yield req

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await feed.IngestOdds(stream(), metadata=OPERATOR, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_paths(err.value) == ["received_at"] and reason(err.value) == "OUT_OF_RANGE"
    from inplay.admin.v1 import admin_pb2, admin_pb2_grpc

    request = admin_pb2.SetAccountLimitsRequest(account_id="acc-1")
    request.self_excluded_until.nanos = -1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin_pb2_grpc.AdminServiceStub(channel).SetAccountLimits(request, metadata=OPERATOR)
    assert field_paths(err.value) == ["self_excluded_until"]


async def test_client_stream_ends_at_the_first_bad_message(served: Served) -> None:
    """IngestOdds: the messages before a bad one are processed, the call then fails naming the bad one (by its
    index in the stream) — the handler never sees it."""
    _, channel = served
    feed = feed_pb2_grpc.FeedServiceStub(channel)

    async def stream() -> Any:
        yield feed_pb2.IngestOddsRequest(provider="alpha", payload=b"{}")
        yield feed_pb2.IngestOddsRequest(provider="p" * 65, payload=b"{}")
        yield feed_pb2.IngestOddsRequest(provider="alpha", payload=b"{}")

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await feed.IngestOdds(stream(), metadata=OPERATOR, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_paths(err.value) == ["provider"] and "stream message 1" in (err.value.details() or "")


async def test_health_and_reflection_pass_the_wall(served: Served) -> None:
    """The guard wraps every handler shape, the server's own services included (unary, bidi streaming)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    _, channel = served
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    async def ask() -> Any:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names: list[str] = []
    async for response in reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(ask()):
        names += [s.name for s in response.list_services_response.service]
    assert "inplay.bets.v1.BetService" in names
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="s" * 201))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
