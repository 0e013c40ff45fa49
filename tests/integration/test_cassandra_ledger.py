"""CassandraLedger against the real Cassandra (the session keyspace; tests isolate by unique ids)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from inplay.adapters.cassandra_ledger import EVENT_BUCKETS, CassandraLedger, event_bucket, legs_from_json, legs_to_json
from inplay.adapters.migrations import Migration, discover, split_statements
from inplay.core import AcceptancePolicy, LegOutcome, Odds
from inplay.domain.journal import PLACED_SEQ_KEY
from inplay.errors import InvalidArgument
from inplay.model import BetEvent, BetState, EntryKind, LedgerEntry, Leg, PlacedBet
from inplay.ports import LedgerError

pytestmark = pytest.mark.integration

T0 = 1_772_323_200_000  # 2026-03-01T00:00:00Z


def make_bet(
    account: str,
    events: tuple[str, ...],
    placed_at_ms: int,
    bet_id: str,
    stake: int = 1_000,
    key: str | None = None,
) -> PlacedBet:
    legs = tuple(
        Leg(market_id=f"{ev}:mr", selection_id="home", odds=Odds(5 + i, 2), event_id=ev) for i, ev in enumerate(events)
    )
    return PlacedBet(
        bet_id=bet_id,
        account_id=account,
        legs=legs,
        stake_minor=stake,
        currency="EUR",
        potential_return_minor=stake * 5 // 2,
        policy=AcceptancePolicy.HIGHER,
        idempotency_key=key or f"key-{bet_id}",
        placed_at_ms=placed_at_ms,
    )


def entry(account: str, entry_id: str, amount: int, at_ms: int, kind: EntryKind = EntryKind.DEPOSIT) -> LedgerEntry:
    return LedgerEntry(entry_id, account, kind, amount, "EUR", "", f"ref-{entry_id}", at_ms)


async def all_account_bets(ledger: CassandraLedger, account: str, page_size: int) -> list[list[PlacedBet]]:
    pages: list[list[PlacedBet]] = []
    token = ""
    while True:
        page, token = await ledger.list_account_bets(account, page_size, token)
        pages.append(page)
        if not token:
            return pages


# --- round trips ---------------------------------------------------------------------------------------


async def test_bet_round_trip(ledger: CassandraLedger, unique_id: Callable[[str], str]) -> None:
    account, ev1, ev2 = unique_id("acc"), unique_id("ev"), unique_id("ev")
    single = make_bet(account, (ev1,), T0, unique_id("bet"))
    acca = make_bet(account, (ev1, ev2, ev1), T0 + 5, unique_id("bet"), stake=250)  # two legs on ev1
    assert await ledger.append_bets([single, acca]) == [None, None]

    assert await ledger.get_bet(single.bet_id) == single
    assert await ledger.get_bet(acca.bet_id) == acca  # legs, exact odds, policy, event ids
    assert await ledger.get_bet(unique_id("missing")) is None
    assert await ledger.get_bet_by_idempotency(account, single.idempotency_key) == single.bet_id
    assert await ledger.get_bet_by_idempotency(account, "unknown") is None

    history = await ledger.bet_history(single.bet_id)
    assert [(h.seq_key, h.kind, h.status, h.amount_minor) for h in history] == [
        (PLACED_SEQ_KEY, "PLACED", BetState.OPEN, 1_000)
    ]
    entries, token = await ledger.account_entries(account, 10, "")
    assert token == ""
    assert [(e.entry_id, e.kind, e.amount_minor, e.bet_id, e.created_at_ms) for e in entries] == [
        (f"stake:{single.bet_id}", EntryKind.STAKE, -1_000, single.bet_id, T0),
        (f"stake:{acca.bet_id}", EntryKind.STAKE, -250, acca.bet_id, T0 + 5),
    ]
    bets, _ = await ledger.list_account_bets(account, 10, "")
    assert bets == [acca, single]  # newest first
    # One by-event row per distinct event: ev1 holds both bets once, ev2 the accumulator.
    assert sorted(b.bet_id for page in [p async for p in ledger.event_bets(ev1)] for b in page) == sorted(
        [single.bet_id, acca.bet_id]
    )
    assert [b for page in [p async for p in ledger.event_bets(ev2)] for b in page] == [acca]


async def test_rewriting_a_bet_stores_the_same_rows(ledger: CassandraLedger, unique_id: Callable[[str], str]) -> None:
    account, ev = unique_id("acc"), unique_id("ev")
    bet = make_bet(account, (ev,), T0, unique_id("bet"))
    assert await ledger.append_bets([bet]) == [None]
    assert await ledger.append_bets([bet]) == [None]  # a retried batch
    entries, _ = await ledger.account_entries(account, 10, "")
    assert len(entries) == 1
    assert len(await ledger.bet_history(bet.bet_id)) == 1
    assert len((await ledger.list_account_bets(account, 10, ""))[0]) == 1


async def test_history_reads_back_in_seq_order(ledger: CassandraLedger, unique_id: Callable[[str], str]) -> None:
    account, ev = unique_id("acc"), unique_id("ev")
    bet = make_bet(account, (ev,), T0, unique_id("bet"))
    await ledger.append_bets([bet])

    def event(seq: str, kind: str, status: BetState, amount: int, outcomes: tuple[LegOutcome, ...]) -> BetEvent:
        return BetEvent(bet.bet_id, seq, kind, status, amount, f"run-{seq}", T0 + int(seq[:13]), outcomes)

    settled = event(f"{T0 + 1000:013d}:r1", "SETTLED", BetState.WON, 2_500, (LegOutcome.WIN,))
    rolled = event(f"{T0 + 2000:013d}:r2", "ROLLED_BACK", BetState.OPEN, -2_500, ())
    resettled = event(f"{T0 + 3000:013d}:r3", "SETTLED", BetState.LOST, 0, (LegOutcome.LOSE,))
    await ledger.append_bet_events([resettled, settled])
    await ledger.append_bet_events([rolled, rolled])  # idempotent by (bet_id, seq_key)
    history = await ledger.bet_history(bet.bet_id)
    assert [h.kind for h in history] == ["PLACED", "SETTLED", "ROLLED_BACK", "SETTLED"]
    assert history[1:] == [settled, rolled, resettled]


# --- paging --------------------------------------------------------------------------------------------


async def test_account_bets_page_newest_first(ledger: CassandraLedger, unique_id: Callable[[str], str]) -> None:
    account, ev = unique_id("acc"), unique_id("ev")
    bets = [make_bet(account, (ev,), T0 + i * 10, f"{unique_id('bet')}-{i:02d}") for i in range(25)]
    assert await ledger.append_bets(bets) == [None] * 25
    pages = await all_account_bets(ledger, account, 10)
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [b for p in pages for b in p] == sorted(bets, key=lambda b: b.placed_at_ms, reverse=True)
    with pytest.raises(InvalidArgument):
        await ledger.list_account_bets(account, 10, "not base64!")


async def test_account_entries_page_oldest_first(ledger: CassandraLedger, unique_id: Callable[[str], str]) -> None:
    account = unique_id("acc")
    entries = [entry(account, f"deposit:{account}:{i}", 100 + i, T0 + (i * 7919) % 23) for i in range(23)]
    await ledger.append_entries(entries[:11])
    await ledger.append_entries(entries[11:])
    await ledger.append_entries(entries[5:8])  # a retry rewrites the same rows
    got: list[LedgerEntry] = []
    token = ""
    while True:
        page, token = await ledger.account_entries(account, 4, token)
        assert len(page) <= 4
        got += page
        if not token:
            break
    assert got == sorted(entries, key=lambda e: (e.created_at_ms, e.entry_id))


async def test_event_bets_returns_every_bet_once_across_buckets(
    ledger: CassandraLedger, unique_id: Callable[[str], str]
) -> None:
    event, other = unique_id("ev"), unique_id("ev")
    accounts = [unique_id("acc") for _ in range(50)]
    bets = [
        # Every 10th bet is an accumulator with a leg on another event too.
        make_bet(accounts[i % 50], (event, other) if i % 10 == 0 else (event,), T0 + i, f"{unique_id('b')}{i:04d}")
        for i in range(2000)
    ]
    results = await ledger.append_bets(bets)
    assert results == [None] * len(bets)

    pages = [page async for page in ledger.event_bets(event, page_size=300)]
    assert all(0 < len(p) <= 300 for p in pages)
    seen = Counter(b.bet_id for p in pages for b in p)
    assert len(seen) == 2000 and set(seen.values()) == {1}
    assert {b.bet_id: b for p in pages for b in p} == {b.bet_id: b for b in bets}
    assert len({event_bucket(b.bet_id) for b in bets}) == EVENT_BUCKETS  # all 64 partitions were read
    other_ids = sorted(b.bet_id for p in [p async for p in ledger.event_bets(other)] for b in p)
    assert other_ids == sorted(b.bet_id for b in bets if len(b.legs) == 2)


async def test_event_bets_can_stop_early(ledger: CassandraLedger, unique_id: Callable[[str], str]) -> None:
    event = unique_id("ev")
    bets = [make_bet(unique_id("acc"), (event,), T0, f"{unique_id('b')}{i}") for i in range(30)]
    await ledger.append_bets(bets)
    async for page in ledger.event_bets(event, page_size=5):
        assert len(page) == 5
        break  # in-flight bucket reads are cancelled, nothing leaks
    assert await ledger.get_bet(bets[0].bet_id) == bets[0]


# --- balances ------------------------------------------------------------------------------------------


async def test_account_balances_equal_the_sum_of_entries(
    ledger: CassandraLedger, unique_id: Callable[[str], str]
) -> None:
    alice, bob = unique_id("alice"), unique_id("bob")
    ev = unique_id("ev")
    await ledger.append_entries(
        [
            entry(alice, f"deposit:{alice}:1", 10_000, T0),
            entry(bob, f"deposit:{bob}:1", 3_000, T0 + 10),
            entry(alice, f"payout:{alice}:x", 2_500, T0 + 3_000, EntryKind.PAYOUT),
        ]
    )
    bet = make_bet(alice, (ev,), T0 + 2_000, unique_id("bet"), stake=1_000)
    assert await ledger.append_bets([bet]) == [None]

    balances = await ledger.account_balances()
    for account in (alice, bob):
        entries, _ = await ledger.account_entries(account, 100, "")
        assert balances[account] == sum(e.amount_minor for e in entries)
    assert (balances[alice], balances[bob]) == (11_500, 3_000)
    # The balance at any instant: only entries created at or before it.
    assert (await ledger.account_balances(as_of_ms=T0 + 2_000))[alice] == 9_000
    early = await ledger.account_balances(as_of_ms=T0 + 5)
    assert early[alice] == 10_000 and bob not in early
    assert alice not in await ledger.account_balances(as_of_ms=T0 - 1)


# --- migrations ----------------------------------------------------------------------------------------


async def test_migrations_are_recorded_once(ledger: CassandraLedger) -> None:
    rows = await asyncio.to_thread(ledger.session.execute, "SELECT version, name, checksum FROM schema_migrations")
    recorded = [(r.version, r.name, r.checksum) for r in rows]
    assert recorded == [(m.version, m.name, m.checksum) for m in discover()]
    # Connecting again to a migrated keyspace applies nothing and records nothing.
    again = await CassandraLedger.connect(
        list(ledger.cluster.contact_points), ledger.cluster.port, ledger.keyspace, create_schema=True
    )
    await again.close()
    rows = await asyncio.to_thread(ledger.session.execute, "SELECT version FROM schema_migrations")
    assert len(list(rows)) == len(recorded)


def test_migration_checksums_cover_statements_not_comments(tmp_path: Path) -> None:
    def migration(text: str) -> Migration:
        return Migration(9, "x", tmp_path / "0009_x.cql", text)

    base = migration("-- v1\nCREATE TABLE IF NOT EXISTS a (x text PRIMARY KEY);\n")
    reworded = migration("-- reworded; comment\nCREATE TABLE IF NOT EXISTS a\n    (x text PRIMARY KEY);")
    assert reworded.matches(base.checksum)
    assert not migration("CREATE TABLE IF NOT EXISTS a (x int PRIMARY KEY);").matches(base.checksum)
    # Keyspaces migrated by the earlier runner recorded whole-file checksums: still "applied, unchanged".
    first = discover()[0]
    assert first.matches("a50be3aeba85b7e8e4cd22673842aa45ce51c50cf7821657270e03636e728b1b")


def test_legs_json_order_and_rows_of_the_earlier_order() -> None:
    legs = (Leg("m1", "home", Odds(21, 10), "ev1"), Leg("m2", "over", Odds(3, 1), "ev2"))
    assert legs_to_json(legs) == '[["m1","home",21,10,"ev1"],["m2","over",3,1,"ev2"]]'
    assert legs_from_json(legs_to_json(legs)) == legs
    assert legs_from_json('[["m1","home","ev1",21,10],["m2","over","ev2",3,1]]') == legs


def test_statement_splitting_respects_comments_and_quotes() -> None:
    text = """
    -- a comment; with a semicolon
    CREATE TABLE a (x text); /* block; comment */
    INSERT INTO a (x) VALUES ('semi;colon ''quoted''');  // trailing; comment
    """
    assert split_statements(text) == ["CREATE TABLE a (x text)", "INSERT INTO a (x) VALUES ('semi;colon ''quoted''')"]


# --- failures ------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_closed_port_raises_a_clear_ledger_error() -> None:
    port = _closed_port()
    started = time.monotonic()
    with pytest.raises(LedgerError, match=f"cannot reach Cassandra at 127.0.0.1:{port}"):
        await CassandraLedger.connect(["127.0.0.1"], port, "t_unreachable")
    assert time.monotonic() - started < 30


async def test_writes_on_a_dead_connection_fail_without_partial_success(
    ledger: CassandraLedger, unique_id: Callable[[str], str]
) -> None:
    # A second ledger whose cluster connection is gone (as after losing every node): every bet is reported
    # failed (the caller compensates), money writes raise LedgerError, and nothing was stored.
    dead = await CassandraLedger.connect(
        list(ledger.cluster.contact_points), ledger.cluster.port, ledger.keyspace, create_schema=False
    )
    await dead.close()
    account, ev = unique_id("acc"), unique_id("ev")
    bets = [make_bet(account, (ev,), T0, unique_id("bet")) for _ in range(3)]
    results = await dead.append_bets(bets)
    assert len(results) == 3 and all(isinstance(r, Exception) for r in results), results
    with pytest.raises(LedgerError, match="ledger entries"):
        await dead.append_entries([entry(account, f"deposit:{account}:1", 100, T0)])
    with pytest.raises(LedgerError, match="bet history"):
        await dead.append_bet_events([BetEvent(bets[0].bet_id, "x", "SETTLED", BetState.WON, 1, "r", T0)])
    assert [await ledger.get_bet(b.bet_id) for b in bets] == [None, None, None]
    assert await ledger.account_entries(account, 10, "") == ([], "")
