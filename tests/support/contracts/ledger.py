"""The Ledger contract (inplay.ports.Ledger): bets, money entries, history, paging, the bet journal and
the projector's checkpoints, the same over ``MemoryLedger`` and ``CassandraLedger``."""

from __future__ import annotations

from collections import Counter

import pytest

from inplay.core import AcceptancePolicy, LegOutcome, Odds
from inplay.domain.journal import (
    GENESIS_CHECKSUM,
    PLACED_SEQ_KEY,
    ROW_BET,
    bet_row_body,
    journal_bet_id,
    journal_tag,
)
from inplay.errors import InvalidArgument
from inplay.model import BetEvent, BetState, EntryKind, JournalBatch, JournalRow, LedgerEntry, Leg, PlacedBet
from inplay.ports import AccountLimits, JournalRejected, Ledger
from tests.support.contracts import uid

T0 = 1_772_323_200_000  # 2026-03-01T00:00:00Z


def make_bet(account: str, events: tuple[str, ...], placed_at_ms: int, bet_id: str, stake: int = 1_000) -> PlacedBet:
    legs = tuple(Leg(f"{ev}:mr", "home", Odds(5 + i, 2), ev) for i, ev in enumerate(events))
    return PlacedBet(
        bet_id, account, legs, stake, "EUR", stake * 5 // 2, AcceptancePolicy.HIGHER, f"key-{bet_id}", placed_at_ms
    )


def entry(account: str, entry_id: str, amount: int, at_ms: int, kind: EntryKind = EntryKind.DEPOSIT) -> LedgerEntry:
    return LedgerEntry(entry_id, account, kind, amount, "EUR", "", f"ref-{entry_id}", at_ms)


def journal_batch(journal: str, slot: int, bets: list[PlacedBet], prev: str = GENESIS_CHECKSUM) -> JournalBatch:
    rows = tuple(JournalRow(pos, ROW_BET, bet_row_body(b, f"hash-{pos}")) for pos, b in enumerate(bets))
    return JournalBatch(0, slot, slot - 1, prev, T0 + slot, rows)


def journal_bets(journal: str, slot: int, n: int) -> list[PlacedBet]:
    account, ev = uid("acc"), uid("ev")
    tag = journal_tag(journal)
    return [make_bet(account, (ev,), T0 + slot, journal_bet_id(0, slot, pos, tag), 100 + pos) for pos in range(n)]


async def all_pages(ledger: Ledger, account: str, page_size: int) -> list[list[PlacedBet]]:
    pages: list[list[PlacedBet]] = []
    token = ""
    while True:
        page, token = await ledger.list_account_bets(account, page_size, token)
        pages.append(page)
        if not token:
            return pages


