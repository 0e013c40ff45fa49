"""The metrics endpoint of a running server (real stores) exposes the RPC and bet series with sane values
after a short load."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator

import grpc
import pytest

from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from inplay.type.v1 import types_pb2
from inplay.wallet.v1 import wallet_pb2, wallet_pb2_grpc

pytestmark = pytest.mark.integration
OPERATOR = (("x-inplay-subject", "ops"), ("x-inplay-roles", "operator"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(stack_env: dict[str, str]) -> Iterator[tuple[str, int]]:
    grpc_port, metrics_port = free_port(), free_port()
    tag = uuid.uuid4().hex[:6]
    env = {
        **os.environ,
        **stack_env,
        "INPLAY_REDIS_PREFIX": f"m{tag}:",
        "INPLAY_KEYSPACE": f"m_{tag}",
        "INPLAY_TOPIC_PREFIX": f"m{tag}.",
        "INPLAY_METRICS_PORT": str(metrics_port),
    }
    proc = subprocess.Popen([sys.executable, "-m", "inplay.server", "--port", str(grpc_port)], env=env)
    target = f"127.0.0.1:{grpc_port}"
    try:
        grpc.channel_ready_future(grpc.insecure_channel(target)).result(timeout=90)
        yield target, metrics_port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def test_metrics_after_load(server: tuple[str, int]) -> None:
    target, metrics_port = server
    async with grpc.aio.insecure_channel(target) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        bets = bets_pb2_grpc.BetServiceStub(channel)
        await wallet.Deposit(
            wallet_pb2.DepositRequest(
                account_id="m-acc", amount=types_pb2.Money(amount_minor=10_000, currency="EUR"), idempotency_key="m"
            ),
            metadata=OPERATOR,
        )
        for _ in range(50):
            await wallet.GetBalance(wallet_pb2.GetBalanceRequest(), metadata=(("x-inplay-subject", "m-acc"),))
        slip = bets_pb2.BetSlip(
            legs=[bets_pb2.BetLeg(market_id="nope", selection_id="x", odds=types_pb2.Odds(numerator=2, denominator=1))],
            stake=types_pb2.Money(amount_minor=100, currency="EUR"),
            acceptance_policy=bets_pb2.ACCEPTANCE_POLICY_ANY,
            idempotency_key="k",
        )
        for _ in range(20):
            with pytest.raises(grpc.aio.AioRpcError):
                await bets.PlaceBet(bets_pb2.PlaceBetRequest(slip=slip), metadata=(("x-inplay-subject", "m-acc"),))
        with pytest.raises(grpc.aio.AioRpcError):
            await bets.PlaceBet(bets_pb2.PlaceBetRequest(slip=slip))  # no identity
    await asyncio.sleep(0.2)
    values = scrape(metrics_port)
    get_balance = 'inplay_rpc_total{code="OK",method="/inplay.wallet.v1.WalletService/GetBalance"}'
    assert values[get_balance] == 50
    not_found = 'inplay_rpc_total{code="NOT_FOUND",method="/inplay.bets.v1.BetService/PlaceBet"}'
    assert values[not_found] == 20
    unauthenticated = 'inplay_rpc_total{code="UNAUTHENTICATED",method="/inplay.bets.v1.BetService/PlaceBet"}'
    assert values[unauthenticated] == 1
    count = 'inplay_rpc_duration_seconds_count{method="/inplay.wallet.v1.WalletService/GetBalance"}'
    total = 'inplay_rpc_duration_seconds_sum{method="/inplay.wallet.v1.WalletService/GetBalance"}'
    assert values[count] == 50 and 0 < values[total] < 50
    # The same idempotency key 20 times: one evaluated rejection, 19 replays of it.
    assert values['inplay_bets_rejected_total{reason="MARKET_NOT_FOUND"}'] == 1
    assert values["inplay_bets_replayed_total"] == 19
    assert any(re.match(r"inplay_bet_batch_size_count", k) for k in values)
