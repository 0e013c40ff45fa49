"""Deposit idempotency: the first claim of (account, key) fixes the deposit's amount and timestamp.

The claim decides the ledger row's primary key (account_id, created_at_ms, entry_id), so a retried or
concurrent deposit with the same key rewrites the identical row instead of adding a second one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from inplay.ids import join_key
from inplay.ports import DepositClaim


def deposit_entry_id(account_id: str, key: str) -> str:
    return join_key("deposit", account_id, key)


class MemoryDepositKeys:
    def __init__(self) -> None:
        self._claims: dict[tuple[str, str], DepositClaim] = {}

    async def claim(self, account_id: str, key: str, amount_minor: int, currency: str, now_ms: int) -> DepositClaim:
        existing = self._claims.get((account_id, key))
        if existing is not None:
            return DepositClaim(
                existing.entry_id, existing.amount_minor, existing.currency, existing.created_at_ms, False
            )
        claim = DepositClaim(deposit_entry_id(account_id, key), amount_minor, currency, now_ms, True)
        self._claims[(account_id, key)] = claim
        return claim


class CassandraDepositKeys:
    """LWT claim in the ledger keyspace (table ``deposits_by_key``, migration 0004)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._insert = session.prepare(
            "INSERT INTO deposits_by_key (account_id, idempotency_key, entry_id, amount_minor, currency, "
            "created_at_ms) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS"
        )

    async def claim(self, account_id: str, key: str, amount_minor: int, currency: str, now_ms: int) -> DepositClaim:
        entry_id = deposit_entry_id(account_id, key)
        result = await asyncio.to_thread(
            self._session.execute, self._insert, (account_id, key, entry_id, amount_minor, currency, now_ms)
        )
        row = result.one()
        if result.was_applied:
            return DepositClaim(entry_id, amount_minor, currency, now_ms, True)
        return DepositClaim(row.entry_id, row.amount_minor, row.currency, row.created_at_ms, False)
