"""Authentication, authorization and identity through the real Envoy in front of the real services."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import grpc
import jwt
import pytest
from edge_helpers import Edge, FeedDriver, Metadata, grpc_web_call, unique

from inplay.admin.v1 import admin_pb2, admin_pb2_grpc
from inplay.bets.v1 import bets_pb2, bets_pb2_grpc
from inplay.feed.v1 import feed_pb2, feed_pb2_grpc
from inplay.odds.v1 import odds_pb2, odds_pb2_grpc
from inplay.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from inplay.type.v1 import types_pb2
from inplay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from inplay_edge import SigningKey, generate_signing_key, mint_token

pytestmark = pytest.mark.integration

GET_BALANCE = "/inplay.wallet.v1.WalletService/GetBalance"


def get_balance(edge: Edge, md: Metadata, account_id: str = "") -> wallet_pb2.GetBalanceResponse:
    stub = wallet_pb2_grpc.WalletServiceStub(edge.channel())
    resp: wallet_pb2.GetBalanceResponse = stub.GetBalance(
        wallet_pb2.GetBalanceRequest(account_id=account_id), metadata=md, timeout=5
    )
    return resp


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        code: grpc.StatusCode = err.code()
        return code
    return grpc.StatusCode.OK


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


# ------------------------------------------------------------------------------------------ authentication


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _bad_tokens(edge: Edge) -> dict[str, str]:
    now = time.time()
    other = generate_signing_key()
    # Same kid, different key: the signature cannot verify.
    forged = SigningKey(private_pem=other.private_pem, kid=edge.key.kid, jwks={})
    # An HMAC "signed" token with the public JWKS as the secret (the classic algorithm confusion attack).
    claims = {"iss": edge.settings.issuer, "aud": edge.settings.audience, "sub": "alice", "exp": int(now) + 600}
    signing_input = ".".join(
        _b64(json.dumps(part).encode()) for part in ({"alg": "HS256", "typ": "JWT", "kid": edge.key.kid}, claims)
    )
    mac = hmac.new(json.dumps(edge.key.jwks).encode(), signing_input.encode(), hashlib.sha256).digest()
    hs256 = f"{signing_input}.{_b64(mac)}"
    unsigned = (
        ".".join(
            base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
            for part in (
                {"alg": "none", "typ": "JWT"},
                {
                    "iss": edge.settings.issuer,
                    "aud": edge.settings.audience,
                    "sub": "alice",
                    "exp": int(now) + 600,
                },
            )
        )
        + "."
    )
    return {
        "expired": edge.token("alice", expired=True),
        "wrong_audience": edge.token("alice", audience="not-inplay"),
        "wrong_issuer": edge.token("alice", issuer="https://evil.example"),
        "bad_signature": mint_token(forged, "alice", audience=edge.settings.audience, issuer=edge.settings.issuer),
        "hs256": hs256,
        "alg_none": unsigned,
        "garbage": "not.a.jwt",
    }


def test_no_token_is_unauthenticated(edge: Edge) -> None:
    assert code_of(lambda: get_balance(edge, ())) == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_web_call(edge, GET_BALANCE, wallet_pb2.GetBalanceRequest()).code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    "kind", ["expired", "wrong_audience", "wrong_issuer", "bad_signature", "hs256", "alg_none", "garbage"]
)
def test_invalid_tokens_are_unauthenticated(edge: Edge, kind: str) -> None:
    token = _bad_tokens(edge)[kind]
    assert code_of(lambda: get_balance(edge, bearer(token))) == grpc.StatusCode.UNAUTHENTICATED
    web = grpc_web_call(edge, GET_BALANCE, wallet_pb2.GetBalanceRequest(), bearer(token))
    assert web.code == grpc.StatusCode.UNAUTHENTICATED, web


def test_token_without_expiry_is_unauthenticated(edge: Edge) -> None:
    claims = {"iss": edge.settings.issuer, "aud": edge.settings.audience, "sub": "alice"}
    token = jwt.encode(claims, edge.key.private_pem, algorithm="ES256", headers={"kid": edge.key.kid})
    assert code_of(lambda: get_balance(edge, bearer(token))) == grpc.StatusCode.UNAUTHENTICATED


def test_valid_token_reaches_the_service_as_its_subject(edge: Edge) -> None:
    user = unique("auth-ok")
    resp = get_balance(edge, edge.md(user))
    assert resp.account_id == user


# ------------------------------------------------------------------------------------------ authorization


def _operator_calls(edge: Edge) -> dict[str, Callable[[Metadata], Any]]:
    ch = edge.channel()
    admin = admin_pb2_grpc.AdminServiceStub(ch)
    settle = settlement_pb2_grpc.SettlementServiceStub(ch)
    wallet = wallet_pb2_grpc.WalletServiceStub(ch)
    feed = feed_pb2_grpc.FeedServiceStub(ch)
    return {
        "Admin.SuspendMarket": lambda md: admin.SuspendMarket(
            admin_pb2.SuspendMarketRequest(market_id="m-1", reason="e2e"), metadata=md, timeout=5
        ),
        "Admin.ListMarketChanges": lambda md: admin.ListMarketChanges(
            admin_pb2.ListMarketChangesRequest(market_id="m-1"), metadata=md, timeout=5
        ),
        "Admin.SetAccountLimits": lambda md: admin.SetAccountLimits(
            admin_pb2.SetAccountLimitsRequest(account_id="alice"), metadata=md, timeout=5
        ),
        "Settlement.SettleEvent": lambda md: settle.SettleEvent(
            settlement_pb2.SettleEventRequest(event_id="ev-1", request_id="r-1"), metadata=md, timeout=5
        ),
        "Settlement.GetSettlementStatus": lambda md: settle.GetSettlementStatus(
            settlement_pb2.GetSettlementStatusRequest(event_id="ev-1"), metadata=md, timeout=5
        ),
        "Wallet.Deposit": lambda md: wallet.Deposit(
            wallet_pb2.DepositRequest(
                account_id="alice",
                amount=types_pb2.Money(amount_minor=100_000, currency="EUR"),
                idempotency_key=unique("steal"),
            ),
            metadata=md,
            timeout=5,
        ),
        "Feed.IngestOdds": lambda md: feed.IngestOdds(
            iter([feed_pb2.IngestOddsRequest(provider="alpha", payload=b"{}")]), metadata=md, timeout=5
        ),
    }


@pytest.mark.parametrize(
    "rpc",
    [
        "Admin.SuspendMarket",
        "Admin.ListMarketChanges",
        "Admin.SetAccountLimits",
        "Settlement.SettleEvent",
        "Settlement.GetSettlementStatus",
        "Wallet.Deposit",
        "Feed.IngestOdds",
    ],
)
def test_bettor_calling_operator_rpcs_is_permission_denied(edge: Edge, rpc: str) -> None:
    call = _operator_calls(edge)[rpc]
    assert code_of(lambda: call(edge.md("alice"))) == grpc.StatusCode.PERMISSION_DENIED
    # A client-sent roles header changes nothing: it is stripped before jwt_authn.
    forged = (*edge.md("alice"), ("x-inplay-roles", "operator"))
    assert code_of(lambda: call(forged)) == grpc.StatusCode.PERMISSION_DENIED
    # Another role is not the operator role.
    assert code_of(lambda: call(edge.md("alice", ["support"]))) == grpc.StatusCode.PERMISSION_DENIED


def _bettor_calls(edge: Edge) -> dict[str, Callable[[Metadata], Any]]:
    ch = edge.channel()
    bets = bets_pb2_grpc.BetServiceStub(ch)
    wallet = wallet_pb2_grpc.WalletServiceStub(ch)
    odds = odds_pb2_grpc.OddsServiceStub(ch)
    slip = bets_pb2.BetSlip(
        legs=[bets_pb2.BetLeg(market_id="m-1", selection_id="h", odds=types_pb2.Odds(numerator=2, denominator=1))],
        stake=types_pb2.Money(amount_minor=100, currency="EUR"),
        acceptance_policy=bets_pb2.ACCEPTANCE_POLICY_NONE,
        idempotency_key=unique("feed-bet"),
    )
    return {
        "Bet.PlaceBet": lambda md: bets.PlaceBet(bets_pb2.PlaceBetRequest(slip=slip), metadata=md, timeout=5),
        "Bet.PlaceBets": lambda md: bets.PlaceBets(bets_pb2.PlaceBetsRequest(slips=[slip]), metadata=md, timeout=5),
        "Bet.ListBets": lambda md: bets.ListBets(bets_pb2.ListBetsRequest(), metadata=md, timeout=5),
        "Wallet.GetBalance": lambda md: wallet.GetBalance(wallet_pb2.GetBalanceRequest(), metadata=md, timeout=5),
        "Odds.ListMarkets": lambda md: odds.ListMarkets(odds_pb2.ListMarketsRequest(), metadata=md, timeout=5),
    }


@pytest.mark.parametrize(
    "rpc",
    [
        "Admin.SuspendMarket",
        "Admin.SetAccountLimits",
        "Settlement.SettleEvent",
        "Settlement.GetSettlementStatus",
        "Wallet.Deposit",
        "Bet.PlaceBet",
        "Bet.PlaceBets",
        "Bet.ListBets",
        "Wallet.GetBalance",
        "Odds.ListMarkets",
    ],
)
def test_feed_token_can_call_nothing_but_the_feed(edge: Edge, rpc: str) -> None:
    """A feed connector's token (role ``feed``) is denied at the edge on every other RPC: operator RPCs and
    the bettor RPCs (it must not bet or hold money as the connector's subject)."""
    call = {**_operator_calls(edge), **_bettor_calls(edge)}[rpc]
    assert code_of(lambda: call(edge.feed())) == grpc.StatusCode.PERMISSION_DENIED
    # The same subject without the feed role is an ordinary bettor: the bettor RPCs pass the edge (the
    # service may still refuse the request itself, e.g. the unknown market).
    if rpc.startswith(("Bet.", "Wallet.GetBalance", "Odds.")):
        assert code_of(lambda: call(edge.md(unique("connector")))) != grpc.StatusCode.PERMISSION_DENIED


def test_feed_token_ingests(edge: Edge) -> None:
    feed = feed_pb2_grpc.FeedServiceStub(edge.channel())
    beat = json.dumps({"type": "heartbeat", "seq": 1, "ts": "2026-01-01T00:00:00Z"}).encode()
    resp = feed.IngestOdds(
        iter([feed_pb2.IngestOddsRequest(provider="e2e-feed-role", payload=beat)]), metadata=edge.feed(), timeout=10
    )
    assert resp.received == 1  # it reached the service, which judged the message
    # A feed token over gRPC-web is just as limited (same chain after grpc_web).
    web = grpc_web_call(edge, GET_BALANCE, wallet_pb2.GetBalanceRequest(), edge.feed())
    assert web.code == grpc.StatusCode.PERMISSION_DENIED


def test_operator_rpc_over_grpc_web_is_permission_denied_for_a_bettor(edge: Edge) -> None:
    web = grpc_web_call(
        edge,
        "/inplay.admin.v1.AdminService/SuspendMarket",
        admin_pb2.SuspendMarketRequest(market_id="m-1"),
        edge.md("alice"),
    )
    assert web.code == grpc.StatusCode.PERMISSION_DENIED


def test_operator_passes_the_edge(edge: Edge) -> None:
    user = unique("funded")
    resp = edge.deposit(user, 12_345)
    assert resp.balance.amount_minor == 12_345
    assert edge.balance(user) == 12_345
    # Operators may name an account; the service sees the operator role from the verified token only.
    assert get_balance(edge, edge.operator(), account_id=user).balance.amount_minor == 12_345


# ------------------------------------------------------------------------------------------------ identity


def test_forged_identity_headers_are_ignored(edge: Edge) -> None:
    victim = unique("victim")
    edge.deposit(victim, 50_000)
    attacker = unique("attacker")
    forged = (("x-inplay-subject", victim), ("x-inplay-roles", "operator"))
    # Without a token the forged headers do not authenticate anyone.
    assert code_of(lambda: get_balance(edge, forged)) == grpc.StatusCode.UNAUTHENTICATED
    # With the attacker's token they are replaced by the token's claims.
    resp = get_balance(edge, (*edge.md(attacker), *forged))
    assert resp.account_id == attacker
    assert resp.balance.amount_minor == 0
    # Same over gRPC-web (headers from a browser-like client).
    web = grpc_web_call(edge, GET_BALANCE, wallet_pb2.GetBalanceRequest(), (*edge.md(attacker), *forged))
    assert web.code == grpc.StatusCode.OK
    assert wallet_pb2.GetBalanceResponse.FromString(web.messages[0]).account_id == attacker
    # Header-name tricks: underscores are dropped, case does not matter.
    tricky = (*edge.md(attacker), ("x_inplay_subject", victim), ("X-Inplay-Subject".lower(), victim))
    assert get_balance(edge, tricky).account_id == attacker


def test_request_fields_cannot_change_identity(edge: Edge) -> None:
    victim = unique("victim")
    edge.deposit(victim, 10_000)
    attacker = edge.md(unique("attacker"))
    wallet = wallet_pb2_grpc.WalletServiceStub(edge.channel())
    assert code_of(lambda: get_balance(edge, attacker, account_id=victim)) == grpc.StatusCode.PERMISSION_DENIED
    assert (
        code_of(
            lambda: wallet.ListLedgerEntries(
                wallet_pb2.ListLedgerEntriesRequest(account_id=victim), metadata=attacker, timeout=5
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )


def test_a_user_cannot_read_or_bet_from_another_account(edge: Edge, feed: FeedDriver) -> None:
    assert edge.event is not None
    victim, attacker = unique("victim"), unique("attacker")
    edge.deposit(victim, 10_000)
    bets = bets_pb2_grpc.BetServiceStub(edge.channel())
    market = edge.event.markets[0]
    home = next(iter(market.selections))
    num, den = _fraction(edge.event.prices[(market.market_id, home)])

    def slip(key: str) -> bets_pb2.PlaceBetRequest:
        return bets_pb2.PlaceBetRequest(
            slip=bets_pb2.BetSlip(
                legs=[
                    bets_pb2.BetLeg(
                        market_id=market.market_id,
                        selection_id=home,
                        odds=types_pb2.Odds(numerator=num, denominator=den),
                    )
                ],
                stake=types_pb2.Money(amount_minor=500, currency="EUR"),
                acceptance_policy=bets_pb2.ACCEPTANCE_POLICY_NONE,
                idempotency_key=key,
            )
        )

    placed = bets.PlaceBet(slip(unique("k")), metadata=edge.md(victim), timeout=10)
    assert placed.bet.account_id == victim
    assert edge.balance(victim) == 9_500
    # The attacker cannot see the victim's bet, nor list it.
    assert (
        code_of(lambda: bets.GetBet(bets_pb2.GetBetRequest(bet_id=placed.bet.bet_id), metadata=edge.md(attacker)))
        == grpc.StatusCode.NOT_FOUND
    )
    listed = bets.ListBets(bets_pb2.ListBetsRequest(), metadata=edge.md(attacker), timeout=5)
    assert all(b.account_id == attacker for b in listed.bets)
    assert placed.bet.bet_id not in {b.bet_id for b in listed.bets}
    # A bet "as the victim" (forged header) is placed on the attacker's own (empty) account, and fails there.
    forged = (*edge.md(attacker), ("x-inplay-subject", victim))
    assert code_of(lambda: bets.PlaceBet(slip(unique("k")), metadata=forged, timeout=10)) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    assert edge.balance(victim) == 9_500
    # Replaying the victim's idempotency key from another account does not return the victim's bet.
    key = placed.bet.idempotency_key
    try:
        replay = bets.PlaceBet(slip(key), metadata=edge.md(attacker), timeout=10)
        assert replay.bet.account_id == attacker
    except grpc.RpcError as err:
        assert err.code() != grpc.StatusCode.OK
    assert edge.balance(victim) == 9_500


def _fraction(decimal_text: str) -> tuple[int, int]:
    whole, _, frac = decimal_text.partition(".")
    den = 10 ** len(frac)
    return int(whole) * den + int(frac or 0), den
