"""Deposits and balances.

A deposit is claimed once per (account, idempotency key) (:mod:`inplay.adapters.deposit_keys`), appended
to the ledger (the truth), then credited to the Redis projection deduplicated by the entry id. A crash
between the steps is repaired by retrying the same call: every step is idempotent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from inplay.adapters.deposit_keys import DepositKeys
from inplay.errors import FailedPrecondition, FieldViolation, InvalidArgument
from inplay.model import EntryKind, LedgerEntry
from inplay.ports import Credit, Ledger, WalletStore

MAX_DEPOSIT_MINOR = 100_000_000_00


@dataclass(frozen=True, slots=True)
class DepositResult:
    entry: LedgerEntry
    balance_minor: int
    replayed: bool


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Wallet:
    def __init__(
        self,
        wallet: WalletStore,
        ledger: Ledger,
        deposit_keys: DepositKeys,
        currency: str,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self._wallet = wallet
        self._ledger = ledger
        self._keys = deposit_keys
        self.currency = currency
        self._clock = clock

    async def deposit(
        self, account_id: str, amount_minor: int, currency: str, idempotency_key: str, reason: str = ""
    ) -> DepositResult:
        violations = []
        if not account_id:
            violations.append(FieldViolation("account_id", "required"))
        if amount_minor <= 0 or amount_minor > MAX_DEPOSIT_MINOR:
            violations.append(FieldViolation("amount.amount_minor", f"must be 1..{MAX_DEPOSIT_MINOR}"))
        if currency != self.currency:
            violations.append(FieldViolation("amount.currency", f"must be {self.currency}"))
        if not idempotency_key or len(idempotency_key) > 128:
            violations.append(FieldViolation("idempotency_key", "required, at most 128 characters"))
        if violations:
            raise InvalidArgument("invalid deposit", violations=violations)
        claim = await self._keys.claim(account_id, idempotency_key, amount_minor, currency, self._clock())
        if not claim.fresh and claim.amount_minor != amount_minor:
            raise FailedPrecondition(
                "idempotency_key already used for a different amount", reason="IDEMPOTENCY_KEY_REUSED"
            )
        entry = LedgerEntry(
            entry_id=claim.entry_id,
            account_id=account_id,
            kind=EntryKind.DEPOSIT,
            amount_minor=claim.amount_minor,
            currency=claim.currency,
            bet_id="",
            reference=reason or idempotency_key,
            created_at_ms=claim.created_at_ms,
        )
        await self._ledger.append_entries([entry])
        await self._wallet.credit_batch([Credit(account_id, entry.entry_id, entry.amount_minor)])
        [balance] = await self._wallet.balances([account_id])
        return DepositResult(entry=entry, balance_minor=balance, replayed=not claim.fresh)

    async def balance(self, account_id: str) -> int:
        [balance] = await self._wallet.balances([account_id])
        return balance


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    accounts: int
    mismatched: dict[str, tuple[int, int]]  # account -> (projection, ledger)
    repaired: bool


async def reconcile(
    wallet: WalletStore, ledger: Ledger, repair: bool, accounts: list[str] | None = None
) -> ReconcileReport:
    """Compares the Redis balance projection with Σ ledger entries; with ``repair`` the ledger wins."""
    truth = await ledger.account_balances()
    if accounts is not None:
        truth = {a: truth.get(a, 0) for a in accounts}
    names = sorted(truth)
    projected = await wallet.balances(names) if names else []
    mismatched = {name: (proj, truth[name]) for name, proj in zip(names, projected, strict=True) if proj != truth[name]}
    if repair and mismatched:
        await wallet.set_balances({name: ledger_value for name, (_, ledger_value) in mismatched.items()})
    return ReconcileReport(accounts=len(names), mismatched=mismatched, repaired=repair and bool(mismatched))