class LedgerContract:
    async def test_bet_round_trip(self, ledger_store: Ledger) -> None:
        account, ev1, ev2 = uid("acc"), uid("ev"), uid("ev")
        single = make_bet(account, (ev1,), T0, uid("bet"))
        acca = make_bet(account, (ev1, ev2, ev1), T0 + 5, uid("bet"), stake=250)  # two legs on ev1
        assert await ledger_store.append_bets([single, acca]) == [None, None]
        assert await ledger_store.get_bet(single.bet_id) == single
        assert await ledger_store.get_bet(acca.bet_id) == acca  # legs, exact odds, policy, event ids
        assert await ledger_store.get_bet(uid("missing")) is None
        history = await ledger_store.bet_history(single.bet_id)
        assert [(h.seq_key, h.kind, h.status, h.amount_minor) for h in history] == [
            (PLACED_SEQ_KEY, "PLACED", BetState.OPEN, 1_000)
        ]
        entries, token = await ledger_store.account_entries(account, 10, "")
        assert token == ""
        assert [(e.entry_id, e.kind, e.amount_minor, e.bet_id, e.created_at_ms) for e in entries] == [
            (f"stake:{single.bet_id}", EntryKind.STAKE, -1_000, single.bet_id, T0),
            (f"stake:{acca.bet_id}", EntryKind.STAKE, -250, acca.bet_id, T0 + 5),
        ]
        assert (await ledger_store.list_account_bets(account, 10, ""))[0] == [acca, single]  # newest first
        # One by-event row per distinct event: ev1 holds both bets once, ev2 the accumulator.
        ev1_ids = sorted(b.bet_id for p in [p async for p in ledger_store.event_bets(ev1)] for b in p)
        assert ev1_ids == sorted([single.bet_id, acca.bet_id])
        assert [b for p in [p async for p in ledger_store.event_bets(ev2)] for b in p] == [acca]

    async def test_rewriting_a_bet_stores_the_same_rows(self, ledger_store: Ledger) -> None:
        account, ev = uid("acc"), uid("ev")
        bet = make_bet(account, (ev,), T0, uid("bet"))
        assert await ledger_store.append_bets([bet]) == [None]
        assert await ledger_store.append_bets([bet]) == [None]  # a retried batch
        assert len((await ledger_store.account_entries(account, 10, ""))[0]) == 1
        assert len(await ledger_store.bet_history(bet.bet_id)) == 1
        assert len((await ledger_store.list_account_bets(account, 10, ""))[0]) == 1

    async def test_history_reads_back_in_seq_order(self, ledger_store: Ledger) -> None:
        bet = make_bet(uid("acc"), (uid("ev"),), T0, uid("bet"))
        await ledger_store.append_bets([bet])

        def event(seq: str, kind: str, status: BetState, amount: int, outcomes: tuple[LegOutcome, ...]) -> BetEvent:
            return BetEvent(bet.bet_id, seq, kind, status, amount, f"run-{seq}", T0 + int(seq[:13]), outcomes)

        settled = event(f"{T0 + 1000:013d}:r1", "SETTLED", BetState.WON, 2_500, (LegOutcome.WIN,))
        rolled = event(f"{T0 + 2000:013d}:r2", "ROLLED_BACK", BetState.OPEN, -2_500, ())
        resettled = event(f"{T0 + 3000:013d}:r3", "SETTLED", BetState.LOST, 0, (LegOutcome.LOSE,))
        await ledger_store.append_bet_events([resettled, settled])
        await ledger_store.append_bet_events([rolled, rolled])  # idempotent by (bet_id, seq_key)
        history = await ledger_store.bet_history(bet.bet_id)
        assert [h.kind for h in history] == ["PLACED", "SETTLED", "ROLLED_BACK", "SETTLED"]
        assert history[1:] == [settled, rolled, resettled]

    async def test_account_bets_page_newest_first(self, ledger_store: Ledger) -> None:
        account, ev = uid("acc"), uid("ev")
        bets = [make_bet(account, (ev,), T0 + i * 10, f"{uid('bet')}-{i:02d}") for i in range(25)]
        assert await ledger_store.append_bets(bets) == [None] * 25
        pages = await all_pages(ledger_store, account, 10)
        assert [len(p) for p in pages] == [10, 10, 5]
        assert [b for p in pages for b in p] == sorted(bets, key=lambda b: b.placed_at_ms, reverse=True)
        with pytest.raises(InvalidArgument):
            await ledger_store.list_account_bets(account, 10, "not base64!")
        # A token of another account's query is refused too (signed, query-bound tokens).
        other = uid("acc")
        await ledger_store.append_bets([make_bet(other, (ev,), T0, f"{uid('bet')}-o{i}") for i in range(3)])
        _, token = await ledger_store.list_account_bets(other, 1, "")
        with pytest.raises(InvalidArgument):
            await ledger_store.list_account_bets(account, 10, token)

    async def test_paging_ends_cleanly_on_an_exact_page_boundary(self, ledger_store: Ledger) -> None:
        # The Ledger port does not say whether an exactly full last page carries a token (Cassandra's paging
        # state does, the memory twin's offsets do not): either way every bet comes once, and a page after
        # the last one is empty with no token.
        account, ev = uid("acc"), uid("ev")
        bets = [make_bet(account, (ev,), T0 + i, f"{uid('bet')}-{i:02d}") for i in range(20)]
        await ledger_store.append_bets(bets)
        pages = await all_pages(ledger_store, account, 10)
        assert [len(p) for p in pages] in ([10, 10], [10, 10, 0])
        assert sorted(b.bet_id for p in pages for b in p) == sorted(b.bet_id for b in bets)

    async def test_account_entries_page_oldest_first(self, ledger_store: Ledger) -> None:
        account = uid("acc")
        entries = [entry(account, f"deposit:{account}:{i}", 100 + i, T0 + (i * 7919) % 23) for i in range(23)]
        await ledger_store.append_entries(entries[:11])
        await ledger_store.append_entries(entries[11:])
        await ledger_store.append_entries(entries[5:8])  # a retry rewrites the same rows
        got: list[LedgerEntry] = []
        token = ""
        while True:
            page, token = await ledger_store.account_entries(account, 4, token)
            assert len(page) <= 4
            got += page
            if not token:
                break
        assert got == sorted(entries, key=lambda e: (e.created_at_ms, e.entry_id))

    async def test_event_bets_returns_every_bet_once(self, ledger_store: Ledger) -> None:
        event, other = uid("ev"), uid("ev")
        accounts = [uid("acc") for _ in range(7)]
        bets = [
            make_bet(accounts[i % 7], (event, other) if i % 5 == 0 else (event,), T0 + i, f"{uid('b')}{i:04d}")
            for i in range(300)
        ]
        assert await ledger_store.append_bets(bets) == [None] * 300
        pages = [page async for page in ledger_store.event_bets(event, page_size=64)]
        assert all(0 < len(p) <= 64 for p in pages)
        seen = Counter(b.bet_id for p in pages for b in p)
        assert len(seen) == 300 and set(seen.values()) == {1}
        assert {b.bet_id: b for p in pages for b in p} == {b.bet_id: b for b in bets}
        other_ids = sorted(b.bet_id for p in [p async for p in ledger_store.event_bets(other)] for b in p)
        assert other_ids == sorted(b.bet_id for b in bets if len(b.legs) == 2)
        assert [p async for p in ledger_store.event_bets(uid("ev"))] == []

    async def test_account_balances_equal_the_sum_of_entries(self, ledger_store: Ledger) -> None:
        alice, bob = uid("alice"), uid("bob")
        await ledger_store.append_entries(
            [
                entry(alice, f"deposit:{alice}:1", 10_000, T0),
                entry(bob, f"deposit:{bob}:1", 3_000, T0 + 10),
                entry(alice, f"payout:{alice}:x", 2_500, T0 + 3_000, EntryKind.PAYOUT),
            ]
        )
        assert await ledger_store.append_bets([make_bet(alice, (uid("ev"),), T0 + 2_000, uid("bet"))]) == [None]
        balances = await ledger_store.account_balances()
        for account in (alice, bob):
            entries, _ = await ledger_store.account_entries(account, 100, "")
            assert balances[account] == sum(e.amount_minor for e in entries)
        assert (balances[alice], balances[bob]) == (11_500, 3_000)
        # The balance at any instant: only entries created at or before it.
        assert (await ledger_store.account_balances(as_of_ms=T0 + 2_000))[alice] == 9_000
        early = await ledger_store.account_balances(as_of_ms=T0 + 5)
        assert early[alice] == 10_000 and bob not in early
        assert alice not in await ledger_store.account_balances(as_of_ms=T0 - 1)

    async def test_money_entries_are_idempotent_by_entry_id(self, ledger_store: Ledger) -> None:
        # A payout's once-marker in the ledger: ``payout:<run>:<bet>`` written twice is one entry.
        account = uid("acc")
        payout = entry(account, f"payout:{uid('run')}:{uid('bet')}", 2_500, T0, EntryKind.PAYOUT)
        await ledger_store.append_entries([payout, payout])
        await ledger_store.append_entries([payout])
        assert (await ledger_store.account_entries(account, 10, "")) == ([payout], "")
        scan = await ledger_store.scan_balances()
        assert (account, payout.entry_id) in scan.credit_entry_ids and scan.balances[account] == 2_500

    # --- the journal ---------------------------------------------------------------------------------

    async def test_journal_batch_reads_back(self, ledger_store: Ledger) -> None:
        name = uid("j")
        journal = ledger_store.with_journal(name)
        bets = journal_bets(name, 1, 3)
        batch = journal_batch(name, 1, bets)
        await journal.write_journal(batch)
        stored = await journal.read_journal(0, 1)
        assert stored is not None
        assert (stored.shard, stored.slot, stored.prev_slot, stored.prev_checksum) == (0, 1, 0, GENESIS_CHECKSUM)
        assert (stored.committed_at_ms, stored.rows) == (batch.committed_at_ms, batch.rows)
        assert (stored.stored_checksum, stored.stored_row_count) == (batch.checksum, 3)
        assert stored.checksum == batch.checksum  # the chain verifies from what was read
        assert await journal.read_journal(0, 2) is None
        # A journal bet is readable by its id right after the commit (one row of one partition).
        assert [await journal.get_bet(b.bet_id) for b in bets] == bets
        assert await journal.get_bet(journal_bet_id(0, 1, 7, journal_tag(name))) is None
        assert [b async for b in journal.scan_journal() if b.slot == 1 and b.rows == batch.rows] != []

    async def test_retried_identical_journal_write_is_a_no_op(self, ledger_store: Ledger) -> None:
        name = uid("j")
        journal = ledger_store.with_journal(name)
        batch = journal_batch(name, 1, journal_bets(name, 1, 2))
        await journal.write_journal(batch)
        await journal.write_journal(batch)  # an unknown outcome is written again: the same bytes
        stored = await journal.read_journal(0, 1)
        assert stored is not None and (stored.rows, stored.stored_checksum) == (batch.rows, batch.checksum)
        assert sum(1 for b in [b async for b in journal.scan_journal()] if b.rows == batch.rows) == 1

    async def test_a_different_write_to_the_same_slot_is_refused(self, ledger_store: Ledger) -> None:
        # Append-only (docs/ledger.md, guarantee 4): a slot's content is fixed by its first write; another
        # batch for the same (shard, slot) is refused and the first one stays, whole.
        name = uid("j")
        journal = ledger_store.with_journal(name)
        first = journal_batch(name, 1, journal_bets(name, 1, 2))
        await journal.write_journal(first)
        other = journal_batch(name, 1, journal_bets(name, 1, 1))
        with pytest.raises(JournalRejected):
            await journal.write_journal(other)
        stored = await journal.read_journal(0, 1)
        assert stored is not None and (stored.rows, stored.stored_checksum) == (first.rows, first.checksum)

    async def test_a_slot_claimed_by_one_writer_is_refused_to_another(self, ledger_store: Ledger) -> None:
        # docs/ledger.md, step 3: the writer claims its next slot ahead; a second writer of the shard finds
        # the slot taken (and skips it) and can never write rows into it.
        name = uid("j")
        journal = ledger_store.with_journal(name)
        assert await journal.claim_slot(0, 1, "writer-a#1")
        assert await journal.claim_slot(0, 1, "writer-a#1")  # the same claimant again: an unknown outcome retried
        assert not await journal.claim_slot(0, 1, "writer-b#2")
        batch = journal_batch(name, 1, journal_bets(name, 1, 2))
        with pytest.raises(JournalRejected):
            await journal.write_journal(batch)  # unclaimed writes are claimed by the checksum: taken too
        # (``write_journal(batch, claimant)`` trusts the caller to hold the claim: it is not re-checked.)
        assert await journal.read_journal(0, 1) is None
        await journal.write_journal(batch, "writer-a#1")
        stored = await journal.read_journal(0, 1)
        assert stored is not None and stored.rows == batch.rows

    async def test_journals_of_two_deployments_are_apart(self, ledger_store: Ledger) -> None:
        a, b = uid("j"), uid("j")
        batch = journal_batch(a, 1, journal_bets(a, 1, 1))
        await ledger_store.with_journal(a).write_journal(batch)
        assert await ledger_store.with_journal(b).read_journal(0, 1) is None
        await ledger_store.with_journal(a).save_progress(0, "proj", 1, T0)
        assert await ledger_store.with_journal(b).load_progress(0, "proj") == 0

    async def test_projection_checkpoints(self, ledger_store: Ledger) -> None:
        journal = ledger_store.with_journal(uid("j"))
        assert await journal.load_progress(0, "projector") == 0  # none yet
        await journal.save_progress(0, "projector", 3, T0)
        await journal.save_progress(0, "projector", 5, T0 + 1)
        await journal.save_progress(0, "projector", 5, T0 + 1)  # a repeated checkpoint
        assert await journal.load_progress(0, "projector") == 5
        await journal.save_progress(0, "projector", 4, T0 + 2)  # a late, older checkpoint never moves it back
        assert await journal.load_progress(0, "projector") == 5
        assert await journal.load_progress(1, "projector") == 0  # per shard
        assert await journal.load_progress(0, "audit") == 0  # per consumer

    async def test_projected_views_are_idempotent(self, ledger_store: Ledger) -> None:
        name = uid("j")
        journal = ledger_store.with_journal(name)
        bets = journal_bets(name, 1, 3)
        await journal.write_journal(journal_batch(name, 1, bets))
        await journal.project_bets(bets)
        await journal.project_bets(bets[1:])  # the projector repeats from its checkpoint after a crash
        account, event = bets[0].account_id, bets[0].legs[0].event_id
        entries, _ = await journal.account_entries(account, 10, "")
        assert sorted((e.entry_id, e.amount_minor) for e in entries) == sorted(
            (f"stake:{b.bet_id}", -b.stake_minor) for b in bets
        )
        assert sorted(b.bet_id for p in [p async for p in journal.event_bets(event)] for b in p) == sorted(
            b.bet_id for b in bets
        )
        assert sorted(b.bet_id for b in (await journal.list_account_bets(account, 10, ""))[0]) == sorted(
            b.bet_id for b in bets
        )
        assert (await journal.account_balances())[account] == -sum(b.stake_minor for b in bets)
        assert all(e.entry_id.startswith("stake:") for e in entries)
        scan = await journal.scan_balances()
        assert not [e for acc, e in scan.credit_entry_ids if acc == account]  # stakes are not credits
        assert scan.balances[account] == -sum(b.stake_minor for b in bets)

    async def test_limits_newest_wins_and_epochs(self, ledger_store: Ledger) -> None:
        account, projection = uid("acc"), uid("proj")
        await ledger_store.record_limits(account, AccountLimits(1_000, 0), T0 + 10)
        await ledger_store.record_limits(account, AccountLimits(500, T0 + 99), T0 + 5)  # older: not current
        assert (await ledger_store.all_limits())[account] == AccountLimits(1_000, 0)
        await ledger_store.record_limits(account, AccountLimits(0, T0 + 99), T0 + 20)
        assert (await ledger_store.all_limits())[account] == AccountLimits(0, T0 + 99)
        assert await ledger_store.epochs(projection) == []
        await ledger_store.record_epoch(projection, "e1", T0)
        await ledger_store.record_epoch(projection, "e1", T0 + 1)  # once
        await ledger_store.record_epoch(projection, "e2", T0 + 2)
        assert sorted(await ledger_store.epochs(projection)) == ["e1", "e2"]
