"""Traffic through the real Envoy: native gRPC and gRPC-web end to end, health and reflection, the bet
placement rate limit, CORS, the web page and the dev token endpoint."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import jwt
import pytest
from edge_helpers import ALLOWED_ORIGIN, Edge, FeedDriver, Metadata, grpc_web_call, unique
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from inplay.odds.v1 import odds_pb2, odds_pb2_grpc
from inplay.type.v1 import types_pb2
from inplay.wallet.v1 import wallet_pb2

pytestmark = pytest.mark.integration


def _odds(decimal_text: str) -> types_pb2.Odds:
    whole, _, frac = decimal_text.partition(".")
    den = 10 ** len(frac)
    return types_pb2.Odds(numerator=int(whole) * den + int(frac or 0), denominator=den)


def _slip(market: str, selection: str, odds: str, stake: int, key: str) -> bets_pb2.PlaceBetRequest:
    return bets_pb2.PlaceBetRequest(
        slip=bets_pb2.BetSlip(
            legs=[bets_pb2.BetLeg(market_id=market, selection_id=selection, odds=_odds(odds))],
            stake=types_pb2.Money(amount_minor=stake, currency="EUR"),
            acceptance_policy=bets_pb2.ACCEPTANCE_POLICY_NONE,
            idempotency_key=key,
        )
    )


# ---------------------------------------------------------------------------------------- public endpoints


def test_health_is_public(edge: Edge) -> None:
    stub = health_pb2_grpc.HealthStub(edge.channel())
    assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    web = grpc_web_call(edge, "/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest())
    assert web.code == grpc.StatusCode.OK
    assert health_pb2.HealthCheckResponse.FromString(web.messages[0]).status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_is_public(edge: Edge) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(edge.channel())
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"inplay.bets.v1.BetService", "inplay.wallet.v1.WalletService"} <= names


def test_unknown_service_is_unimplemented_after_authentication(edge: Edge) -> None:
    method = "/inplay.nope.v1.NopeService/Nope"
    call = edge.channel().unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as no_token:
        call(b"", timeout=5)
    assert no_token.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as with_token:
        call(b"", metadata=edge.md("alice"), timeout=5)
    assert with_token.value.code() == grpc.StatusCode.UNIMPLEMENTED


# ---------------------------------------------------------------------------------- native gRPC + gRPC-web


def test_native_grpc_end_to_end(edge: Edge, feed: FeedDriver) -> None:
    assert edge.event is not None
    user = unique("native")
    edge.deposit(user, 5_000)
    market = edge.event.markets[0]
    home = next(iter(market.selections))
    odds = odds_pb2_grpc.OddsServiceStub(edge.channel())
    got = odds.GetMarket(odds_pb2.GetMarketRequest(market_id=market.market_id), metadata=edge.md(user), timeout=5)
    price = next(s.odds for s in got.market.selections if s.selection_id == home)
    assert price.decimal == edge.event.prices[(market.market_id, home)]
    listed = odds.ListMarkets(odds_pb2.ListMarketsRequest(event_id=edge.event.event_id), metadata=edge.md(user))
    assert {m.market_id for m in listed.markets} == {m.market_id for m in edge.event.markets}

    bets = bets_pb2_grpc.BetServiceStub(edge.channel())
    key = unique("key")
    placed = bets.PlaceBet(_slip(market.market_id, home, price.decimal, 1_000, key), metadata=edge.md(user), timeout=10)
    assert placed.bet.account_id == user and not placed.replayed
    again = bets.PlaceBet(_slip(market.market_id, home, price.decimal, 1_000, key), metadata=edge.md(user), timeout=10)
    assert again.replayed and again.bet.bet_id == placed.bet.bet_id
    assert edge.balance(user) == 4_000
    fetched = bets.GetBet(bets_pb2.GetBetRequest(bet_id=placed.bet.bet_id), metadata=edge.md(user), timeout=5)
    assert fetched.bet.bet_id == placed.bet.bet_id


def test_grpc_web_unary_and_odds_changed_details(edge: Edge, feed: FeedDriver) -> None:
    assert edge.event is not None
    user = unique("web")
    edge.deposit(user, 5_000)
    web = grpc_web_call(
        edge, "/inplay.wallet.v1.WalletService/GetBalance", wallet_pb2.GetBalanceRequest(), edge.md(user)
    )
    assert web.code == grpc.StatusCode.OK
    assert wallet_pb2.GetBalanceResponse.FromString(web.messages[0]).balance.amount_minor == 5_000

    market = edge.event.markets[1]
    sel = next(iter(market.selections))
    current = edge.event.prices[(market.market_id, sel)]
    stale = "1.50" if current != "1.50" else "1.40"  # far outside the 5 % tolerance
    rejected = grpc_web_call(
        edge,
        "/inplay.bets.v1.BetService/PlaceBet",
        _slip(market.market_id, sel, stale, 200, unique("k")),
        edge.md(user),
    )
    assert rejected.code == grpc.StatusCode.FAILED_PRECONDITION, rejected
    status = rejected.status_details()
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    changed = bets_pb2.OddsChanged()
    found = {d.type_url.rsplit("/", 1)[1] for d in status.details}
    assert {"google.rpc.ErrorInfo", "inplay.bets.v1.OddsChanged"} <= found
    for d in status.details:
        if d.Is(info.DESCRIPTOR):
            d.Unpack(info)
        if d.Is(changed.DESCRIPTOR):
            d.Unpack(changed)
    assert "ODDS_CHANGED" in info.reason
    assert changed.current.decimal == current

    accepted = grpc_web_call(
        edge,
        "/inplay.bets.v1.BetService/PlaceBet",
        _slip(market.market_id, sel, current, 200, unique("k")),
        edge.md(user),
    )
    assert accepted.code == grpc.StatusCode.OK, accepted
    assert bets_pb2.PlaceBetResponse.FromString(accepted.messages[0]).bet.account_id == user


def test_grpc_web_server_streaming_odds(edge: Edge, feed: FeedDriver) -> None:
    assert edge.event is not None
    market = edge.event.markets[0]
    sel = next(iter(market.selections))
    new_price = "2.20" if edge.event.prices[(market.market_id, sel)] != "2.20" else "2.30"

    def move_soon() -> None:
        time.sleep(1.0)
        feed.price(market.market_id, {sel: new_price})

    mover = threading.Thread(target=move_soon)
    mover.start()
    web = grpc_web_call(
        edge,
        "/inplay.odds.v1.OddsService/StreamOdds",
        odds_pb2.StreamOddsRequest(event_ids=[edge.event.event_id]),
        edge.md(unique("watcher")),
        max_messages=30,
        timeout=6,
    )
    mover.join()
    updates = [odds_pb2.StreamOddsResponse.FromString(m) for m in web.messages]
    assert updates and updates[0].kind == odds_pb2.UPDATE_KIND_SNAPSHOT
    assert {m.market_id for m in updates[0].markets} == {m.market_id for m in edge.event.markets}
    seen = [
        s.odds.decimal
        for u in updates[1:]
        for m in u.markets
        if m.market_id == market.market_id
        for s in m.selections
        if s.selection_id == sel
    ]
    assert new_price in seen, seen


def test_client_x_envoy_headers_are_ignored(edge: Edge, feed: FeedDriver) -> None:
    """A client cannot shorten (or lengthen) timeouts or ask for retries with x-envoy-* headers."""
    assert edge.event is not None
    md = (
        *edge.md(unique("watcher")),
        ("x-envoy-upstream-rq-timeout-ms", "200"),
        ("x-envoy-retry-on", "reset"),
    )
    odds = odds_pb2_grpc.OddsServiceStub(edge.channel())
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as ended:
        for _ in odds.StreamOdds(odds_pb2.StreamOddsRequest(event_ids=[edge.event.event_id]), metadata=md, timeout=2):
            pass
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # the client's 2 s, not Envoy's 200 ms
    assert time.monotonic() - t0 >= 1.8


# ------------------------------------------------------------------------------------------------ rate limit


def test_bet_placement_is_rate_limited_per_user(edge: Edge) -> None:
    """Within one refill interval a user gets ``burst`` calls through (+ what refills meanwhile); the rest
    are RESOURCE_EXHAUSTED from Envoy. Another user's bucket is untouched."""
    burst, rate = edge.settings.bet_user_burst, edge.settings.bet_user_rate
    user = unique("greedy")
    md = edge.md(user)
    bets = bets_pb2_grpc.BetServiceStub(edge.channel())
    attempts = burst + 2 * rate + 10

    def place(i: int) -> grpc.StatusCode:
        try:
            bets.PlaceBet(_slip("no-such-market", "x", "2.00", 100, f"{user}-{i}"), metadata=md, timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as err:
            code: grpc.StatusCode = err.code()
            return code

    t0 = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(place, range(attempts)))
    elapsed = time.monotonic() - t0
    limited = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    passed = attempts - limited  # reached the service (which rejects the unknown market)
    assert limited > 0
    assert burst <= passed <= burst + rate * (int(elapsed) + 1), (passed, elapsed, codes)

    # gRPC-web clients see RESOURCE_EXHAUSTED too (not HTTP 429 / UNAVAILABLE).
    web_md = edge.md(unique("greedy-web"))

    def place_web(i: int) -> grpc.StatusCode:
        slip = _slip("no-such-market", "x", "2.00", 100, f"web-{i}-{unique('k')}")
        return grpc_web_call(edge, "/inplay.bets.v1.BetService/PlaceBet", slip, web_md).code

    with ThreadPoolExecutor(32) as pool:
        web_codes = list(pool.map(place_web, range(burst + rate + 10)))
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in web_codes, web_codes
    assert set(web_codes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND}, web_codes

    # Another user is not affected.
    with pytest.raises(grpc.RpcError) as other:
        bets.PlaceBet(_slip("no-such-market", "x", "2.00", 100, unique("k")), metadata=edge.md(unique("calm")))
    assert other.value.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
    # Reads are not limited.
    for _ in range(burst + 5):
        bets.ListBets(bets_pb2.ListBetsRequest(), metadata=md, timeout=5)


