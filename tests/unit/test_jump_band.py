"""The Rust core's price-jump band (``inplay.core.JumpBand``, what the feed pipeline runs) and the pure-Python
reference (``tests/reference/jump_band.py``) agree on random feeds: chunks of updates of a few markets at
prices around the band's edge, suspensions in between, a random subset of each chunk committed (a write
that was not applied is not committed), timestamps that go back as well as forward."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inplay.core import InvalidCoreInput, InvalidOdds, JumpBand
from tests.reference.jump_band import JumpBandReference

# Decimal odds around 2.00 and a 15 % band: 2.30 / 1.70 are on the edge, 2.31 / 1.69 beyond it.
LADDER = [(2, 1), (23, 10), (231, 100), (17, 10), (169, 100), (21, 10), (3, 1), (31, 10), (19, 10), (5, 2)]
MARKETS = ["m1", "m2", "m3"]

odds = st.one_of(st.sampled_from(LADDER), st.tuples(st.integers(101, 400), st.just(100)))
wide = st.lists(st.tuples(st.sampled_from(["h", "d", "a"]), odds), min_size=1, max_size=3, unique_by=lambda p: p[0])
# One selection on three prices: the same prices repeat (one history entry, its time refreshed) and the
# history fills up, so eviction decides what the window holds.
narrow = st.lists(st.tuples(st.just("h"), st.sampled_from(LADDER[:3])), min_size=1, max_size=1)
prices = st.one_of(wide, narrow)
update = st.tuples(st.just("check"), st.sampled_from(MARKETS), st.integers(-300, 900), prices)
forget = st.tuples(st.just("forget"), st.sampled_from(MARKETS), st.just(0), st.just([]))
chunk = st.tuples(st.lists(st.one_of(update, update, update, forget), max_size=12), st.randoms(use_true_random=False))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chunks=st.lists(chunk, min_size=1, max_size=8),
    band_bp=st.sampled_from([0, 500, 1_500]),
    window_ms=st.sampled_from([0, 500, 2_000]),
    max_history=st.integers(1, 8),
)
def test_the_core_band_agrees_with_the_reference(
    chunks: list[tuple[list[tuple[str, str, int, list[tuple[str, tuple[int, int]]]]], object]],
    band_bp: int,
    window_ms: int,
    max_history: int,
) -> None:
    core, ref = JumpBand(band_bp, window_ms, max_history), JumpBandReference(band_bp, window_ms, max_history)
    clock = 10_000
    for actions, rnd in chunks:
        core.clear_pending()
        ref.clear_pending()
        tokens: list[int] = []
        for kind, market, step, sels in actions:
            if kind == "forget":
                core.forget(market)
                ref.forget(market)
                continue
            clock += step
            flat = [(sid, num, den) for sid, (num, den) in sels]
            got, want = core.check(market, clock, flat), ref.check(market, clock, flat)
            assert got == want, (market, clock, flat)
            tokens.append(got[1])
        applied = [t for t in tokens if rnd.random() < 0.8]  # type: ignore[attr-defined]
        core.commit(applied)
        ref.commit(applied)
        assert core.markets == ref.markets


def test_a_jump_restarts_the_band_and_only_committed_prices_count() -> None:
    band = JumpBand(1_500, 2_000, 8)
    assert band.check("m", 1_000, [("h", 2, 1)]) == (False, 0)
    assert band.check("m", 1_100, [("h", 3, 1)]) == (True, 1)  # beyond 2.00, in the same chunk
    band.commit([0])  # only the first was applied (the jump's write was refused)
    band.clear_pending()
    assert band.check("m", 1_200, [("h", 3, 1)])[0]  # still beyond the committed 2.00
    band.clear_pending()
    band.forget("m")  # a bet stop: the next prices start a new band
    assert not band.check("m", 1_300, [("h", 3, 1)])[0]


def test_bad_input_is_refused_with_the_core_errors() -> None:
    band = JumpBand(1_500, 2_000, 8)
    with pytest.raises(InvalidOdds):
        band.check("m", 1, [("h", 0, 1)])
    with pytest.raises(TypeError):
        band.check("m", 1, [("h", 2)])  # type: ignore[list-item]
    with pytest.raises(InvalidCoreInput):
        band.commit([0])  # no update in this chunk
    with pytest.raises(InvalidCoreInput):
        JumpBand(-1, 2_000, 8)


@pytest.mark.parametrize("band_class", [JumpBand, JumpBandReference])
def test_an_unchanged_price_is_one_history_entry(band_class: type[JumpBand] | type[JumpBandReference]) -> None:
    # History of 2: 2.00, then 2.30 twice. Kept as one entry (its time refreshed), 2.00 stays in the window,
    # and 2.31 is beyond it (15.5 %) though within band of 2.30.
    band = band_class(1_500, 2_000, 2)
    for i, (num, den) in enumerate([(2, 1), (23, 10), (23, 10)]):
        band.clear_pending()
        band.commit([band.check("m", 1_000 + 100 * i, [("h", num, den)])[1]])
    band.clear_pending()
    assert band.check("m", 1_400, [("h", 231, 100)])[0]


def test_a_band_built_on_one_thread_is_used_and_dropped_on_another() -> None:
    """An embedded server builds its pipeline on one thread and may drop it on its loop's thread: the band
    must not fail there (it did: 'PyJumpBand is unsendable, but is being dropped on another thread')."""
    import gc
    import threading

    holder = [JumpBand(1_500, 2_000, 8)]
    errors: list[BaseException] = []

    def elsewhere() -> None:
        try:
            jumped, token = holder[0].check("m", 1_000, [("h", 2, 1)])
            holder[0].commit([token])
            assert not jumped and holder[0].markets == 1
            holder.clear()
            gc.collect()
        except BaseException as exc:  # reported on the test's thread
            errors.append(exc)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert errors == [] and holder == []
