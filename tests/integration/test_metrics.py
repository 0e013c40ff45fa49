"""The metrics endpoint (INPLAY_METRICS_PORT) of a server on the real stores exposes the RPC and bet series
with the values a known short load (~300 calls) must produce."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from inplay.adapters.redis_odds import RedisOddsCache
from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from inplay.core import Odds
from inplay.model import MarketState, MarketStatus, SelectionPrice
from inplay.odds.v1 import odds_pb2, odds_pb2_grpc
from inplay.type.v1 import types_pb2
from inplay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from tests.support.keyspaces import drop_keyspace

pytestmark = pytest.mark.integration
OPERATOR = (("x-inplay-subject", "ops"), ("x-inplay-roles", "operator"))
BET = "/inplay.bets.v1.BetService/"


@dataclass
class Server:
    target: str
    metrics_port: int
    redis_url: str
    redis_prefix: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(stack_env: dict[str, str]) -> Iterator[Server]:
    grpc_port, metrics_port = free_port(), free_port()
    tag = uuid.uuid4().hex[:6]
    env = {
        **os.environ,
        **stack_env,
        "INPLAY_REDIS_PREFIX": f"m{tag}:",
        "INPLAY_KEYSPACE": f"m_{tag}",
        "INPLAY_TOPIC_PREFIX": f"m{tag}.",
        "INPLAY_METRICS_PORT": str(metrics_port),
        "INPLAY_MAX_PRICE_AGE_PREMATCH_MS": "600000",  # a slow shared box must not make the price stale
    }
    proc = subprocess.Popen([sys.executable, "-m", "inplay.server", "--port", str(grpc_port)], env=env)
    target = f"127.0.0.1:{grpc_port}"
    try:
        grpc.channel_ready_future(grpc.insecure_channel(target)).result(timeout=90)
        yield Server(target, metrics_port, stack_env["INPLAY_REDIS_URL"], env["INPLAY_REDIS_PREFIX"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        drop_keyspace(stack_env, env["INPLAY_KEYSPACE"])


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def put_market(server: Server, market_id: str) -> None:
    cache = await RedisOddsCache.connect(server.redis_url, server.redis_prefix)
    try:
        await cache.put_markets(
            [
                MarketState(
                    market_id=market_id,
                    event_id="m-ev",
                    sport="football",
                    market_type="MATCH_RESULT",
                    name="Match result",
                    in_play=False,
                    status=MarketStatus.ACTIVE,
                    status_reason="",
                    selections=(
                        SelectionPrice("home", "Home", Odds(2, 1)),
                        SelectionPrice("away", "Away", Odds(2, 1)),
                    ),
                    version=1,
                    updated_at_ms=time.time_ns() // 1_000_000,
                )
            ]
        )
    finally:
        await cache.close()


def slip(
    market: str, key: str, num: int = 2, stake: int = 100, policy: str = "ACCEPTANCE_POLICY_ANY"
) -> bets_pb2.BetSlip:
    return bets_pb2.BetSlip(
        legs=[
            bets_pb2.BetLeg(market_id=market, selection_id="home", odds=types_pb2.Odds(numerator=num, denominator=1))
        ],
        stake=types_pb2.Money(amount_minor=stake, currency="EUR"),
        acceptance_policy=policy,
        idempotency_key=key,
    )


async def test_metrics_after_load(server: Server) -> None:
    market = "m-mkt"
    await put_market(server, market)
    rich, poor = (("x-inplay-subject", "m-rich"),), (("x-inplay-subject", "m-poor"),)
    async with grpc.aio.insecure_channel(server.target) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        bets = bets_pb2_grpc.BetServiceStub(channel)
        odds = odds_pb2_grpc.OddsServiceStub(channel)
        for account, amount in (("m-rich", 1_000_000), ("m-poor", 150)):
            await wallet.Deposit(
                wallet_pb2.DepositRequest(
                    account_id=account,
                    amount=types_pb2.Money(amount_minor=amount, currency="EUR"),
                    idempotency_key=f"fund-{account}",
                ),
                metadata=OPERATOR,
            )
        for _ in range(100):
            await wallet.GetBalance(wallet_pb2.GetBalanceRequest(), metadata=rich)
        for _ in range(50):
            await odds.GetMarket(odds_pb2.GetMarketRequest(market_id=market), metadata=rich)
        # 100 unary bets, concurrent: the server group-commits them.
        await asyncio.gather(
            *(bets.PlaceBet(bets_pb2.PlaceBetRequest(slip=slip(market, f"u{i}")), metadata=rich) for i in range(100))
        )
        # One batch: 20 accepted, 1 rejected for a moved price (3/1 asked, 2/1 offered, no price moves accepted).
        batch = [slip(market, f"b{i}") for i in range(20)] + [
            slip(market, "moved", num=3, policy="ACCEPTANCE_POLICY_NONE")
        ]
        reply = await bets.PlaceBets(bets_pb2.PlaceBetsRequest(slips=batch), metadata=rich)
        assert sum(r.HasField("bet") for r in reply.results) == 20
        # 150 in the account: the first 100-stake bet goes through, the second is short of funds.
        reply = await bets.PlaceBets(
            bets_pb2.PlaceBetsRequest(slips=[slip(market, "p1"), slip(market, "p2")]), metadata=poor
        )
        assert [r.HasField("bet") for r in reply.results] == [True, False]
        # The same idempotency key 20 times on an unknown market: one evaluated rejection, 19 replays of it.
        for _ in range(20):
            with pytest.raises(grpc.aio.AioRpcError):
                await bets.PlaceBet(bets_pb2.PlaceBetRequest(slip=slip("nope", "k")), metadata=rich)
        with pytest.raises(grpc.aio.AioRpcError) as no_identity:
            await bets.PlaceBet(bets_pb2.PlaceBetRequest(slip=slip(market, "anon")))
        assert no_identity.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await asyncio.sleep(0.2)
    v = scrape(server.metrics_port)

    # inplay_rpc_total{method, code}
    def rpc(method: str, code: str = "OK") -> float:
        return v.get(f'inplay_rpc_total{{code="{code}",method="{method}"}}', 0.0)

    assert rpc("/inplay.wallet.v1.WalletService/GetBalance") == 100
    assert rpc("/inplay.wallet.v1.WalletService/Deposit") == 2
    assert rpc("/inplay.odds.v1.OddsService/GetMarket") == 50
    assert rpc(BET + "PlaceBet") == 100
    assert rpc(BET + "PlaceBets") == 2
    assert rpc(BET + "PlaceBet", "NOT_FOUND") == 20
    assert rpc(BET + "PlaceBet", "UNAUTHENTICATED") == 1

    # inplay_rpc_duration_seconds{method}: a histogram consistent with the counts, sane latencies
    for method, calls in (("/inplay.wallet.v1.WalletService/GetBalance", 100), (BET + "PlaceBet", 121)):
        count = v[f'inplay_rpc_duration_seconds_count{{method="{method}"}}']
        total = v[f'inplay_rpc_duration_seconds_sum{{method="{method}"}}']
        assert count == calls and 0 < total / count < 5, method
        buckets = sorted(
            (float(k.split('le="')[1].split('"')[0]), val)
            for k, val in v.items()
            if k.startswith("inplay_rpc_duration_seconds_bucket") and f'method="{method}"' in k
        )
        assert [c for _, c in buckets] == sorted(c for _, c in buckets), "cumulative buckets"
        assert buckets[-1] == (float("inf"), count)

    # bets by outcome
    assert v["inplay_bets_accepted_total"] == 100 + 20 + 1
    assert v['inplay_bets_rejected_total{reason="ODDS_CHANGED"}'] == 1
    assert v['inplay_bets_rejected_total{reason="INSUFFICIENT_FUNDS"}'] == 1
    assert v['inplay_bets_rejected_total{reason="MARKET_NOT_FOUND"}'] == 1
    assert v["inplay_bets_replayed_total"] == 19
    # group commit: fewer batches than unary bets
    assert 0 < v["inplay_bet_batch_size_count"] < 100 + 20 + 2 + 1
    assert v["inplay_bet_batch_size_sum"] >= 100 + 21 + 2
    # the age of the cached price at check time, observed for the priced bets
    # Observed once per market per batch (not per leg: a metric update costs microseconds on the bet path).
    assert 0 < v["inplay_odds_age_seconds_count"] <= 100 + 21
    assert 0 <= v["inplay_odds_age_seconds_sum"] / v["inplay_odds_age_seconds_count"] < 600
