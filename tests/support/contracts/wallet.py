"""The WalletStore contract (inplay.ports.WalletStore): debits, credits, idempotency records, compensation
and the journal batch intents, the same over ``MemoryWallet`` and ``RedisWallet``."""

from __future__ import annotations

import asyncio

import pytest

from inplay.ports import (
    AccountLimits,
    BatchIntent,
    Credit,
    Debit,
    DebitResult,
    WalletRebuild,
    WalletStore,
    WalletUnavailable,
)
from tests.support.contracts import uid

DAY = "20260301"
NOW = 1_772_323_200_000  # 2026-03-01T00:00:00Z


def debit(
    account: str,
    amount: int,
    key: str,
    bet_id: str | None = None,
    *,
    liability_keys: tuple[str, ...] = (),
    liability: int = 0,
    cap: int = 0,
    day: str = DAY,
    now_ms: int = NOW,
    pos: int = 0,
) -> Debit:
    return Debit(
        account_id=account,
        idempotency_key=key,
        bet_id=bet_id or f"bet-{key}",
        amount_minor=amount,
        liability_keys=liability_keys,
        liability_minor=liability,
        liability_cap_minor=cap,
        day=day,
        now_ms=now_ms,
        pos=pos,
        row=f"row-{key}",
    )


def statuses(results: list[DebitResult]) -> list[str]:
    return [r.status for r in results]


async def funded(wallet: WalletStore, amount: int) -> str:
    account = uid("acc")
    assert await wallet.credit_batch([Credit(account, f"deposit:{account}:seed", amount)]) == [True]
    return account


