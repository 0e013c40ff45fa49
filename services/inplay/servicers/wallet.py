"""WalletService: thin gRPC adapter over :class:`inplay.domain.wallet.Wallet` and the ledger."""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2

from inplay import auth
from inplay.domain.wallet import Wallet
from inplay.errors import FieldViolation, InvalidArgument
from inplay.model import LedgerEntry
from inplay.ports import Ledger
from inplay.servicers.rpc import rpc
from inplay.type.v1 import types_pb2
from inplay.wallet.v1 import wallet_pb2, wallet_pb2_grpc


def entry_to_proto(entry: LedgerEntry) -> wallet_pb2.LedgerEntry:
    ts = timestamp_pb2.Timestamp()
    ts.FromMilliseconds(entry.created_at_ms)
    return wallet_pb2.LedgerEntry(
        entry_id=entry.entry_id,
        account_id=entry.account_id,
        kind=int(entry.kind),  # type: ignore[arg-type]
        amount=types_pb2.Money(amount_minor=entry.amount_minor, currency=entry.currency),
        bet_id=entry.bet_id,
        reference=entry.reference,
        created_at=ts,
    )


class WalletServicer(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(self, wallet: Wallet, ledger: Ledger) -> None:
        self._wallet = wallet
        self._ledger = ledger

    @rpc
    async def GetBalance(
        self, request: wallet_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.GetBalanceResponse:
        account = auth.account_for(auth.principal(context), request.account_id)
        balance = await self._wallet.balance(account)
        return wallet_pb2.GetBalanceResponse(
            account_id=account,
            balance=types_pb2.Money(amount_minor=balance, currency=self._wallet.currency),
        )

    @rpc
    async def Deposit(
        self, request: wallet_pb2.DepositRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.DepositResponse:
        auth.require_operator(auth.principal(context))
        result = await self._wallet.deposit(
            request.account_id,
            request.amount.amount_minor,
            request.amount.currency,
            request.idempotency_key,
            request.reason,
        )
        return wallet_pb2.DepositResponse(
            entry=entry_to_proto(result.entry),
            balance=types_pb2.Money(amount_minor=result.balance_minor, currency=self._wallet.currency),
            replayed=result.replayed,
        )

    @rpc
    async def ListLedgerEntries(
        self, request: wallet_pb2.ListLedgerEntriesRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.ListLedgerEntriesResponse:
        account = auth.account_for(auth.principal(context), request.account_id)
        page_size = request.page_size or 100
        if not 0 < page_size <= 1000:
            raise InvalidArgument("page_size must be 1..1000", violations=[FieldViolation("page_size", "1..1000")])
        entries, token = await self._ledger.account_entries(account, page_size, request.page_token)
        return wallet_pb2.ListLedgerEntriesResponse(entries=[entry_to_proto(e) for e in entries], next_page_token=token)


def add_to_server(server: grpc.aio.Server, wallet: Wallet, ledger: Ledger) -> None:
    wallet_pb2_grpc.add_WalletServiceServicer_to_server(WalletServicer(wallet, ledger), server)
