"""The market change log contract (inplay.domain.markets.MarketChangeLog): append-only, idempotent per
change, paged oldest first with signed tokens, the same over ``MemoryMarketChangeLog`` and
``CassandraMarketChangeLog``."""

from __future__ import annotations

import pytest

from inplay.domain.markets import MarketChangeLog
from inplay.errors import InvalidArgument
from inplay.model import MarketChange
from tests.support.contracts import uid

T0 = 1_772_323_200_000


def change(
    market_id: str, version: int, at_ms: int, kind: str = "PRICE", sel: str = "home", new: str = "2.0"
) -> MarketChange:
    """A change entry; ``sel`` is ignored for a STATUS entry (it names no selection)."""
    return MarketChange(market_id, sel if kind == "PRICE" else "", kind, "", new, "prov-a", "", version, at_ms)


async def read_all(log: MarketChangeLog, market_id: str, page_size: int) -> list[list[MarketChange]]:
    pages: list[list[MarketChange]] = []
    token = ""
    while True:
        page, token = await log.list(market_id, page_size, token)
        pages.append(page)
        if not token:
            return pages


class ChangeLogContract:
    async def test_append_and_read_back_oldest_first(self, change_log: MarketChangeLog) -> None:
        m, other = uid("m"), uid("m")
        # One write's entries share (version, at): they keep their order within it.
        v2 = [change(m, 2, T0 + 20, "STATUS", new="SUSPENDED:FEED_LAG"), change(m, 2, T0 + 20, sel="away")]
        v1 = [change(m, 1, T0 + 10), change(m, 1, T0 + 10, sel="draw"), change(other, 1, T0)]
        await change_log.append(v2)
        await change_log.append(v1)
        assert await change_log.list(m, 10, "") == ([*v1[:2], *v2], "")
        assert await change_log.list(other, 10, "") == ([v1[2]], "")
        assert await change_log.list(uid("m"), 10, "") == ([], "")

    async def test_a_retried_append_stores_the_same_rows(self, change_log: MarketChangeLog) -> None:
        m = uid("m")
        batch = [change(m, 1, T0), change(m, 1, T0, sel="away"), change(m, 2, T0 + 1)]
        await change_log.append(batch)
        await change_log.append(batch)  # the caller retries a failed append whole
        assert await change_log.list(m, 10, "") == (batch, "")

    async def test_pages_cover_every_change_once(self, change_log: MarketChangeLog) -> None:
        m = uid("m")
        changes = [change(m, v, T0 + v, new=f"{v}.0") for v in range(1, 24)]
        await change_log.append(changes)
        pages = await read_all(change_log, m, 5)
        assert all(len(p) <= 5 for p in pages) and [c for p in pages for c in p] == changes
        assert [len(p) for p in pages[:4]] == [5, 5, 5, 5]

    async def test_the_last_full_page_has_no_token(self, change_log: MarketChangeLog) -> None:
        # "the token is empty on the last page": a log of exactly two pages reads in two calls.
        m = uid("m")
        changes = [change(m, v, T0 + v) for v in range(1, 11)]
        await change_log.append(changes)
        assert [len(p) for p in await read_all(change_log, m, 5)] == [5, 5]

    async def test_tokens_are_bound_to_their_market(self, change_log: MarketChangeLog) -> None:
        m, other = uid("m"), uid("m")
        await change_log.append([change(m, v, T0 + v) for v in range(1, 4)])
        _, token = await change_log.list(m, 1, "")
        assert token
        with pytest.raises(InvalidArgument):
            await change_log.list(other, 1, token)  # another market's token
        with pytest.raises(InvalidArgument):
            await change_log.list(m, 1, "forged!")

    async def test_a_page_may_end_inside_one_writes_entries(self, change_log: MarketChangeLog) -> None:
        # Three writes of three entries each (a status and two prices, as a 1X2 update logs), pages of two.
        m = uid("m")
        changes = [
            change(m, v, T0 + v, *args)
            for v in range(1, 4)
            for args in (("STATUS", "", f"ACTIVE{v}"), ("PRICE", "home", f"{v}.1"), ("PRICE", "away", f"{v}.2"))
        ]
        await change_log.append(changes)
        pages = await read_all(change_log, m, 2)
        assert [len(p) for p in pages] == [2, 2, 2, 2, 1]
        assert [c for p in pages for c in p] == changes

    async def test_two_appends_under_one_version_and_time_keep_both(self, change_log: MarketChangeLog) -> None:
        # Two chunks in one millisecond: a price write, then a failover's PROVIDER entry at the same (current)
        # version. The row-per-entry key (version, at, position) overwrote the first with the second.
        m = uid("m")
        price = [change(m, 4, T0, sel="home", new="2.1"), change(m, 4, T0, sel="away", new="3.1")]
        switch = [MarketChange(m, "", "PROVIDER", "alpha", "bravo", "feed-router", "HEARTBEAT_TIMEOUT", 4, T0)]
        await change_log.append(price)
        await change_log.append(switch)
        await change_log.append(price)  # a retry stores nothing new
        got, _ = await change_log.list(m, 10, "")
        assert sorted(got, key=repr) == sorted([*price, *switch], key=repr)
        assert got[:2] == price or got[1:] == price  # a write's entries stay together, in order
