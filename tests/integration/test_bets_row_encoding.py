"""The bet path's pre-encoded rows (``cassandra_ledger.add_rows``) are byte for byte what the driver's own
``bind`` produces, for every prepared statement of the bet path (journal rows, the three views)."""

from __future__ import annotations

from typing import Any

from cassandra.query import BatchStatement, BatchType

from inplay.adapters.cassandra_ledger import CassandraLedger, _row_encoders, add_rows, encode_row

ROWS: dict[str, list[tuple[Any, ...]]] = {
    "_ins_journal_row": [
        ("journal-a", 3, 2**40 + 7, 0, "BET", '{"id":"J1","acc":"a\\u00e9"}'),
        ("journal-a", 3, 2**40 + 7, 65535, "COMP", "é ü 漢字 \u0000 end"),
        ("journal-a", -1, -(2**63), -(2**31), "", ""),
    ],
    "_ins_by_account": [
        ("bet-1", "acct:1", '[["m","s",19,10,"e"]]', 100, "EUR", 190, 1, "key-1", 1_700_000_000_000),
        ("bet-2", "ünïcode", "[]", 2**63 - 1, "EUR", 0, 3, "", 0),
    ],
    "_ins_entry": [
        ("acct:1", 1_700_000_000_000, "stake:J1", 2, -100, "EUR", "J1", None),
        ("acct:2", 0, "deposit:x", 1, 2**62, "EUR", None, "ref"),
    ],
}


def test_encoded_values_equal_the_drivers(ledger: CassandraLedger) -> None:
    for name, rows in ROWS.items():
        prepared = getattr(ledger, name)
        encoders = _row_encoders(prepared)
        assert encoders is not None, f"{name}: a column type without a fast encoder"
        for row in rows:
            assert encode_row(encoders, row) == prepared.bind(row).values, (name, row)


def test_a_batch_of_encoded_rows_equals_the_drivers_batch(ledger: CassandraLedger) -> None:
    for name, rows in ROWS.items():
        prepared = getattr(ledger, name)
        ours = BatchStatement(batch_type=BatchType.UNLOGGED)
        add_rows(ours, prepared, rows)
        theirs = BatchStatement(batch_type=BatchType.UNLOGGED)
        for row in rows:
            theirs.add(prepared, row)
        assert ours._statements_and_parameters == theirs._statements_and_parameters, name
        assert ours.routing_key == theirs.routing_key and ours.keyspace == theirs.keyspace, name


def test_by_event_rows_encode_like_the_driver(ledger: CassandraLedger) -> None:
    prepared = ledger._ins_by_event
    encoders = _row_encoders(prepared)
    assert encoders is not None
    width = len(prepared.column_metadata)
    sample = [c.type.typename for c in prepared.column_metadata]
    row = tuple(("x" if t in ("varchar", "text") else 7) for t in sample)
    assert len(row) == width and encode_row(encoders, row) == prepared.bind(row).values
