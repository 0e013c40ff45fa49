"""Helpers of the edge end-to-end tests: the running edge (Envoy + inplay.server), a feed driver that pushes
provider messages through Envoy's FeedService, and a minimal gRPC-web client (HTTP/1.1, like a browser)."""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2

from inplay.feed.v1 import feed_pb2, feed_pb2_grpc
from inplay.type.v1 import types_pb2
from inplay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from inplay_edge import EdgeSettings, SigningKey, mint_token

Metadata = tuple[tuple[str, str], ...]
# The browser origin the test edge allows (CORS).
ALLOWED_ORIGIN = "http://allowed.example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Edge:
    """The running edge of one test session."""

    settings: EdgeSettings
    key: SigningKey
    server_port: int
    real_stores: bool
    envoy_log: Path
    access_log: Path
    server_log: Path
    event: FeedEvent | None = None
    _channel: grpc.Channel | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.settings.listen_port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.target}"

    def token(self, sub: str, roles: Sequence[str] = (), **kw: Any) -> str:
        kw.setdefault("audience", self.settings.audience)
        kw.setdefault("issuer", self.settings.issuer)
        return mint_token(self.key, sub, roles=roles, **kw)

    def md(self, sub: str, roles: Sequence[str] = (), **kw: Any) -> Metadata:
        return (("authorization", f"Bearer {self.token(sub, roles, **kw)}"),)

    def operator(self) -> Metadata:
        return self.md("ops-e2e", ["operator"])

    def feed(self) -> Metadata:
        """A feed connector's credential: the ``feed`` role, nothing else."""
        return self.md("connector-alpha", ["feed"])

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.target)
        return self._channel

    def deposit(self, account: str, amount_minor: int, currency: str = "EUR") -> wallet_pb2.DepositResponse:
        stub = wallet_pb2_grpc.WalletServiceStub(self.channel())
        resp: wallet_pb2.DepositResponse = stub.Deposit(
            wallet_pb2.DepositRequest(
                account_id=account,
                amount=types_pb2.Money(amount_minor=amount_minor, currency=currency),
                idempotency_key=f"e2e-{uuid.uuid4().hex}",
                reason="e2e demo account",
            ),
            metadata=self.operator(),
            timeout=10,
        )
        return resp

    def balance(self, account: str) -> int:
        stub = wallet_pb2_grpc.WalletServiceStub(self.channel())
        resp = stub.GetBalance(wallet_pb2.GetBalanceRequest(), metadata=self.md(account), timeout=5)
        return int(resp.balance.amount_minor)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------------------------- feed driver


@dataclass
class FeedMarket:
    market_id: str
    alpha_ref: str
    selections: dict[str, str]  # selection_id -> alpha ref


@dataclass
class FeedEvent:
    """A pre-match test event in the mapping table, priced by the ``alpha`` provider."""

    event_id: str
    alpha_ref: str
    markets: list[FeedMarket]
    prices: dict[tuple[str, str], str] = field(default_factory=dict)  # (market, selection) -> "2.10"

    @classmethod
    def make(cls) -> FeedEvent:
        tag = uuid.uuid4().hex[:8]
        ev = f"e2e-ev-{tag}"
        a = f"E2E-{tag}"
        return cls(
            event_id=ev,
            alpha_ref=a,
            markets=[
                FeedMarket(
                    f"{ev}:mr",
                    f"{a}-MR",
                    {f"{ev}:mr:home": f"{a}-H", f"{ev}:mr:draw": f"{a}-D", f"{ev}:mr:away": f"{a}-A"},
                ),
                FeedMarket(f"{ev}:ou25", f"{a}-OU", {f"{ev}:ou25:over": f"{a}-O", f"{ev}:ou25:under": f"{a}-U"}),
            ],
        )

    def mapping(self) -> dict[str, Any]:
        names = {
            "mr": ("Match result", "MATCH_RESULT"),
            "ou25": ("Total goals over/under 2.5", "TOTAL_GOALS_2_5"),
        }
        return {
            "events": [
                {
                    "event_id": self.event_id,
                    "sport": "football",
                    "name": "Edge Rovers v Envoy Athletic",
                    # Pre-match: prices stay fresh for 30 s (in-play: 1.5 s), so a test step may take a while.
                    "in_play": False,
                    "primary": "alpha",
                    "secondary": "",
                    "ids": {"alpha": self.alpha_ref},
                    "markets": [
                        {
                            "market_id": m.market_id,
                            "market_type": names[m.market_id.rsplit(":", 1)[1]][1],
                            "name": names[m.market_id.rsplit(":", 1)[1]][0],
                            "ids": {"alpha": m.alpha_ref},
                            "selections": [
                                {
                                    "selection_id": sel,
                                    "name": sel.rsplit(":", 1)[1].title(),
                                    "ids": {"alpha": ref},
                                }
                                for sel, ref in m.selections.items()
                            ],
                        }
                        for m in self.markets
                    ],
                }
            ]
        }

    def market(self, market_id: str) -> FeedMarket:
        return next(m for m in self.markets if m.market_id == market_id)


