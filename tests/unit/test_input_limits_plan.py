"""The limits' fast path (a compiled plan per type, no paths) agrees with the exact walk on every request type
of the API, for messages generated from the descriptors (strings around each limit, non-ASCII, timestamps
out of range, repeated fields, maps)."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inplay import limits
from tests.support.input_helpers import all_methods
from tests.support.input_strategies import messages

IDS = ["acc-1", "mkt-1", "ev-1", "é" * 60, "x" * 199]
TYPES = {m.input_type.full_name: m.input_type for m in all_methods()}


@pytest.mark.parametrize("name", sorted(TYPES))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_fast_path_agrees_with_the_exact_walk(name: str, data: st.DataObject) -> None:
    message: Message = data.draw(messages(TYPES[name], IDS, page_tokens=True))
    exact = limits.walk(message)
    assert limits.check(message) == exact
    plan = limits._plan(message.DESCRIPTOR)  # type: ignore[arg-type]
    within = limits._within(message, plan)
    assert not (within and exact), "the fast path let a violation through"
    if not plan.maps:  # a non-empty map always takes the exact walk (conservative by design)
        assert within == (not exact)


def test_utf8_bytes_not_characters_are_counted() -> None:
    from inplay.bets.v1 import bets_pb2

    at_limit = bets_pb2.GetBetRequest(bet_id="é" * 100)  # 200 bytes
    assert limits.check(at_limit) == []
    over = bets_pb2.GetBetRequest(bet_id="é" * 100 + "x")
    assert [v.field for v in limits.check(over)] == ["bet_id"]
