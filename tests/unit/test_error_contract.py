"""The error contract: one table of stable reason codes (inplay.errors.REASONS), each with one gRPC code,
documented in docs/errors.md, covering every RejectionReason of the bets API."""

from __future__ import annotations

from pathlib import Path

import pytest

from inplay import core
from inplay.bets.v1 import bets_pb2
from inplay.domain.bets import Rejection
from inplay.errors import REASONS, from_exception, reasons_markdown
from inplay.servicers.bets import rejection_to_error

ROOT = Path(__file__).resolve().parents[2]
REJECTIONS = [
    n.removeprefix("REJECTION_REASON_") for n in bets_pb2.RejectionReason.keys() if not n.endswith("UNSPECIFIED")
]


def test_docs_are_generated_from_the_table() -> None:
    assert (ROOT / "docs" / "errors.md").read_text() == reasons_markdown(), (
        "run: python -c 'from inplay.errors import reasons_markdown' ... (see docs/errors.md header)"
    )


def test_reasons_are_upper_snake() -> None:
    assert all(r.replace("_", "").isalpha() and r.isupper() for r in REASONS)


@pytest.mark.parametrize("reason", REJECTIONS)
def test_every_rejection_reason_has_one_code(reason: str) -> None:
    assert reason in REASONS
    error = rejection_to_error(Rejection(reason, "m", "slip.stake.amount_minor" if "STAKE" in reason else ""))
    assert error.reason == reason
    assert error.code == REASONS[reason][0], f"{reason}: {error.code} != {REASONS[reason][0]}"


def test_core_errors_map_to_stable_codes() -> None:
    with pytest.raises(core.CoreError) as odds:
        core.Odds.of(1, 2)
    assert from_exception(odds.value).reason == "INVALID_ODDS"
    with pytest.raises(core.CoreError) as overflow:
        core.potential_returns([(10**17, [core.Odds(1000, 1)] * 20)])
    assert from_exception(overflow.value).reason == "ARITHMETIC_OVERFLOW"


def test_store_outages_are_unavailable_not_internal() -> None:
    from cassandra import OperationTimedOut
    from redis.exceptions import ConnectionError as RedisConnectionError

    from inplay.ports import LedgerError

    for exc in (OperationTimedOut("t"), RedisConnectionError("r"), LedgerError("l"), TimeoutError()):
        assert from_exception(exc).reason == "UNAVAILABLE", exc
    assert from_exception(RuntimeError("bug")).reason == "INTERNAL"
