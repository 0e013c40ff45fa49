"""Pure logic of bet acceptance: input validation, stored-result round trips, group commit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import pytest

from inplay.config import BetRules
from inplay.core import AcceptancePolicy, Odds
from inplay.domain.bets import (
    GroupCommitter,
    OddsChangedInfo,
    PlacementResult,
    Reason,
    Rejection,
    validate_request,
)
from inplay.domain.journal import journal_bet_id, parse_journal_bet_id
from inplay.domain.records import result_from_json, result_to_json
from inplay.model import BetRequest, Leg, PlacedBet

RULES = BetRules()


def request(**changes: object) -> BetRequest:
    base = BetRequest(
        account_id="alice",
        legs=(Leg("m1", "home", Odds.from_decimal("2.00")),),
        stake_minor=100,
        currency="EUR",
        policy=AcceptancePolicy.NONE,
        idempotency_key="k1",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_valid_request_passes() -> None:
    assert validate_request(request(), RULES) is None


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"idempotency_key": ""}, Reason.INVALID_ARGUMENT, "slip.idempotency_key"),
        ({"idempotency_key": "x" * 129}, Reason.INVALID_ARGUMENT, "slip.idempotency_key"),
        ({"legs": ()}, Reason.INVALID_ARGUMENT, "slip.legs"),
        ({"stake_minor": 0}, Reason.INVALID_ARGUMENT, "slip.stake.amount_minor"),
        ({"stake_minor": -5}, Reason.INVALID_ARGUMENT, "slip.stake.amount_minor"),
        ({"stake_minor": 5}, Reason.STAKE_TOO_LOW, "slip.stake.amount_minor"),
        ({"stake_minor": 10_000_000}, Reason.STAKE_TOO_HIGH, "slip.stake.amount_minor"),
        ({"currency": "USD"}, Reason.CURRENCY_MISMATCH, "slip.stake.currency"),
        ({"policy": AcceptancePolicy.UNSPECIFIED}, Reason.INVALID_ARGUMENT, "slip.acceptance_policy"),
        (
            {"legs": (Leg("m\x1fx", "home", Odds.from_decimal("2.00")),)},
            Reason.INVALID_ARGUMENT,
            "slip.legs[0].market_id",
        ),
        (
            {"legs": (Leg("", "home", Odds.from_decimal("2.00")),)},
            Reason.INVALID_ARGUMENT,
            "slip.legs[0].market_id",
        ),
        (
            {"legs": (Leg("m1", "", Odds.from_decimal("2.00")),)},
            Reason.INVALID_ARGUMENT,
            "slip.legs[0].selection_id",
        ),
        (
            {"legs": (Leg("m1", "home", Odds.from_decimal("2.00")), Leg("m1", "away", Odds.from_decimal("2.00")))},
            Reason.INVALID_ARGUMENT,
            "slip.legs[1].market_id",
        ),
        (
            {"legs": tuple(Leg(f"m{i}", "home", Odds.from_decimal("1.10")) for i in range(21))},
            Reason.INVALID_ARGUMENT,
            "slip.legs",
        ),
    ],
)
def test_invalid_requests_name_the_field(changes: dict[str, object], reason: str, field: str) -> None:
    rejection = validate_request(request(**changes), RULES)
    assert rejection is not None
    assert (rejection.reason, rejection.field) == (reason, field)


def test_stored_results_round_trip() -> None:
    bet = PlacedBet(
        bet_id=journal_bet_id(3, 12345, 7),
        account_id="alice",
        legs=(Leg("m1", "home", Odds.from_american(-110), "ev1"), Leg("m2", "x", Odds.from_fractional(6, 4), "ev2")),
        stake_minor=1234,
        currency="EUR",
        potential_return_minor=5_000,
        policy=AcceptancePolicy.HIGHER,
        idempotency_key="k",
        placed_at_ms=1_700_000_000_000,
    )
    # An acceptance is stored as its bet id and the slip's hash (the bet itself is read from the journal).
    assert result_to_json(PlacementResult(bet=bet), "abc") == f"BET:{bet.bet_id}:abc"
    rejection = Rejection(
        Reason.ODDS_CHANGED,
        "moved",
        odds_changed=OddsChangedInfo("m1", "home", Odds.from_decimal("2.00"), Odds(21, 11), AcceptancePolicy.NONE, 500),
    )
    rejected = result_from_json(result_to_json(PlacementResult(rejection=rejection)))
    assert rejected.rejection == rejection


def test_journal_bet_ids_name_their_position_and_sort_by_it() -> None:
    positions = [(shard, slot, pos) for shard in (0, 1, 65535) for slot in (1, 2, 2**40) for pos in (0, 1, 999)]
    ids = [journal_bet_id(*p, tag="0badcafe") for p in positions]
    assert len(set(ids)) == len(ids)
    assert [parse_journal_bet_id(i) for i in ids] == [("0badcafe", *p) for p in positions]
    assert sorted(ids) == ids  # fixed-width hex: string order is journal order
    for not_journal in ("", "J", "0000018bcfe56800" + "ab" * 8, "J" + "g" * 20, journal_bet_id(1, 2, 3) + "0"):
        assert parse_journal_bet_id(not_journal) is None


async def test_group_committer_batches_concurrent_calls() -> None:
    batches: list[list[int]] = []

    async def handler(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        return [i * 2 for i in items]

    committer: GroupCommitter[int, int] = GroupCommitter(handler, window_ms=5, max_batch=8)
    results = await asyncio.gather(*(committer.submit(i) for i in range(20)))
    assert results == [i * 2 for i in range(20)]
    assert [len(b) for b in batches] == [8, 8, 4]
    # A lone call waits at most the window.
    assert await committer.submit(7) == 14


async def test_group_committer_propagates_failures_to_every_waiter() -> None:
    async def handler(items: Sequence[int]) -> list[int]:
        raise RuntimeError("store down")

    committer: GroupCommitter[int, int] = GroupCommitter(handler, window_ms=1, max_batch=4)
    results = await asyncio.gather(*(committer.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


def test_bet_states_have_one_numbering_the_apis() -> None:
    """model.BetState (= core.BetState) is the proto's BetStatus, name for name and number for number."""
    from inplay import core, model
    from inplay.bets.v1 import bets_pb2

    assert model.BetState is core.BetState
    wire = {name.removeprefix("BET_STATUS_"): number for name, number in bets_pb2.BetStatus.items()}
    assert wire == {s.name: int(s) for s in core.BetState}