def _iso_now() -> str:
    now = datetime.now(tz=UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class FeedDriver:
    """Pushes ``alpha`` messages through Envoy (FeedService.IngestOdds, a ``feed`` token), with a heartbeat
    thread so that the provider never looks disconnected."""

    def __init__(self, edge: Edge, event: FeedEvent) -> None:
        self.edge = edge
        self.event = event
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stub = feed_pb2_grpc.FeedServiceStub(edge.channel())
        self._thread = threading.Thread(target=self._heartbeats, name="feed-heartbeat", daemon=True)

    def send(self, *docs: dict[str, Any]) -> feed_pb2.IngestOddsResponse:
        with self._lock:  # one stream at a time keeps the sequence numbers in order
            requests = []
            for doc in docs:
                body = {**doc, "seq": next(self._seq), "ts": _iso_now()}
                requests.append(feed_pb2.IngestOddsRequest(provider="alpha", payload=json.dumps(body).encode()))
            resp: feed_pb2.IngestOddsResponse = self._stub.IngestOdds(
                iter(requests), metadata=self.edge.feed(), timeout=10
            )
        if resp.accepted != len(docs):
            raise AssertionError(f"feed rejected messages: {resp}")
        return resp

    def price(self, market_id: str, prices: dict[str, str]) -> None:
        """Sets the prices (decimal strings) of some selections of a market (the others keep theirs)."""
        m = self.event.market(market_id)
        for sel, odds in prices.items():
            self.event.prices[(market_id, sel)] = odds
        full = {sel: self.event.prices[(market_id, sel)] for sel in m.selections}
        self.send(
            {
                "type": "odds",
                "correction": False,
                "event": {"id": self.event.alpha_ref},
                "market": {
                    "id": m.alpha_ref,
                    "prices": [{"id": m.selections[s], "odds": o} for s, o in full.items()],
                },
            }
        )

    def open_all(self) -> None:
        defaults = {"home": "2.10", "draw": "3.40", "away": "3.60", "over": "1.90", "under": "1.95"}
        for m in self.event.markets:
            self.price(m.market_id, {sel: defaults[sel.rsplit(":", 1)[1]] for sel in m.selections})

    def refresh(self) -> None:
        """Re-sends every market's current prices (keeps them fresh for bet acceptance)."""
        for m in self.event.markets:
            self.price(m.market_id, {})

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _heartbeats(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.send({"type": "heartbeat"})
            except (grpc.RpcError, AssertionError):
                pass  # the session is ending, or a test restarted something: the next beat retries


# --------------------------------------------------------------------------------------- gRPC-web (HTTP/1.1)

_HTTP_TO_GRPC = {
    400: grpc.StatusCode.INTERNAL,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    429: grpc.StatusCode.UNAVAILABLE,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}
_BY_VALUE = {c.value[0]: c for c in grpc.StatusCode}


@dataclass
class WebResult:
    http_status: int
    headers: dict[str, str]
    messages: list[bytes]
    trailers: dict[str, str]

    @property
    def code(self) -> grpc.StatusCode:
        """The status as a gRPC-web client (connect-web) derives it."""
        if not 200 <= self.http_status < 300:
            return _HTTP_TO_GRPC.get(self.http_status, grpc.StatusCode.UNKNOWN)
        raw = self.trailers.get("grpc-status", self.headers.get("grpc-status"))
        return grpc.StatusCode.UNKNOWN if raw is None else _BY_VALUE[int(raw)]

    @property
    def message(self) -> str:
        return self.trailers.get("grpc-message", self.headers.get("grpc-message", ""))

    def status_details(self) -> status_pb2.Status | None:
        raw = self.trailers.get("grpc-status-details-bin", self.headers.get("grpc-status-details-bin"))
        if raw is None:
            return None
        return status_pb2.Status.FromString(base64.b64decode(raw + "=" * (-len(raw) % 4)))


def _frames(resp: http.client.HTTPResponse) -> Iterator[tuple[int, bytes]]:
    """gRPC-web frames until the end of the body, or until the socket times out (an open stream)."""
    while True:
        try:
            head = resp.read(5)
            if len(head) < 5:
                return
            flags, length = struct.unpack(">BI", head)
            payload = resp.read(length)
        except TimeoutError:
            return
        yield flags, payload


def grpc_web_call(
    edge: Edge,
    method: str,
    request: Message,
    metadata: Metadata = (),
    max_messages: int | None = None,
    timeout: float = 10.0,
    origin: str | None = None,
) -> WebResult:
    """One gRPC-web call over HTTP/1.1 (``application/grpc-web+proto``), as a browser makes it. For a server
    stream, ``max_messages`` stops reading (and closes the connection) after that many messages."""
    body = request.SerializeToString()
    conn = http.client.HTTPConnection("127.0.0.1", edge.settings.listen_port, timeout=timeout)
    try:
        headers = {
            "content-type": "application/grpc-web+proto",
            "x-grpc-web": "1",
            "accept": "application/grpc-web+proto",
        }
        if origin:
            headers["origin"] = origin
        headers.update(dict(metadata))
        conn.request("POST", method, body=struct.pack(">BI", 0, len(body)) + body, headers=headers)
        resp = conn.getresponse()
        result = WebResult(resp.status, {k.lower(): v for k, v in resp.getheaders()}, [], {})
        deadline = time.monotonic() + timeout
        for flags, payload in _frames(resp):
            if flags & 0x80:
                for line in payload.decode().split("\r\n"):
                    if ":" in line:
                        k, v = line.split(":", 1)
                        result.trailers[k.strip().lower()] = v.strip()
                break
            result.messages.append(payload)
            if max_messages is not None and len(result.messages) >= max_messages:
                break
            if time.monotonic() > deadline:
                break
        return result
    finally:
        conn.close()
