"""The DepositKeys contract (inplay.ports.DepositKeys): the first claim of (account, key) fixes the
deposit's entry id, amount, currency and time; every later claim returns it. The same over
``MemoryDepositKeys`` and ``CassandraDepositKeys`` (a lightweight transaction)."""

from __future__ import annotations

import asyncio

from inplay.ports import DepositClaim, DepositKeys
from tests.support.contracts import uid

T0 = 1_772_323_200_000


class DepositKeysContract:
    async def test_the_first_claim_fixes_the_deposit(self, deposit_keys: DepositKeys) -> None:
        account = uid("acc")
        first = await deposit_keys.claim(account, "k1", 5_000, "EUR", T0)
        assert first.fresh and (first.amount_minor, first.currency, first.created_at_ms) == (5_000, "EUR", T0)
        # A retry (even with other values) gets the stored claim: the ledger row is rewritten, never added.
        again = await deposit_keys.claim(account, "k1", 9_999, "USD", T0 + 1)
        assert again == DepositClaim(first.entry_id, 5_000, "EUR", T0, False)
        other_key = await deposit_keys.claim(account, "k2", 100, "EUR", T0 + 2)
        other_account = await deposit_keys.claim(uid("acc"), "k1", 100, "EUR", T0 + 3)
        assert other_key.fresh and other_account.fresh
        assert len({first.entry_id, other_key.entry_id, other_account.entry_id}) == 3

    async def test_key_parts_never_collide(self, deposit_keys: DepositKeys) -> None:
        # Separators inside ids are escaped: ("a:b", "c") and ("a", "b:c") are two deposits.
        base = uid("acc")
        one = await deposit_keys.claim(f"{base}:x", "y", 100, "EUR", T0)
        two = await deposit_keys.claim(base, "x:y", 100, "EUR", T0)
        assert one.fresh and two.fresh and one.entry_id != two.entry_id

    async def test_concurrent_claims_have_one_winner(self, deposit_keys: DepositKeys) -> None:
        account = uid("acc")
        claims = await asyncio.gather(*(deposit_keys.claim(account, "k", 100 + i, "EUR", T0 + i) for i in range(8)))
        winners = [c for c in claims if c.fresh]
        assert len(winners) == 1
        assert all(
            (c.amount_minor, c.created_at_ms) == (winners[0].amount_minor, winners[0].created_at_ms) for c in claims
        )
