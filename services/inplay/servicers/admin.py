"""AdminService: manual suspension, kill switches, account limits, the market change log. Operator-only
(``auth.require_operator``); the operator's subject is recorded as the change source ``operator:<sub>``.

Dependencies for :func:`add_to_server`: the :class:`inplay.domain.markets.MarketControl` (odds cache +
change recorder), the :class:`inplay.domain.markets.MarketChangeLog` to read, and the
:class:`inplay.ports.WalletStore` (account limits).
"""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from inplay import auth
from inplay.admin.v1 import admin_pb2, admin_pb2_grpc
from inplay.convert import market_change_to_proto
from inplay.domain.markets import MarketChangeLog, MarketControl
from inplay.errors import FieldViolation, InvalidArgument
from inplay.ports import AccountLimits, LimitsStore, ProviderLiveness
from inplay.servicers.rpc import rpc

DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_ID = 200
SCOPES = {admin_pb2.KILL_SWITCH_SCOPE_EVENT: "event", admin_pb2.KILL_SWITCH_SCOPE_SPORT: "sport"}


def _required(value: str, name: str) -> str:
    if not value or len(value) > MAX_ID:
        raise InvalidArgument(f"{name} is required", violations=[FieldViolation(name, "required, <= 200 chars")])
    return value


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, control: MarketControl, changes: MarketChangeLog, wallet: LimitsStore) -> None:
        self._control = control
        self._changes = changes
        self._wallet = wallet

    @staticmethod
    def _operator(context: grpc.aio.ServicerContext) -> auth.Principal:
        who = auth.principal(context)
        auth.require_operator(who)
        return who

    @rpc
    async def SuspendMarket(
        self, request: admin_pb2.SuspendMarketRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SuspendMarketResponse:
        who = self._operator(context)
        await self._control.operator_suspend(_required(request.market_id, "market_id"), who.subject, request.reason)
        return admin_pb2.SuspendMarketResponse(market_id=request.market_id)

    @rpc
    async def ResumeMarket(
        self, request: admin_pb2.ResumeMarketRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ResumeMarketResponse:
        who = self._operator(context)
        await self._control.operator_resume(_required(request.market_id, "market_id"), who.subject, request.reason)
        return admin_pb2.ResumeMarketResponse(market_id=request.market_id)

    @rpc
    async def SetKillSwitch(
        self, request: admin_pb2.SetKillSwitchRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SetKillSwitchResponse:
        who = self._operator(context)
        scope = SCOPES.get(request.scope)
        if scope is None:
            raise InvalidArgument(
                "scope must be EVENT or SPORT", violations=[FieldViolation("scope", "EVENT or SPORT")]
            )
        affected = await self._control.set_kill_switch(
            scope,
            _required(request.target, "target"),
            request.engaged,
            f"operator:{who.subject}",
            request.reason,
        )
        return admin_pb2.SetKillSwitchResponse(markets_affected=affected)

    @rpc
    async def SetAccountLimits(
        self, request: admin_pb2.SetAccountLimitsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SetAccountLimitsResponse:
        self._operator(context)
        account = _required(request.account_id, "account_id")
        if request.daily_stake_limit_minor < 0:
            raise InvalidArgument(
                "daily_stake_limit_minor must be >= 0",
                violations=[FieldViolation("daily_stake_limit_minor", ">= 0 (0 = no limit)")],
            )
        until = request.self_excluded_until.ToMilliseconds() if request.HasField("self_excluded_until") else 0
        await self._wallet.set_limits(
            account,
            AccountLimits(
                daily_stake_limit_minor=request.daily_stake_limit_minor,
                self_excluded_until_ms=max(0, until),
            ),
        )
        return admin_pb2.SetAccountLimitsResponse(account_id=account)

    @rpc
    async def ListProducers(
        self, request: admin_pb2.ListProducersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListProducersResponse:
        self._operator(context)
        producers = await self._control.cache.list_producers()
        wanted = [p for p in producers if not request.provider or p.name == request.provider]
        return admin_pb2.ListProducersResponse(producers=[_producer(p) for p in wanted])

    @rpc
    async def ListMarketChanges(
        self, request: admin_pb2.ListMarketChangesRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListMarketChangesResponse:
        self._operator(context)
        market_id = _required(request.market_id, "market_id")
        if request.page_size < 0:
            raise InvalidArgument("page_size must be >= 0", violations=[FieldViolation("page_size", ">= 0")])
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        changes, token = await self._changes.list(market_id, size, request.page_token)
        return admin_pb2.ListMarketChangesResponse(
            changes=[market_change_to_proto(c) for c in changes], next_page_token=token
        )


_PRODUCER_STATUS = {
    "UP": admin_pb2.PRODUCER_STATUS_UP,
    "DOWN": admin_pb2.PRODUCER_STATUS_DOWN,
    "RECOVERING": admin_pb2.PRODUCER_STATUS_RECOVERING,
}


def _ts(ms: int) -> Timestamp | None:
    if ms <= 0:
        return None
    out = Timestamp()
    out.FromMilliseconds(ms)
    return out


def _producer(p: ProviderLiveness) -> admin_pb2.Producer:
    return admin_pb2.Producer(
        provider=p.name,
        status=_PRODUCER_STATUS.get(p.producer, admin_pb2.PRODUCER_STATUS_UNSPECIFIED),
        last_seen=_ts(p.last_seen_ms),
        status_since=_ts(p.producer_at_ms),
        down_since=_ts(p.down_since_ms) if p.producer != "UP" else None,
        recovery_request_id=p.recovery_id if p.producer == "RECOVERING" else "",
    )


def add_to_server(
    server: grpc.aio.Server, control: MarketControl, changes: MarketChangeLog, wallet: LimitsStore
) -> None:
    """Registers AdminService. Needs MarketControl, the MarketChangeLog and the (durable) account limits."""
    admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(control, changes, wallet), server)


__all__ = ["AdminServicer", "add_to_server"]