class WalletContract:
    async def test_round_trips(self, wallet_store: WalletStore) -> None:
        a, b, never = uid("acc"), uid("acc"), uid("acc")
        assert await wallet_store.balances([]) == []
        assert await wallet_store.balances([never]) == [0]  # missing = 0
        await wallet_store.set_balances({a: 1_234, b: -5})
        assert await wallet_store.balances([a, never, b]) == [1_234, 0, -5]
        assert await wallet_store.get_limits(a) == AccountLimits()
        limits = AccountLimits(daily_stake_limit_minor=5_000, self_excluded_until_ms=NOW + 1)
        await wallet_store.set_limits(a, limits)
        assert await wallet_store.get_limits(a) == limits
        # Empty batches are no-ops.
        assert await wallet_store.debit_batch([]) == []
        assert await wallet_store.credit_batch([]) == []
        await wallet_store.compensate([])
        await wallet_store.finish_idempotent([])

    async def test_amounts_stay_exact_integers(self, wallet_store: WalletStore) -> None:
        # Money beyond a double's exact range (Lua numbers are doubles) still debits to the minor unit.
        account = await funded(wallet_store, 10**15 + 7)
        assert await wallet_store.debit_batch([debit(account, 10**15, "k")]) == [DebitResult("DEBITED", 7)]
        assert await wallet_store.balances([account]) == [7]

    async def test_every_debit_status_in_one_batch(self, wallet_store: WalletStore) -> None:
        rich, poor, limited, excluded = (uid(p) for p in ("rich", "poor", "limited", "excluded"))
        await wallet_store.set_balances({rich: 100_000, poor: 50, limited: 100_000, excluded: 100_000})
        await wallet_store.set_limits(limited, AccountLimits(daily_stake_limit_minor=1_000))
        await wallet_store.set_limits(excluded, AccountLimits(self_excluded_until_ms=NOW + 60_000))
        sel = f"{uid('mkt')}/home"
        results = await wallet_store.debit_batch(
            [
                debit(rich, 1_000, "d1", liability_keys=(sel,), liability=9_000, cap=10_000),
                debit(rich, 1_000, "d1", "bet-other"),  # same key, same batch: sees the reservation
                debit(poor, 51, "p1"),
                debit(limited, 600, "l1"),
                debit(limited, 600, "l2"),  # 600 + 600 > 1000 today
                debit(limited, 600, "l3", day="20260302"),  # a new day has its own counter
                debit(excluded, 10, "x1"),
                debit(excluded, 10, "x2", now_ms=NOW + 60_000),  # exclusion over
                debit(rich, 100, "r2", liability_keys=(sel,), liability=1_001, cap=10_000),
                debit(rich, 100, "r3", liability_keys=(sel,), liability=1_000, cap=10_000),  # exactly the cap
                debit(rich, 100, "r4", liability_keys=(sel,), liability=1, cap=10_000),  # over it now
            ]
        )
        assert statuses(results) == [
            "DEBITED",
            "DUPLICATE",
            "INSUFFICIENT_FUNDS",
            "DEBITED",
            "DAILY_STAKE_LIMIT",
            "DEBITED",
            "SELF_EXCLUDED",
            "DEBITED",
            "LIABILITY_EXCEEDED",
            "DEBITED",
            "LIABILITY_EXCEEDED",
        ]
        assert results[0] == DebitResult("DEBITED", 99_000)
        assert results[1].existing == "PENDING:bet-d1:"
        assert results[2].balance_minor == 50  # unchanged, reported
        assert results[9].balance_minor == 98_900
        assert await wallet_store.balances([rich, poor, limited, excluded]) == [98_900, 50, 98_800, 99_990]
        # Rejections reserve nothing: the same keys can be used again.
        keys = [(poor, "p1"), (limited, "l2"), (excluded, "x1"), (rich, "r2")]
        assert await wallet_store.get_idempotent(keys) == [None] * 4
        # A zero-liability debit with keys (no cap) does not touch them.
        assert statuses(await wallet_store.debit_batch([debit(rich, 1, "z", liability_keys=(sel,))])) == ["DEBITED"]

    async def test_insufficient_funds_writes_nothing(self, wallet_store: WalletStore) -> None:
        account = await funded(wallet_store, 500)
        await wallet_store.set_limits(account, AccountLimits(daily_stake_limit_minor=600))
        sel = f"{uid('mkt')}/home"
        big = debit(account, 501, "k", liability_keys=(sel,), liability=1_000, cap=1_000)
        assert await wallet_store.debit_batch([big]) == [DebitResult("INSUFFICIENT_FUNDS", 500)]
        assert await wallet_store.balances([account]) == [500]
        assert await wallet_store.get_idempotent([(account, "k")]) == [None]
        # Neither the daily counter nor the liability moved: the balance and the cap fit exactly.
        fits = debit(account, 500, "k", "bet-2", liability_keys=(sel,), liability=1_000, cap=1_000)
        assert await wallet_store.debit_batch([fits]) == [DebitResult("DEBITED", 0)]

    async def test_duplicate_returns_the_final_record(self, wallet_store: WalletStore) -> None:
        account = await funded(wallet_store, 1_000)
        assert statuses(await wallet_store.debit_batch([debit(account, 100, "k", "b1")])) == ["DEBITED"]
        await wallet_store.finish_idempotent([(account, "k", '{"bet":{"id":"b1"}}')])
        [dup] = await wallet_store.debit_batch([debit(account, 100, "k", "b2")])
        assert dup == DebitResult("DUPLICATE", 900, '{"bet":{"id":"b1"}}')

    async def test_retried_debit_is_not_applied_twice(self, wallet_store: WalletStore) -> None:
        # A retried call whose first attempt landed (lost reply): the same bet id finds its reservation.
        account = await funded(wallet_store, 1_000)
        first = await wallet_store.debit_batch([debit(account, 300, "k", "b1")])
        again = await wallet_store.debit_batch([debit(account, 300, "k", "b1")])
        assert statuses(first) == statuses(again) == ["DEBITED"]
        assert await wallet_store.balances([account]) == [700]

    async def test_credit_applies_once_per_entry(self, wallet_store: WalletStore) -> None:
        account = uid("acc")
        deposit = Credit(account, f"deposit:{account}:key-1", 5_000)
        payout = Credit(account, f"payout:{uid('run')}:{uid('bet')}", 1_250)
        assert await wallet_store.credit_batch([deposit, deposit, payout]) == [True, False, True]
        assert await wallet_store.credit_batch([deposit, payout]) == [False, False]
        reversal = Credit(account, f"payout-reversal:{payout.entry_id}", -1_250)  # negative credits debit
        assert await wallet_store.credit_batch([reversal, reversal]) == [True, False]
        assert await wallet_store.balances([account]) == [5_000]

    async def test_compensate_applies_once_and_releases_everything(self, wallet_store: WalletStore) -> None:
        account = await funded(wallet_store, 1_000)
        sel = f"{uid('mkt')}/away"
        await wallet_store.set_limits(account, AccountLimits(daily_stake_limit_minor=500))
        d = debit(account, 400, "k", liability_keys=(sel,), liability=2_000, cap=2_000)
        assert statuses(await wallet_store.debit_batch([d])) == ["DEBITED"]
        await wallet_store.compensate([d, d])
        await wallet_store.compensate([d])
        assert await wallet_store.balances([account]) == [1_000]
        assert await wallet_store.get_idempotent([(account, "k")]) == [None]
        # Daily counter and liability released: the same stake fits again, under a new bet.
        retry = debit(account, 400, "k", "bet-retry", liability_keys=(sel,), liability=2_000, cap=2_000)
        assert statuses(await wallet_store.debit_batch([retry])) == ["DEBITED"]
        # The first bet's compensation stays spent; a debit that never happened is never refunded.
        await wallet_store.compensate([d, debit(account, 400, "other", "bet-never")])
        assert await wallet_store.balances([account]) == [600]

    async def test_finish_never_overwrites_a_reservation_with_a_rejection(self, wallet_store: WalletStore) -> None:
        account = await funded(wallet_store, 1_000)
        await wallet_store.debit_batch([debit(account, 100, "k", "b1")])
        rejection = '{"rejection":{"reason":"INSUFFICIENT_FUNDS"}}'
        await wallet_store.finish_idempotent([(account, "k", rejection)])
        assert await wallet_store.get_idempotent([(account, "k")]) == ["PENDING:b1:"]
        await wallet_store.finish_idempotent([(account, "k", '{"bet":{"id":"b1"}}'), (account, "free", rejection)])
        assert await wallet_store.get_idempotent([(account, "k"), (account, "free")]) == [
            '{"bet":{"id":"b1"}}',
            rejection,
        ]
        # A late rejection (a concurrent retry that lost) never replaces the acceptance.
        await wallet_store.finish_idempotent([(account, "k", rejection)])
        assert await wallet_store.get_idempotent([(account, "k")]) == ['{"bet":{"id":"b1"}}']

    async def test_concurrent_debits_never_overdraw(self, wallet_store: WalletStore) -> None:
        account = await funded(wallet_store, 50 * 100)
        calls = [wallet_store.debit_batch([debit(account, 100, f"c{i}")]) for i in range(200)]
        results = [r for batch in await asyncio.gather(*calls) for r in batch]
        assert statuses(results).count("DEBITED") == 50
        assert set(statuses(results)) == {"DEBITED", "INSUFFICIENT_FUNDS"}
        # Each accepted debit saw a distinct balance: 4900, 4800, ..., 0.
        assert sorted(r.balance_minor for r in results if r.status == "DEBITED") == list(range(0, 5_000, 100))
        assert await wallet_store.balances([account]) == [0]

    async def test_batch_intent_is_recorded_with_the_debit_and_dropped_on_finish(
        self, wallet_store: WalletStore
    ) -> None:
        owner = uid("writer")
        await wallet_store.set_epoch(uid("epoch"))
        claim = await wallet_store.claim_shard(owner, 60_000, 1)
        assert claim is not None and (claim.shard, claim.head_slot, claim.last_slot) == (0, 0, 0)
        account = await funded(wallet_store, 1_000)
        intent = BatchIntent(0, 1, owner, 0, "", NOW)
        debits = [debit(account, 100, "a", pos=0), debit(account, 5_000, "b", pos=1), debit(account, 200, "c", pos=2)]
        assert statuses(await wallet_store.debit_batch(debits, intent)) == ["DEBITED", "INSUFFICIENT_FUNDS", "DEBITED"]
        [pending] = await wallet_store.pending_intents(0)
        assert (pending.shard, pending.slot, pending.prev_slot, pending.at_ms) == (0, 1, 0, NOW)
        assert pending.rows == {0: "row-a", 2: "row-c"}  # only the debited slips' rows
        assert await wallet_store.journal_heads(1) == [1]
        assert await wallet_store.intents_pending(1) == [1]
        records = [(account, "a", "BET:x:1"), (account, "c", "BET:x:2")]
        await wallet_store.finish_batch(0, 1, "sum-1", records)
        await wallet_store.finish_batch(0, 1, "sum-1", records)  # idempotent
        assert await wallet_store.pending_intents(0) == []
        assert await wallet_store.intents_pending(1) == [0]
        assert await wallet_store.get_idempotent([(account, "a"), (account, "c")]) == ["BET:x:1", "BET:x:2"]
        again = await wallet_store.claim_shard(owner, 60_000, 1)
        assert again is not None and (again.head_slot, again.last_slot, again.last_checksum) == (1, 1, "sum-1")

    async def test_debits_are_fenced_by_the_shard_lease_and_the_epoch(self, wallet_store: WalletStore) -> None:
        owner = uid("writer")
        account = await funded(wallet_store, 1_000)
        intent = BatchIntent(0, 1, owner, 0, "", NOW)
        assert await wallet_store.claim_shard(owner, 60_000, 1) is not None
        # No projection epoch yet (not rebuilt): refused, nothing debited.
        assert statuses(await wallet_store.debit_batch([debit(account, 100, "a")], intent)) == ["NOT_READY"]
        await wallet_store.set_epoch(uid("epoch"))
        assert await wallet_store.claim_shard(uid("other"), 60_000, 1) is None  # held by ``owner``
        lost = BatchIntent(0, 1, uid("other"), 0, "", NOW)
        assert statuses(await wallet_store.debit_batch([debit(account, 100, "a")], lost)) == ["SHARD_LOST"]
        assert await wallet_store.balances([account]) == [1_000]
        assert await wallet_store.pending_intents(0) == []
        assert await wallet_store.shard_holders(1) == [owner]
        assert await wallet_store.renew_shard(0, owner, 0)  # released
        assert await wallet_store.shard_holders(1) == [None]

    async def test_abandoned_batch_returns_its_stakes_and_drops_its_intent(self, wallet_store: WalletStore) -> None:
        owner = uid("writer")
        await wallet_store.set_epoch(uid("epoch"))
        assert await wallet_store.claim_shard(owner, 60_000, 1) is not None
        account = await funded(wallet_store, 1_000)
        debits = [debit(account, 100, "a", pos=0), debit(account, 200, "b", pos=1)]
        await wallet_store.debit_batch(debits, BatchIntent(0, 1, owner, 0, "", NOW))
        await wallet_store.abandon_batch(0, 1, debits)
        await wallet_store.abandon_batch(0, 1, debits)  # once
        assert await wallet_store.balances([account]) == [1_000]
        assert await wallet_store.pending_intents(0) == []
        assert await wallet_store.get_idempotent([(account, "a"), (account, "b")]) == [None, None]

    async def test_repair_fence_and_rebuild(self, wallet_store: WalletStore) -> None:
        owner, account = uid("writer"), uid("acc")
        await wallet_store.set_epoch(uid("epoch"))
        assert await wallet_store.claim_shard(owner, 60_000, 1) is not None
        await wallet_store.set_fence(True, "repair-1")
        # While a repair runs: credits are refused (retryable), fenced debits are NOT_READY.
        with pytest.raises(WalletUnavailable):
            await wallet_store.credit_batch([Credit(account, f"deposit:{account}:1", 100)])
        intent = BatchIntent(0, 1, owner, 0, "", NOW)
        assert statuses(await wallet_store.debit_batch([debit(account, 1, "a")], intent)) == ["NOT_READY"]
        state = WalletRebuild(
            balances={account: 700},
            applied_entry_ids=[f"deposit:{account}:1"],
            idempotency={(account, "k"): "BET:b1:h"},
            daily_stake={(account, DAY): 300},
            liability={},
            limits={account: AccountLimits(daily_stake_limit_minor=500)},
            journal={0: (4, 3, "sum-3")},
        )
        with pytest.raises(WalletUnavailable):
            await wallet_store.rebuild(state, "repair-0")  # overtaken: another repair holds the fence
        assert await wallet_store.balances([account]) == [0]
        assert await wallet_store.refresh_fence("repair-1")
        assert not await wallet_store.refresh_fence("repair-0")
        await wallet_store.rebuild(state, "repair-1")
        await wallet_store.set_fence(False, "repair-0")  # not its fence: stays up
        with pytest.raises(WalletUnavailable):
            await wallet_store.credit_batch([Credit(account, f"deposit:{account}:2", 100)])
        await wallet_store.set_fence(False, "repair-1")
        # The rebuilt projection: balance, once-markers, idempotency records, counters, limits, journal.
        assert await wallet_store.balances([account]) == [700]
        assert await wallet_store.credit_batch([Credit(account, f"deposit:{account}:1", 100)]) == [False]
        assert await wallet_store.get_idempotent([(account, "k")]) == ["BET:b1:h"]
        assert await wallet_store.get_limits(account) == AccountLimits(daily_stake_limit_minor=500)
        [over] = await wallet_store.debit_batch([debit(account, 201, "d")])  # 300 + 201 > 500 today
        assert over.status == "DAILY_STAKE_LIMIT"
        assert await wallet_store.journal_heads(1) == [4]
        claim = await wallet_store.claim_shard(owner, 60_000, 1)
        assert claim is not None and (claim.head_slot, claim.last_slot, claim.last_checksum) == (4, 3, "sum-3")