def test_core_status_codes_map_to_bet_states_once() -> None:
    from inplay import core

    won = core.settle_bets([(100, [core.SettleLeg(Odds(2, 1), core.LegOutcome.WIN)])])
    lost = core.settle_bets([(100, [core.SettleLeg(Odds(2, 1), core.LegOutcome.LOSE)])])
    assert won == [(core.BetState.WON, 200)] and lost == [(core.BetState.LOST, 0)]


def test_core_errors_have_their_own_names_and_map_to_api_reasons_in_core() -> None:
    from inplay import _core, core, errors

    assert not hasattr(_core, "InvalidArgument") and not hasattr(core, "InvalidArgument")
    with pytest.raises(core.InvalidCoreInput) as exc:
        core.check_quotes([core.Quote(False, 0, 1, Odds(2, 1), Odds(2, 1), AcceptancePolicy.UNSPECIFIED)])
    mapped = errors.from_exception(exc.value)
    assert isinstance(mapped, errors.InvalidArgument) and mapped.reason == "INVALID_ARGUMENT"
    assert core.reason_of(core.InvalidOdds("x")) == "INVALID_ODDS"


def test_the_record_codec_imports_on_its_own() -> None:
    """inplay.domain.records imports the bets package, which imports it back: either may be imported first."""
    import subprocess
    import sys

    for first in ("inplay.domain.records", "inplay.domain.bets", "inplay.domain.bets.rejections"):
        subprocess.run([sys.executable, "-c", f"import {first}; import inplay.app"], check=True)


async def test_group_committer_forms_the_next_batch_while_one_runs() -> None:
    """Concurrency becomes batch size: requests that arrive while the batches in flight run are gathered
    into the next one (a fixed 1 ms window alone gave ~1 request per batch, each paying its own round
    trips, many batches in parallel)."""
    running = 0
    most_running = 0
    sizes: list[int] = []

    async def handler(items: Sequence[int]) -> list[int]:
        nonlocal running, most_running
        running += 1
        most_running = max(most_running, running)
        sizes.append(len(items))
        await asyncio.sleep(0.02)  # the store round trips of one batch
        running -= 1
        return list(items)

    committer: GroupCommitter[int, int] = GroupCommitter(handler, window_ms=0.1, max_batch=512, max_in_flight=2)

    async def caller(i: int) -> int:
        await asyncio.sleep(i * 0.0005)  # 200 calls spread over 100 ms: ~2 per window
        return await committer.submit(i)

    results = await asyncio.gather(*(caller(i) for i in range(200)))
    assert results == list(range(200))
    assert most_running <= 2
    assert len(sizes) <= 16, sizes  # ~10 batches of ~20, not ~100 batches of ~2
    assert sum(sizes) == 200


async def test_a_batch_that_is_only_waiting_lets_the_next_one_start() -> None:
    """The unary path's groups give up their slot once their slips sit in the journal writer's queue
    (``only_waiting``): a slow commit then no longer holds back the checks of the calls behind it."""
    from inplay.batching import only_waiting

    started: list[float] = []
    commit = asyncio.Event()

    async def handler(items: Sequence[int]) -> list[int]:
        started.append(asyncio.get_running_loop().time())
        only_waiting()
        await commit.wait()  # the store's own group commit, slow
        return list(items)

    committer: GroupCommitter[int, int] = GroupCommitter(handler, window_ms=0.1, max_batch=4, max_in_flight=1)
    calls = [asyncio.create_task(committer.submit(i)) for i in range(12)]
    await asyncio.sleep(0.05)
    assert len(started) == 3  # every batch started though none has finished (was 1 with max_in_flight=1)
    commit.set()
    assert await asyncio.gather(*calls) == list(range(12))
