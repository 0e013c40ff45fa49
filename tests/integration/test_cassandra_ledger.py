"""CassandraLedger against the real Cassandra (the session keyspace; tests isolate by unique ids): what is
Cassandra's alone (buckets, migrations, codecs, failures). The Ledger contract
(tests/support/contracts/ledger.py) runs over this adapter in tests/integration/test_contract_real.py."""

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
from inplay.core import AcceptancePolicy, Odds
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


# --- what only the Cassandra adapter has (the port's promises: tests/support/contracts/ledger.py) ---


async def test_bets_by_idempotency_key(ledger: CassandraLedger, unique_id: Callable[[str], str]) -> None:
    # Not a port method (the pre-journal read of a key): the bets_by_idempotency table.
    account = unique_id("acc")
    bet = make_bet(account, (unique_id("ev"),), T0, unique_id("bet"))
    assert await ledger.append_bets([bet]) == [None]
    assert await ledger.get_bet_by_idempotency(account, bet.idempotency_key) == bet.bet_id
    assert await ledger.get_bet_by_idempotency(account, "unknown") is None


# --- paging over the 64 event buckets ----------------------------------------------------------------


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


async def test_every_statement_is_eligible_for_speculative_execution(ledger: CassandraLedger) -> None:
    """The driver sends a speculative copy only of statements marked idempotent: every read and every
    deterministic insert of the ledger and the settlement store is, or a stalled coordinator holds it for the
    whole request timeout (docs/reliability.md, the partition fault)."""
    from inplay.adapters.cassandra_settlement import CassandraSettlementStore

    settlement = CassandraSettlementStore.for_ledger(ledger)
    prepared = [v for store in (ledger, settlement) for v in vars(store).values() if hasattr(v, "query_id")]
    assert len(prepared) > 30
    assert [p.query_string for p in prepared if not p.is_idempotent] == []


# --- reads under an overloaded replica ------------------------------------------------------------------


def _failing_first(ledger: CassandraLedger, monkeypatch: pytest.MonkeyPatch, errors: list[Exception]) -> list[int]:
    """Makes the ledger's next ``len(errors)`` requests fail with ``errors`` (in order), as an overloaded
    replica set would; every later request reaches Cassandra. Returns the count of requests made."""
    real = ledger._execute
    calls = [0]

    async def execute(statement: object, params: object = None, paging_state: bytes | None = None) -> object:
        calls[0] += 1
        if errors:
            raise errors.pop(0)
        return await real(statement, params, paging_state=paging_state)

    monkeypatch.setattr(ledger, "_execute", execute)
    return calls


def _read_timeout() -> Exception:
    from cassandra import ConsistencyLevel, ReadTimeout

    return ReadTimeout(
        "received only 1 responses",
        consistency=ConsistencyLevel.LOCAL_QUORUM,
        required_responses=2,
        received_responses=1,
        data_retrieved=False,
    )


async def test_a_scan_reads_a_timed_out_page_again(
    ledger: CassandraLedger, unique_id: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI once failed `reconcile --repair` mid settlement run: one page of the bet-history scan timed out at
    LOCAL_QUORUM (1 of 2 replicas answered) and the whole repair exited 1. A page read is idempotent (same
    statement, same paging state): it is read again, and the scan sees every row once."""
    from cassandra import Unavailable

    account = unique_id("acc")
    bet = make_bet(account, (unique_id("ev"),), T0, unique_id("bet"))
    assert await ledger.append_bets([bet]) == [None]
    event = BetEvent(bet.bet_id, unique_id("run"), "SETTLED", BetState.WON, 2_500, "r", T0 + 1)
    await ledger.append_bet_events([event])
    calls = _failing_first(ledger, monkeypatch, [_read_timeout(), Unavailable("1 of 2 replicas alive")])
    seen = [ev for ev in [e async for e in ledger.scan_bet_history()] if ev.bet_id == bet.bet_id]
    assert sorted(e.status for e in seen) == [BetState.OPEN, BetState.WON]
    assert calls[0] > 2  # the two failed requests, then the real ones
    from inplay.adapters.cassandra_ledger import READ_ATTEMPTS

    # Past READ_ATTEMPTS failures of one page the error is the caller's (a repair then exits non-zero).
    _failing_first(ledger, monkeypatch, [_read_timeout() for _ in range(READ_ATTEMPTS)])
    with pytest.raises(type(_read_timeout())):
        await ledger.bet_history(bet.bet_id)


async def test_a_read_that_cannot_succeed_is_not_tried_again(
    ledger: CassandraLedger, unique_id: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cassandra import InvalidRequest

    calls = _failing_first(ledger, monkeypatch, [InvalidRequest("bad query")])
    with pytest.raises(InvalidRequest):
        await ledger.bet_history(unique_id("bet"))
    assert calls[0] == 1