def test_bet_placement_rate_limit_counts_slips_not_calls(edge: Edge) -> None:
    """A PlaceBets call of n slips takes n tokens of the user's bucket: a call with more slips than the bucket
    holds is refused at the edge (with a call count it would pass as 1), one that fits passes, and the slip
    count comes from the body (a client-sent x-inplay-slips header is ignored)."""
    burst = edge.settings.bet_user_burst
    bets = bets_pb2_grpc.BetServiceStub(edge.channel())

    def batch(user: str, n: int, extra: Metadata = ()) -> grpc.StatusCode:
        slips = [_slip("no-such-market", "x", "2.00", 100, f"{user}-{i}").slip for i in range(n)]
        try:
            bets.PlaceBets(bets_pb2.PlaceBetsRequest(slips=slips), metadata=(*edge.md(user), *extra), timeout=10)
            return grpc.StatusCode.OK  # reached the service (each slip rejected there: unknown market)
        except grpc.RpcError as err:
            code: grpc.StatusCode = err.code()
            return code

    assert batch(unique("fits"), burst) == grpc.StatusCode.OK
    assert batch(unique("too-many"), burst + 1) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert batch(unique("liar"), burst + 1, (("x-inplay-slips", "1"),)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Over gRPC-web the same body is counted the same way.
    user = unique("web-too-many")
    slips = [_slip("no-such-market", "x", "2.00", 100, f"{user}-{i}").slip for i in range(burst + 1)]
    web = grpc_web_call(
        edge, "/inplay.bets.v1.BetService/PlaceBets", bets_pb2.PlaceBetsRequest(slips=slips), edge.md(user)
    )
    assert web.code == grpc.StatusCode.RESOURCE_EXHAUSTED


# --------------------------------------------------------------------------------------- CORS, page, tokens


def _http(
    edge: Edge, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"{edge.base_url}{path}", method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def test_cors_preflight(edge: Edge) -> None:
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type,x-grpc-web",
    }
    status, headers, _ = _http(
        edge, "OPTIONS", "/inplay.bets.v1.BetService/PlaceBet", {"origin": ALLOWED_ORIGIN, **preflight}
    )
    assert status == 200
    assert headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "authorization" in headers["access-control-allow-headers"]
    assert "x-inplay-subject" not in headers["access-control-allow-headers"]
    for exposed in ("grpc-status", "grpc-message", "grpc-status-details-bin"):
        assert exposed in headers["access-control-expose-headers"]
    # A foreign origin gets no CORS answer (and its "preflight" needs a token like anything else).
    status, headers, _ = _http(
        edge, "OPTIONS", "/inplay.bets.v1.BetService/PlaceBet", {"origin": "http://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in headers
    assert status == 401
    # Actual responses (errors included) carry the CORS headers for an allowed origin.
    web = grpc_web_call(
        edge,
        "/inplay.wallet.v1.WalletService/GetBalance",
        wallet_pb2.GetBalanceRequest(),
        origin=ALLOWED_ORIGIN,
    )
    assert web.code == grpc.StatusCode.UNAUTHENTICATED
    assert web.headers.get("access-control-allow-origin") == ALLOWED_ORIGIN


def test_web_page_and_dev_tokens_are_served(edge: Edge) -> None:
    status, headers, body = _http(edge, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b"/app.js" in body
    status, headers, body = _http(edge, "GET", "/app.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript") and len(body) > 10_000
    status, _, body = _http(edge, "GET", "/dev/tokens.json")
    assert status == 200
    tokens = json.loads(body)
    alice = next(u["token"] for u in tokens["users"] if u["sub"] == "alice")
    web = grpc_web_call(
        edge,
        "/inplay.wallet.v1.WalletService/GetBalance",
        wallet_pb2.GetBalanceRequest(),
        (("authorization", f"Bearer {alice}"),),
    )
    assert web.code == grpc.StatusCode.OK
    assert wallet_pb2.GetBalanceResponse.FromString(web.messages[0]).account_id == "alice"
    # Only bettor tokens are handed out.
    for u in tokens["users"]:
        claims = jwt.decode(u["token"], options={"verify_signature": False})
        assert "roles" not in claims
