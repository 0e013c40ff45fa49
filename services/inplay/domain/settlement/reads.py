"""Read helpers for the bet API (servicers/bets.py): a bet's real settlement status and total return."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from inplay.domain.settlement.model import settlement_state
from inplay.model import BetState
from inplay.ports import Ledger


async def settlement_states(
    ledger: Ledger, bet_ids: Sequence[str], concurrency: int = 32
) -> dict[str, tuple[BetState, int]]:
    """(status, settled return) of each bet from its history (one partition read per bet, ``concurrency``
    at a time): for ListBets, which today shows every bet OPEN with return 0."""
    sem = asyncio.Semaphore(concurrency)

    async def one(bet_id: str) -> tuple[BetState, int]:
        async with sem:
            return settlement_state(await ledger.bet_history(bet_id))

    states = await asyncio.gather(*(one(b) for b in bet_ids))
    return dict(zip(bet_ids, states, strict=True))
